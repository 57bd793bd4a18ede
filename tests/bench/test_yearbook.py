"""The benchmark's bulk-loaded year holds the rows the report book itself writes."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from bench import yearbook
from bench.reportload import multipart_body, photo_jpeg
from reports.backends import ReportsSqlite
from reports.book import ReportBook
from reports.intake import parse_report
from reports.settings import ReportsSettings
from simulators.reports import plan_year

# Every column but duplicate_of: the book's duplicate search at intake, which the bulk load
# leaves out (the statistics do not read it).
COMPARED = ", ".join(c for c in yearbook.REPORT_COLUMNS if c != "duplicate_of")


def _book_as_the_service_fills_it(plan_scale: float, data_dir: Path) -> int:
    """Reports added one by one through ReportBook.add, then their updates in turn."""
    settings = ReportsSettings()
    categories = {c.code: c for c in settings.resolved_categories()}
    plan = plan_year(2020, scale=plan_scale)
    with ReportBook.open(settings, data_dir) as book:
        for planned in plan.reports:
            requested_ns = planned.requested_s * 10**9
            new = parse_report(yearbook.simulator_fields(planned), categories=categories,
                               jurisdiction=settings.jurisdiction, received_ns=requested_ns,
                               key_name=yearbook.KEY_NAME)
            report = book.add(new)
            for update in planned.updates:
                book.add_update(report.id, update.state, update.note, update.officer,
                                update.at_s * 10**9)
    return len(plan.reports)


def test_bulk_rows_are_the_rows_the_book_writes(tmp_path: Path) -> None:
    scale = 0.002  # ~275 reports and their updates: every category and closing state
    count = _book_as_the_service_fills_it(scale, tmp_path / "book")
    settings = ReportsSettings()
    yearbook.load(yearbook.year_rows(plan_year(2020, scale=scale), settings), settings,
                  tmp_path / "bulk")
    with ReportsSqlite(tmp_path / "book" / "reports.sqlite") as book, \
            ReportsSqlite(tmp_path / "bulk" / "reports.sqlite") as bulk:
        for query in (f"SELECT {COMPARED} FROM reports ORDER BY id",
                      "SELECT id, report_id, state, note, officer, at_ns FROM updates"
                      " ORDER BY id"):
            assert bulk.read(query) == book.read(query)
        assert len(bulk.read("SELECT id FROM reports")) == count


def test_bulk_year_counts_what_the_book_counts(tmp_path: Path) -> None:
    _book_as_the_service_fills_it(0.001, tmp_path / "book")
    settings = ReportsSettings()
    yearbook.load(yearbook.year_rows(plan_year(2020, scale=0.001), settings), settings,
                  tmp_path / "bulk")
    with ReportBook.open(settings, tmp_path / "book") as book, \
            ReportBook.open(settings, tmp_path / "bulk") as bulk:
        assert bulk.stats(2020) == book.stats(2020)
        assert bulk.stats(2020).total > 100


def test_photo_is_about_the_asked_size() -> None:
    photo = photo_jpeg(1, 200_000)
    assert photo[:3] == b"\xff\xd8\xff"  # a JPEG
    assert 180_000 <= len(photo) <= 220_000


def test_multipart_body_reads_back_as_fields_and_one_photo() -> None:
    photo = photo_jpeg(2, 20_000, size=(320, 240))
    body = multipart_body([("service_code", "banjir"), ("description", "Banjir 30 cm")], photo)
    # The standard library's MIME parser, a reader independent of the one that wrote it.
    message = email.message_from_bytes(
        f"Content-Type: {body.content_type}\r\n\r\n".encode() + body.data,
        policy=email.policy.HTTP)
    parts = {part.get_param("name", header="content-disposition"):
             (part.get_filename(), part.get_payload(decode=True))
             for part in message.iter_parts()}
    assert parts == {"service_code": (None, b"banjir"), "description": (None, b"Banjir 30 cm"),
                     "media": ("foto.jpg", photo)}
