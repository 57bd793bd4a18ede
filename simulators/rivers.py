"""Jakarta's waters: flood hydrographs, their travel from gauge to gauge, and the tide at sea."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from simulators.calendar import HOUR_S, YearlyProfile

GRID_S: Final = 300.0  # routing resolution: finer than any reach's spread, cheap to build


@dataclass(frozen=True, slots=True)
class Reach:
    """A stretch of river between two gauges: how late, how high and how flat a wave arrives."""

    upstream: str
    downstream: str
    travel_s: float
    gain: float  # cm of rise downstream per cm upstream: the gauge staffs and channels differ
    spread_s: float  # width over which the wave flattens on the way (attenuation)


# Travel times: jakarta.md section 1 ("Flood-wave travel"): Katulampa -> Depok ~3 h,
# Depok -> Manggarai ~6 h, ~9 h in all. A flattened flash wave peaks about half an hour
# later than it would unflattened, so the two Ciliwung delays are set that much shorter
# and the peaks arrive after ~3 h and ~9 h. Gains are estimates from section 2's events:
# Feb 2007 Katulampa 250 -> Depok 235 (from a normal ~120); Feb 2018 Katulampa 240 ->
# Manggarai 900 (from ~650), so ~1 cm at Manggarai per cm at Katulampa.
REACHES: Final = (
    Reach("katulampa", "depok", 2.5 * HOUR_S, 0.6, 2 * HOUR_S),
    Reach("depok", "manggarai", 5.5 * HOUR_S, 2.0, 4 * HOUR_S),
    Reach("krukut-hulu", "karet", 3 * HOUR_S, 0.8, 1 * HOUR_S),
    # Not in jakarta.md: the Banjir Kanal Barat takes Manggarai's water past Karet, ~5 km
    # downstream; an hour is an estimate.
    Reach("manggarai", "karet", 1 * HOUR_S, 0.5, 0.5 * HOUR_S),
    Reach("sunter-hulu", "pulo-gadung", 4 * HOUR_S, 1.5, 1.5 * HOUR_S),
    Reach("cipinang-hulu", "pulo-gadung", 4.5 * HOUR_S, 0.8, 1.5 * HOUR_S),
)
LONGEST_TRAVEL_S: Final = 10 * HOUR_S  # Katulampa -> Depok -> Manggarai -> Karet


def hydrograph(dt: float, peak: float, rise_s: float, recession_s: float) -> float:
    """A gauge's rise `dt` s after it starts: smoothly up to `peak`, then an exponential fall."""
    if dt <= 0.0:
        return 0.0
    if dt < rise_s:
        return peak * math.sin(0.5 * math.pi * dt / rise_s) ** 2
    return peak * math.exp(-(dt - rise_s) / recession_s)


def upstream_first(reaches: Sequence[Reach]) -> list[str]:
    """Every gauge of `reaches`, each after all the gauges that feed it."""
    order: list[str] = []
    pending = {gauge for reach in reaches for gauge in (reach.upstream, reach.downstream)}
    while pending:
        fed = {r.downstream for r in reaches if r.upstream in pending}
        ready = sorted(pending - fed)
        if not ready:
            raise ValueError("the river reaches form a cycle")
        order.extend(ready)
        pending.difference_update(ready)
    return order


# A gauge's excess over its normal level at time t, given what arrives from upstream (cm).
Excess = Callable[[str, float, float], float]


class Routing:
    """What each gauge receives from upstream at any time, computed once on a grid.

    Each gauge's own excess (its replay, its rain, plus its inflow) is routed down every
    reach: delayed by the travel time, flattened by two moving averages (a triangle as
    wide as the spread), scaled by the gain. Outside the grid nothing arrives.
    """

    def __init__(self, reaches: Sequence[Reach], excess: Excess, t0: float, t1: float) -> None:
        self._t0 = t0
        self._size = max(2, int((t1 - t0) / GRID_S) + 1)
        self._inflow: dict[str, list[float]] = {}
        total: dict[str, list[float]] = {}
        for gauge in upstream_first(reaches):
            inflow = [0.0] * self._size
            for reach in reaches:
                if reach.downstream == gauge:
                    for i, value in enumerate(self._route(total[reach.upstream], reach)):
                        inflow[i] += value
            self._inflow[gauge] = inflow
            total[gauge] = [excess(gauge, t0 + i * GRID_S, inflow[i]) for i in range(self._size)]

    def inflow(self, gauge: str, t: float) -> float:
        """What arrives at `gauge` from upstream at `t`, cm above its normal level."""
        series = self._inflow.get(gauge)
        if series is None:
            return 0.0
        x = (t - self._t0) / GRID_S
        i = int(x)
        if x < 0 or i >= self._size - 1:
            return 0.0
        return series[i] + (series[i + 1] - series[i]) * (x - i)

    def _route(self, upstream: list[float], reach: Reach) -> list[float]:
        shift = round(reach.travel_s / GRID_S)
        delayed = [0.0] * min(shift, self._size) + [max(v, 0.0) for v in upstream]
        box = max(1, round(reach.spread_s / GRID_S / 2))  # two boxes make the triangle
        smoothed = _moving_average(_moving_average(delayed[: self._size], box), box)
        return [reach.gain * value for value in smoothed]


def _moving_average(values: list[float], width: int) -> list[float]:
    """Centred mean over `width` samples (odd-sized), zeros beyond the ends."""
    half = width // 2
    prefix = [0.0]
    for value in values:
        prefix.append(prefix[-1] + value)
    n = len(values)
    window = 2 * half + 1
    return [(prefix[min(n, i + half + 1)] - prefix[max(0, i - half)]) / window for i in range(n)]


# --- the tide at Pasar Ikan -------------------------------------------------------------

M2_S: Final = 12.4206 * HOUR_S  # principal lunar semi-diurnal period
S2_S: Final = 12.0 * HOUR_S  # principal solar semi-diurnal period
ANOMALISTIC_S: Final = 27.5546 * 86_400  # perigee to perigee: spring tides at perigee run high
M2_CM, S2_CM = 7.0, 4.0  # amplitudes: springs 157.5 +- 11 stay inside the 145-170 normal
PERIGEE_SHARE = 0.3  # the lunar tide is ~30% stronger at perigee than on average
# New moon of 6 Jan 2000 (18:14 UTC), at the following local noon + a 2 h lag: lunar and
# solar tides peak together there (spring tide). The phase is approximate, the rhythm right.
SPRING_REF_S: Final = 947_228_400.0
# The north-west monsoon piles water on the coast (Dec-Feb): the "rob" season. cm.
SEASONAL_CM: Final = YearlyProfile((6.0, 5.0, 2.0, 0.0, 0.0, -2.0,
                                    -3.0, -3.0, -2.0, 0.0, 2.0, 5.0))  # fmt: skip


def tide_cm(t: float) -> float:
    """The sea level at `t` relative to its mean: semi-diurnal, with spring-tide peaks."""
    dt = t - SPRING_REF_S
    perigee = 1.0 + PERIGEE_SHARE * math.cos(2 * math.pi * dt / ANOMALISTIC_S)
    lunar = M2_CM * perigee * math.cos(2 * math.pi * dt / M2_S)
    solar = S2_CM * math.cos(2 * math.pi * dt / S2_S)
    return lunar + solar + SEASONAL_CM.at(t)
