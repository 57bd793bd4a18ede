"""When a store fails under a resident's report or an officer's update: the answer tells the
caller whether to send it again, and nothing is left half done. The failures are real ones:
a trigger in the real SQLite file refuses the write, or the photo directory is no directory."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devices.registry import Registry, bundled_catalog_path, load_catalog
from reports.book import ReportBook
from reports.model import Report
from reports.settings import ReportsSettings
from rules.alert import AlertStatus, fingerprint
from rules.alerting import Alerting
from rules.config import load_rules
from siaga.citizens import CitizenDesk
from tests.reports import images
from tests.siaga.apirig import S, World
from tests.siaga.reportrig import MONAS, ReportApi, open_desk, serving

DEFAULT_RULES = Path(__file__).parents[2] / "rules" / "default.yaml"  # the bundled rules
LATE_S = 2 * 86_400  # past `sampah`'s response time (24 h by default)


@contextlib.contextmanager
def refusing(database: Path, table: str, event: str) -> Iterator[None]:
    """Every `event` (INSERT, UPDATE) on `table` in the SQLite file fails while inside, as
    a failing disk would fail it; the service's own connection is left as it is."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute(f"CREATE TRIGGER refuse BEFORE {event} ON {table}"
                   " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        db.commit()
        try:
            yield
        finally:
            db.execute("DROP TRIGGER refuse")
            db.commit()


def photo_files(tmp_path: Path) -> set[Path]:
    return {p for p in (tmp_path / "photos").rglob("*") if p.is_file()}


@pytest.fixture
async def reports(world: World, tmp_path: Path) -> AsyncIterator[ReportApi]:
    with open_desk(world, tmp_path) as desk:
        async with serving(world, desk) as api:
            yield api


# --- an officer's update ----------------------------------------------------------------


@pytest.fixture
async def desk_with_rules(world: World, tmp_path: Path) -> AsyncIterator[CitizenDesk]:
    """A desk telling the bundled rules, on the real alert book, at the world's clock."""
    registry: Registry = load_catalog(bundled_catalog_path())
    settings = ReportsSettings()
    async with Alerting(load_rules(DEFAULT_RULES, registry), registry, tmp_path / "alerting",
                        webhook_url=None, external_url="http://siaga.test",
                        clock_ns=world.clock) as alerting:
        with ReportBook.open(settings, tmp_path, clock_ns=world.clock) as book:
            yield CitizenDesk(book, CitizenDesk.photo_store(settings, tmp_path, book),
                              settings, alerting=alerting, clock_ns=world.clock)


async def overdue_report(api: ReportApi, desk: CitizenDesk, world: World) -> str:
    """A report no officer answered in time, its ReportOverdue firing: its id."""
    status, body, _ = await api.post_form(api.report("sampah", MONAS))
    assert status == 201, body
    world.clock.now_ns += LATE_S * S
    assert await desk.check_overdue() == 1
    report_id = str(body[0]["service_request_id"])
    assert overdue_status(desk, report_id) is AlertStatus.FIRING
    return report_id


def overdue_status(desk: CitizenDesk, report_id: str) -> AlertStatus | None:
    assert desk.alerting is not None
    view = desk.alerting.book.get(fingerprint("ReportOverdue", report_id))
    return None if view is None else view.alert.status


async def test_an_update_is_answered_once_stored_though_its_overdue_alert_cannot_end(
        world: World, tmp_path: Path, desk_with_rules: CitizenDesk) -> None:
    desk = desk_with_rules
    told: list[Report] = []
    desk.listen(told.append)
    async with serving(world, desk) as api:
        report_id = await overdue_report(api, desk, world)
        with refusing(tmp_path / "alerting" / "alerts.sqlite", "alerts", "UPDATE"):
            status, body = await api.officer("POST", f"/api/reports/{report_id}/updates",
                                             {"state": "fixed", "officer": "A", "note": "done"})
        # Stored, so answered 201: a 503 would have the officer's app send it again.
        assert status == 201, body
        _, shown = await api.officer("GET", f"/api/reports/{report_id}")
    assert [h["state"] for h in shown["history"]] == ["fixed"]
    assert [(r.id, r.state.value) for r in told[-1:]] == [(report_id, "fixed")]


async def test_an_overdue_alert_the_book_could_not_end_ends_at_the_next_check(
        world: World, tmp_path: Path, desk_with_rules: CitizenDesk) -> None:
    desk = desk_with_rules
    async with serving(world, desk) as api:
        report_id = await overdue_report(api, desk, world)
        with refusing(tmp_path / "alerting" / "alerts.sqlite", "alerts", "UPDATE"):
            status, _ = await api.officer("POST", f"/api/reports/{report_id}/updates",
                                          {"state": "fixed", "officer": "A"})
        assert status == 201
        assert await desk.check_overdue() == 0
    assert overdue_status(desk, report_id) is AlertStatus.RESOLVED


# --- a report's photo ---------------------------------------------------------------------


async def test_a_report_that_cannot_be_stored_leaves_no_photo_of_its_own(
        reports: ReportApi, tmp_path: Path) -> None:
    shown = images.jpeg(width=32, height=32)
    status, body, _ = await reports.post_multipart(reports.report("sampah", MONAS), shown)
    assert status == 201, body
    kept = photo_files(tmp_path)
    with refusing(tmp_path / "reports.sqlite", "reports", "INSERT"):
        # Its own photo: 503, and no file left to be served at a URL no report names.
        status, body, _ = await reports.post_multipart(reports.report("sampah", MONAS),
                                                       images.png())
        assert status == 503, body
        assert photo_files(tmp_path) == kept
        # The photo of a report stored earlier, sent again: it stays, for that report.
        status, body, _ = await reports.post_multipart(reports.report("sampah", MONAS), shown)
        assert status == 503, body
    assert photo_files(tmp_path) == kept
    _, listed = await reports.get("/open311/v2/requests.json")
    async with reports.session.get(listed[0]["media_url"]) as answer:
        assert answer.status == 200


async def test_a_photo_that_cannot_be_written_is_503_and_no_report(
        reports: ReportApi, tmp_path: Path) -> None:
    (tmp_path / "photos").write_bytes(b"")  # as a full disk would: nothing is written
    status, body, _ = await reports.post_multipart(reports.report("sampah", MONAS),
                                                   images.jpeg())
    assert status == 503, body
    assert "could not be written" in body[0]["description"]
    _, listed = await reports.officer("GET", "/api/reports")
    assert listed["total"] == 0
