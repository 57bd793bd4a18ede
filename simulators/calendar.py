"""Jakarta's clock for simulated instants: local (WIB) hour, weekday, season, daily profiles."""

from __future__ import annotations

import itertools
from datetime import timedelta, timezone
from typing import Final

WIB_OFFSET_S: Final = 7 * 3600  # Jakarta keeps UTC+7 (WIB) all year, with no daylight saving
WIB: Final = timezone(timedelta(seconds=WIB_OFFSET_S), "WIB")
DAY_S: Final = 86_400.0
HOUR_S: Final = 3600.0
MINUTE_S: Final = 60.0
# 1970-01-01 was a Thursday: Monday = 0, as in `datetime.weekday()`.
EPOCH_WEEKDAY: Final = 3
# Days from 1970-01-01 to 2000-01-01, and the mean Gregorian year: the season of an instant
# without building a datetime per reading (off by less than a day over a century).
DAYS_TO_2000: Final = 10_957
YEAR_DAYS: Final = 365.2425
MONDAY, FRIDAY, SATURDAY, SUNDAY = 0, 4, 5, 6

Points = tuple[tuple[float, float], ...]


def local_hour(t: float) -> float:
    """The hour of the day in Jakarta (0 <= h < 24) at epoch second `t`."""
    return ((t + WIB_OFFSET_S) % DAY_S) / HOUR_S


def weekday(t: float) -> int:
    """The day of the week in Jakarta at `t`: Monday 0 ... Sunday 6."""
    return int(((t + WIB_OFFSET_S) // DAY_S + EPOCH_WEEKDAY) % 7)


def year_fraction(t: float) -> float:
    """How far through the year `t` is in Jakarta: 0 on 1 January, about 0.5 on 2 July."""
    days = (t + WIB_OFFSET_S) / DAY_S - DAYS_TO_2000
    return (days % YEAR_DAYS) / YEAR_DAYS


def _interpolate(points: Points, x: float) -> float:
    for (x0, v0), (x1, v1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            return v0 if x1 == x0 else v0 + (v1 - v0) * (x - x0) / (x1 - x0)
    return points[-1][1] if x > points[-1][0] else points[0][1]


class DailyProfile:
    """A value through the day from (hour, value) points, linear between them.

    Tabulated per minute once, so a reading costs one index instead of a search: the
    profiles shape every reading of every device.
    """

    __slots__ = ("_table",)

    def __init__(self, points: Points) -> None:
        if points[0][0] != 0 or points[-1][0] != 24:
            raise ValueError("a daily profile runs from hour 0 to hour 24")
        self._table = tuple(_interpolate(points, minute / 60) for minute in range(24 * 60 + 1))

    def at(self, t: float) -> float:
        """The profile's value at epoch second `t`, Jakarta time."""
        return self._table[int(((t + WIB_OFFSET_S) % DAY_S) // MINUTE_S)]


class YearlyProfile:
    """A value through the year from twelve monthly means, placed mid-month, tabulated per day."""

    __slots__ = ("_table",)

    def __init__(self, monthly: tuple[float, ...]) -> None:
        if len(monthly) != 12:
            raise ValueError("a yearly profile has one value per month")
        # Mid-month points, with December before January and January after December.
        points = tuple(((m + 0.5) / 12, v) for m, v in enumerate(monthly))
        wrapped = ((points[-1][0] - 1, points[-1][1]), *points, (points[0][0] + 1, points[0][1]))
        self._table = tuple(_interpolate(wrapped, day / 366) for day in range(367))

    def at(self, t: float) -> float:
        """The profile's value on the day of `t`."""
        return self._table[int(year_fraction(t) * 366)]
