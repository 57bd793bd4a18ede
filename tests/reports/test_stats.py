"""The CRM's yearly figures: counted from stored reports by requested time in Jakarta (WIB)."""

from __future__ import annotations

from datetime import datetime

import pytest

from reports.book import ReportBook
from reports.categories import DEFAULT_CATEGORIES
from reports.model import State
from reports.stats import WIB, Stats, compute, format_table, year_range_ns
from tests.reports.conftest import HOUR, MANGGARAI, MINUTE, new_report, north_of

CATEGORIES = {category.code: category for category in DEFAULT_CATEGORIES}


def wib_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=WIB).timestamp()) * 10**9


def add(book: ReportBook, code: str, at: int, place: tuple[float, float],
        updates: tuple[tuple[State, int], ...]) -> str:
    """A report requested `at` with updates `(state, hours after it)`."""
    report = book.add(new_report(code, at, place=place))
    for state, hours in updates:
        book.add_update(report.id, state, "", "budi", at + hours * HOUR)
    return report.id


@pytest.fixture
def year(book: ReportBook) -> Stats:
    """Five floods (4 resolved), two rubbish reports (1 resolved), one tree; 2020 in WIB."""
    t = wib_ns(2020, 3, 1)
    places = iter(north_of(MANGGARAI, 300 * i) for i in range(100))
    for hours in ([(State.ACKNOWLEDGED, 1), (State.FIXED, 2)],
                  [(State.ACKNOWLEDGED, 2), (State.FIXED, 4)],
                  [(State.FIXED, 3)],
                  [(State.ACKNOWLEDGED, 4), (State.NOT_RESPONSIBLE, 10)],
                  [(State.IN_PROGRESS, 5)]):
        add(book, "banjir", t, next(places), tuple(hours))
    add(book, "sampah", t, next(places), ((State.ACKNOWLEDGED, 6), (State.DUPLICATE, 8)))
    add(book, "sampah", t, next(places), ())
    add(book, "pohon", wib_ns(2020, 1, 1, 0, 30), next(places), ((State.FIXED, 1),))
    # Outside 2020 in Jakarta, though 2020 in UTC (the first) or 2020 elsewhere.
    add(book, "banjir", wib_ns(2021, 1, 1, 0, 30), next(places), ())
    add(book, "banjir", wib_ns(2019, 12, 31, 23, 59), next(places), ((State.FIXED, 1),))
    return book.stats(2020)


def test_the_year_counts_reports_requested_in_it_in_jakarta_time(year: Stats) -> None:
    assert (year.year, year.total, year.resolved) == (2020, 8, 6)
    assert year.resolved_pct == 75.0


def test_categories_come_most_reports_first_with_median_hours(year: Stats) -> None:
    flood, rubbish, tree = year.by_category
    # First responses 1, 2, 3, 4, 5 h: median 3; closings 2, 4, 3, 10 h: median 3.5.
    assert flood == type(flood)("banjir", "Banjir", 5, 4, 3.0, 3.5)
    assert rubbish == type(rubbish)("sampah", "Sampah", 2, 1, 6.0, 8.0)
    assert tree == type(tree)("pohon", "Pohon", 1, 1, 1.0, 1.0)


def test_agencies_are_counted_from_each_reports_agency(year: Stats) -> None:
    assert [(a.agency, a.count, a.resolved, a.resolved_pct) for a in year.by_agency] == [
        ("BPBD DKI Jakarta; Dinas Sumber Daya Air", 5, 4, 80.0),
        ("Dinas Lingkungan Hidup", 2, 1, 50.0),
        ("Dinas Pertamanan dan Hutan Kota", 1, 1, 100.0),
    ]


def test_a_year_without_reports_is_all_zero(book: ReportBook) -> None:
    empty = book.stats(1999)
    assert (empty.total, empty.resolved, empty.resolved_pct, empty.by_category,
            empty.by_agency) == (0, 0, 0.0, (), ())


def test_a_category_with_no_response_has_no_median(book: ReportBook) -> None:
    add(book, "macet", wib_ns(2020, 5, 5), MANGGARAI, ())
    (jam,) = book.stats(2020).by_category
    assert (jam.median_first_response_h, jam.median_close_h) == (None, None)


def test_the_json_names_every_figure(year: Stats) -> None:
    body = year.as_json()
    assert {key: body[key] for key in ("year", "total", "resolved", "resolved_pct")} == {
        "year": 2020, "total": 8, "resolved": 6, "resolved_pct": 75.0}
    assert body["by_category"][0] == {
        "code": "banjir", "name": "Banjir", "count": 5, "resolved": 4,
        "median_first_response_h": 3.0, "median_close_h": 3.5}
    assert body["by_agency"][1] == {"agency": "Dinas Lingkungan Hidup", "count": 2,
                                    "resolved": 1, "resolved_pct": 50.0}


def test_the_crms_year_prints_its_totals_line_and_top_categories() -> None:
    # CRM 2020: 137,776 reports, 137,574 resolved, the top five as published.
    start, _ = year_range_ns(2020)
    published = {"gangguan-ketenteraman": 15_968, "sampah": 14_494, "parkir-liar": 14_493,
                 "pohon": 8_199, "pelanggaran-perda": 7_860}
    rest = 137_776 - sum(published.values())
    counts = published | {"pelayanan-publik": rest}
    rows = []
    unresolved = 137_776 - 137_574
    for code, count in counts.items():
        for i in range(count):
            state = State.OPEN if unresolved > 0 and code == "pelayanan-publik" \
                and i < unresolved else State.FIXED
            closed = None if state is State.OPEN else start + i * MINUTE + 2 * HOUR
            first = None if state is State.OPEN else start + i * MINUTE + HOUR
            rows.append((code, CATEGORIES[code].agency, start + i * MINUTE, first, closed,
                         state.value))
    stats = compute(2020, rows, CATEGORIES)
    assert (stats.total, stats.resolved, stats.resolved_pct) == (137_776, 137_574, 99.85)
    table = format_table(stats)
    assert table.endswith("137,776 reports, 137,574 resolved (99.85%)")
    lines = table.splitlines()
    assert lines[2].split()[:2] == ["category", "reports"]
    first_rows = [line for line in lines if line.startswith(("Gangguan", "Sampah", "Parkir"))]
    assert first_rows[0].startswith("Gangguan ketenteraman") and "15,968" in first_rows[0]
    assert "14,494" in first_rows[1] and "14,493" in first_rows[2]


def test_the_table_aligns_its_columns(year: Stats) -> None:
    lines = format_table(year).splitlines()
    header, rule, *rows = lines[2:6]
    assert len({len(line) for line in (rule, *rows)}) == 1  # every row as wide as the rule
    assert header.index("reports") + len("reports") == rows[0].index("5") + 1


@pytest.mark.parametrize(("part", "whole", "pct"), [
    (137_574, 137_776, 99.85), (2, 3, 66.67), (1, 3, 33.33), (0, 0, 0.0), (1, 1, 100.0)])
def test_resolved_pct_is_a_percentage_to_two_decimals(part: int, whole: int, pct: float) -> None:
    rows = [("sampah", "DLH", 0, None, None, State.FIXED.value if i < part else "open")
            for i in range(whole)]
    assert compute(2020, rows, CATEGORIES).resolved_pct == pct
