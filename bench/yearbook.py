"""A year of reports put straight into a report book, for timing the yearly statistics.

Posting 137,776 reports and their 362,266 updates through the book one committed
transaction at a time takes longer than the measurement it prepares (every commit is an
fsync), so the rows are made here and bulk-inserted: SQLite by `executemany` in one
transaction (through siaga_core.sqlitestore), PostgreSQL by COPY. They are the rows the
book itself writes: each report's fields go through intake's own `parse_report` (the form
`siaga simulate reports` posts), and its officers' updates are applied as
`ReportBook.add_update` applies them (state, status, notes, first response, closing time);
tests/bench/test_yearbook.py checks both against the book on a sample. Not reproduced:
`duplicate_of` (the book's duplicate search at intake), which the statistics do not read.
The schema is the book's own: `ReportBook.open` creates or migrates it first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from reports.backends import ReportsSqlite
from reports.book import ReportBook
from reports.categories import Category
from reports.intake import parse_report
from reports.model import NewReport, State
from reports.settings import ReportsSettings
from simulators.reports import PlannedReport, YearPlan, iso

KEY_NAME = "bench"
REPORT_COLUMNS = (
    "id", "service_code", "agency", "lat", "lon", "description", "address", "attributes",
    "contact", "photo", "media_url", "key_name", "requested_ns", "received_ns", "updated_ns",
    "state", "status", "status_notes", "first_response_ns", "closed_ns", "duplicate_of")
UPDATE_COLUMNS = ("report_id", "state", "note", "officer", "at_ns")
Row = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Rows:
    reports: list[Row]  # in REPORT_COLUMNS order, ids from 1
    updates: list[Row]  # in UPDATE_COLUMNS order


def simulator_fields(report: PlannedReport) -> list[tuple[str, str]]:
    """The form `siaga simulate reports` posts for `report` (photo left out: stats ignore
    it), with its `requested_datetime`."""
    fields = [("service_code", report.service_code), ("lat", f"{report.lat:.6f}"),
              ("long", f"{report.lon:.6f}"), ("description", report.description),
              ("requested_datetime", iso(report.requested_s))]
    if report.depth_cm is not None:
        fields.append(("attribute[kedalaman_cm]", str(report.depth_cm)))
    if report.email is not None and report.first_name is not None:
        fields += [("email", report.email), ("first_name", report.first_name)]
    return fields


def report_row(report_id: int, new: NewReport, agency: str,
               updates: Sequence[tuple[State, str, int]]) -> Row:
    """The row `ReportBook.add(new)` inserts, after `add_update` of each (state, note, at_ns)
    in turn; received at the requested time (a live year)."""
    state, notes = State.OPEN, None
    updated_ns = new.received_ns
    first_ns: int | None = None
    closed_ns: int | None = None
    for next_state, note, at_ns in updates:
        if not next_state.closes:
            closed_ns = None
        elif not state.closes:
            closed_ns = at_ns
        state, notes = next_state, note or notes
        updated_ns = max(updated_ns, at_ns)
        first_ns = at_ns if first_ns is None else min(first_ns, at_ns)
    contact = {key: value for key, value in asdict(new.contact).items() if value is not None}
    return (report_id, new.service_code, agency, new.lat, new.lon, new.description,
            new.address, json.dumps(new.attributes, sort_keys=True),
            json.dumps(contact, sort_keys=True), new.photo, new.media_url, new.key_name,
            new.requested_ns, new.received_ns, updated_ns, state.value, state.status, notes,
            first_ns, closed_ns, None)


def year_rows(plan: YearPlan, settings: ReportsSettings) -> Rows:
    """Every report of `plan` and its updates, as the book would hold them."""
    categories: Mapping[str, Category] = {c.code: c for c in settings.resolved_categories()}
    reports: list[Row] = []
    updates: list[Row] = []
    for number, planned in enumerate(plan.reports, start=1):
        requested_ns = planned.requested_s * 10**9
        new = parse_report(simulator_fields(planned), categories=categories,
                           jurisdiction=settings.jurisdiction, received_ns=requested_ns,
                           key_name=KEY_NAME)
        steps = [(u.state, u.note, u.at_s * 10**9) for u in planned.updates]
        reports.append(report_row(number, new, categories[new.service_code].agency, steps))
        updates += [(number, u.state.value, u.note, u.officer, u.at_s * 10**9)
                    for u in planned.updates]
    return Rows(reports, updates)


def load(rows: Rows, settings: ReportsSettings, data_dir: Path) -> None:
    """Create the book's schema where `settings` put the book, then insert `rows` in bulk."""
    ReportBook.open(settings, data_dir).close()  # the schema, by the book's own migrations
    url = settings.database_url
    if url is None:
        _load_sqlite(rows, data_dir / "reports.sqlite")
    else:
        _load_postgres(rows, url.get_secret_value())


def _load_sqlite(rows: Rows, path: Path) -> None:
    with ReportsSqlite(path) as store, store.transaction() as db:
        db.executemany(_insert("reports", REPORT_COLUMNS), rows.reports)
        # No ANALYZE: the book never runs it, so its query plans are made without statistics.
        db.executemany(_insert("updates", UPDATE_COLUMNS), rows.updates)


def _insert(table: str, columns: Iterable[str]) -> str:
    names = list(columns)
    return (f"INSERT INTO {table} ({', '.join(names)}) "  # table and columns are ours
            f"VALUES ({', '.join('?' * len(names))})")


def _load_postgres(rows: Rows, url: str) -> None:
    with psycopg.connect(url) as conn:
        with conn.cursor() as cursor:
            for table, columns, data in (("reports", REPORT_COLUMNS, rows.reports),
                                         ("updates", UPDATE_COLUMNS, rows.updates)):
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row(row)
            # Explicit ids leave the identity sequences behind: move them past the rows.
            for table in ("reports", "updates"):
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                               f" (SELECT COALESCE(MAX(id), 1) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE reports")  # as autovacuum would have, in service
