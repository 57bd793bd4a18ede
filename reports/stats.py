"""A year's figures as Jakarta's CRM publishes them: totals, resolved share, categories, agencies.

Counted from the stored reports by `requested_datetime` in Jakarta's time (WIB, UTC+7), so
"2020" is the city's calendar year. Resolved means closed (fixed, duplicate, not
responsible, no further action). Medians are hours from the resident's report to the first
officer update and to the closing, over the reports that have one.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from reports.categories import OTHER, Category
from reports.model import State

WIB: Final = timezone(timedelta(hours=7), "WIB")
NS_PER_HOUR: Final = 3_600 * 10**9
DECIMALS: Final = 2  # 99.85 %, 1.25 h: what the CRM prints


@dataclass(frozen=True, slots=True)
class CategoryStats:
    code: str
    name: str
    count: int
    resolved: int
    median_first_response_h: float | None  # None: no report of it has had a response
    median_close_h: float | None


@dataclass(frozen=True, slots=True)
class AgencyStats:
    agency: str
    count: int
    resolved: int
    resolved_pct: float


@dataclass(frozen=True, slots=True)
class Stats:
    year: int
    total: int
    resolved: int
    resolved_pct: float  # a percentage: 99.85, not 0.9985
    by_category: tuple[CategoryStats, ...]  # most reports first
    by_agency: tuple[AgencyStats, ...]  # most reports first

    def as_json(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "total": self.total,
            "resolved": self.resolved,
            "resolved_pct": self.resolved_pct,
            "by_category": [
                {"code": c.code, "name": c.name, "count": c.count, "resolved": c.resolved,
                 "median_first_response_h": c.median_first_response_h,
                 "median_close_h": c.median_close_h}
                for c in self.by_category],
            "by_agency": [
                {"agency": a.agency, "count": a.count, "resolved": a.resolved,
                 "resolved_pct": a.resolved_pct}
                for a in self.by_agency],
        }


# One report as the statistics need it: (service_code, agency, requested_ns,
# first_response_ns, closed_ns, state), the columns ReportBook.stats selects.
StatsRow = tuple[str, str, int, int | None, int | None, str]


def year_range_ns(year: int) -> tuple[int, int]:
    """[start, end) of `year` in WIB, as UTC nanoseconds."""
    start = datetime(year, 1, 1, tzinfo=WIB)
    end = datetime(year + 1, 1, 1, tzinfo=WIB)
    return _ns(start), _ns(end)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9  # whole seconds: exact, no float rounding


def compute(year: int, rows: Iterable[StatsRow], categories: Mapping[str, Category]) -> Stats:
    """The year's Stats from its reports' rows (all of them requested within the year)."""
    closing = {state.value for state in State if state.closes}
    counts: dict[str, list[int]] = {}  # code -> [count, resolved]
    first: dict[str, list[int]] = {}  # code -> hours-to-first-response, in ns
    closed: dict[str, list[int]] = {}
    agencies: dict[str, list[int]] = {}
    for code, agency, requested_ns, first_ns, closed_ns, state in rows:
        resolved = state in closing
        tally = counts.setdefault(code, [0, 0])
        tally[0] += 1
        tally[1] += resolved
        agency_tally = agencies.setdefault(agency, [0, 0])
        agency_tally[0] += 1
        agency_tally[1] += resolved
        if first_ns is not None:
            first.setdefault(code, []).append(first_ns - requested_ns)
        if closed_ns is not None and resolved:
            closed.setdefault(code, []).append(closed_ns - requested_ns)
    total = sum(count for count, _ in counts.values())
    resolved_total = sum(resolved for _, resolved in counts.values())
    by_category = tuple(sorted(
        (CategoryStats(code, categories[code].name if code in categories else code, count,
                       resolved, _median_h(first.get(code)), _median_h(closed.get(code)))
         for code, (count, resolved) in counts.items()),
        # The catch-all last: it gathers many small categories, so it is no "top" category.
        key=lambda c: (c.code == OTHER, -c.count, c.code)))
    by_agency = tuple(sorted(
        (AgencyStats(agency, count, resolved, percentage(resolved, count))
         for agency, (count, resolved) in agencies.items()),
        key=lambda a: (-a.count, a.agency)))
    return Stats(year, total, resolved_total, percentage(resolved_total, total), by_category,
                 by_agency)


def percentage(part: int, whole: int) -> float:
    return round(100 * part / whole, DECIMALS) if whole else 0.0


def _median_h(durations_ns: list[int] | None) -> float | None:
    if not durations_ns:
        return None
    return round(statistics.median(durations_ns) / NS_PER_HOUR, DECIMALS)


def format_table(stats: Stats) -> str:
    """The figures as a person reads them: categories, agencies, and the CRM's totals line."""
    lines = [f"Reports requested in {stats.year} (Jakarta time, WIB)", ""]
    lines += _table(
        ("category", "reports", "resolved", "first response h", "closed h"),
        [(c.name, _int(c.count), _int(c.resolved), _hours(c.median_first_response_h),
          _hours(c.median_close_h)) for c in stats.by_category])
    lines.append("")
    lines += _table(
        ("agency", "reports", "resolved", "resolved %"),
        [(a.agency, _int(a.count), _int(a.resolved), f"{a.resolved_pct:.2f}")
         for a in stats.by_agency])
    lines += ["", f"{_int(stats.total)} reports, {_int(stats.resolved)} resolved "
                  f"({stats.resolved_pct:.2f}%)"]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, numbers right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]),
                          *(cell.rjust(width) for cell, width in zip(rest, widths[1:],
                                                                       strict=True))]).rstrip()

    return [line(header), "  ".join("-" * width for width in widths),
            *(line(row) for row in rows)]


def _int(value: int) -> str:
    return f"{value:,}"


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
