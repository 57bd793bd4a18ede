"""Residents' reports beside the sensors: CitizenFloodReports, links to gauge and congestion
alerts, ReportOverdue; through the real alert book (SQLite) and a real webhook receiver."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry
from rules.alert import AlertStatus, fingerprint
from rules.alerting import Alerting
from rules.citizens import CitizenReport
from rules.config import RulesFile, load_rules
from siaga_core.errors import ConfigFileError
from tests.polling import eventually
from tests.receiver import RecordingReceiver
from tests.rules.books import MINUTE, T0, Clock

MANGGARAI = (-6.2073, 106.8486)  # Pintu Air Manggarai (siaga3 751, siaga2 851, siaga1 950 cm)
SUDIRMAN = (-6.2146, 106.8185)  # the traffic sensor sudirman-setiabudi
M_PER_DEG = 111_195.0  # metres per degree of latitude (mean Earth radius)
BPBD = "BPBD DKI Jakarta; Dinas Sumber Daya Air"
DISHUB = "Dinas Perhubungan"
GAUGE_ALERT = fingerprint("FloodLevel", "manggarai")
CONGESTION = fingerprint("Congestion", "sudirman-setiabudi")


@asynccontextmanager
async def alerting(rules_file: RulesFile, registry: Registry, data_dir: Path, clock: Clock,
                   webhook_url: str | None = None) -> AsyncIterator[Alerting]:
    service = Alerting(rules_file, registry, data_dir, webhook_url=webhook_url,
                       external_url="http://siaga.test", clock_ns=clock)
    async with service:
        yield service


def report(report_id: str, minute: float, north_m: float = 0.0, east_m: float = 0.0, *,
           near: tuple[float, float] = MANGGARAI, category: str = "banjir",
           agency: str = BPBD) -> CitizenReport:
    lat = near[0] + north_m / M_PER_DEG
    lon = near[1] + east_m / (M_PER_DEG * math.cos(math.radians(lat)))
    return CitizenReport(report_id, category, lat, lon, T0 + int(minute * MINUTE), agency,
                         "Air setinggi lutut di jalan")


def observe(service: Alerting, clock: Clock, *reports: CitizenReport) -> list[list[str]]:
    """Each report as it arrives: the wall clock at its time, the links it gets."""
    links = []
    for one in reports:
        clock.now = max(clock.now, one.at_ns)
        links.append(service.observe_report(one))
    return links


def gauge(service: Alerting, clock: Clock, minute: float, level_cm: float) -> None:
    at = T0 + int(minute * MINUTE)
    clock.now = max(clock.now, at)
    service.observe([Reading(Kind.WATER_LEVEL, "manggarai", at, {"level_cm": level_cm}, None)],
                    [], clock.now)


def floods(service: Alerting) -> list[tuple[str, AlertStatus, dict[str, str]]]:
    return [(view.alert.subject, view.alert.status, dict(view.alert.annotations))
            for view in service.book.alerts() if view.alert.rule == "CitizenFloodReports"]


# --- CitizenFloodReports -----------------------------------------------------------------


async def test_three_banjir_reports_within_500_m_in_30_minutes_raise_citizen_flood_reports(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, -5, 700)  # Siaga 4: below siaga3_cm 751
        links = observe(service, clock, report("r1", 0), report("r2", 10, north_m=300),
                        report("r3", 25, east_m=300))
        [(subject, status, notes)] = floods(service)
        [view] = [v for v in service.book.alerts() if v.alert.subject == subject]
    cluster = fingerprint("CitizenFloodReports", "cluster=r1")
    assert links == [[], [], [cluster]]
    assert (subject, status) == ("cluster=r1", AlertStatus.FIRING)
    assert view.alert.labels == {"alertname": "CitizenFloodReports", "severity": "warning",
                                 "category": "banjir", "agency": BPBD, "cluster": "r1"}
    assert notes["count"] == "3" and notes["report_ids"] == "r1,r2,r3"
    assert notes["area"].endswith("near Pintu Air Manggarai")
    assert notes["nearest_device_name"] == "Pintu Air Manggarai"
    assert (notes["gauge"], notes["gauge_siaga"]) == ("manggarai", "4")
    assert notes["gauge_level"].startswith("Siaga 4 (700 cm at ")
    assert "3 flood reports" in notes["summary"]


async def test_two_banjir_reports_raise_nothing(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        links = observe(service, clock, report("r1", 0), report("r2", 5, north_m=100))
        assert (links, floods(service)) == ([[], []], [])


async def test_three_reports_spread_over_2_km_raise_nothing(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        observe(service, clock, report("r1", 0), report("r2", 5, north_m=1000),
                report("r3", 10, north_m=2000))
        assert floods(service) == []


async def test_three_reports_spread_over_2_hours_raise_nothing(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        for one in (report("r1", 0), report("r2", 60, north_m=100), report("r3", 120)):
            observe(service, clock, one)
            service.check_flood_reports()  # the scheduler's job forgets reports past the window
        assert floods(service) == []


async def test_a_fourth_report_joins_the_same_alert_and_the_count_is_not_paged_again(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
    receiver: RecordingReceiver,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock, receiver.url) as service:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            observe(service, clock, report("r1", 0), report("r2", 5, north_m=200),
                    report("r3", 10, east_m=200))
            await eventually(lambda: len(receiver.delivered()) == 1, what="the firing page")
            [fourth] = observe(service, clock, report("r4", 20, north_m=-250))
            after = floods(service)
            history = service.book.history(fingerprint("CitizenFloodReports", "cluster=r1"))
            stop.set()
    [page] = receiver.delivered()[0].json["alerts"]
    assert fourth == [fingerprint("CitizenFloodReports", "cluster=r1")]
    assert [(s, st, n["count"], n["report_ids"]) for s, st, n in after] == [
        ("cluster=r1", AlertStatus.FIRING, "4", "r1,r2,r3,r4")]
    assert page["labels"]["alertname"] == "CitizenFloodReports"
    assert page["annotations"]["count"] == "3"
    assert len(receiver.requests) == 1  # the new count is recorded, not paged
    assert [entry.paged for entry in history] == [True]


async def test_the_cluster_resolves_once_its_window_passes_without_a_new_report(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        observe(service, clock, report("r1", 0), report("r2", 5, north_m=200),
                report("r3", 10, east_m=200))
        clock.now = T0 + 39 * MINUTE  # 29 minutes after the last report
        service.check_flood_reports()
        still = floods(service)[0][1]
        clock.now = T0 + 41 * MINUTE
        service.check_flood_reports()
        [(_, status, notes)] = floods(service)
    assert (still, status) == (AlertStatus.FIRING, AlertStatus.RESOLVED)
    assert notes["summary"].startswith("No new flood report near Pintu Air Manggarai since")
    assert "none joined the 3 reports within 30m" in notes["description"]


async def test_the_same_report_twice_counts_once(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        one, two = report("r1", 0), report("r2", 5, north_m=200)
        observe(service, clock, one, one, two, two)
        before = floods(service)
        observe(service, clock, report("r3", 10, east_m=200), one, two)
        [(_, _, notes)] = floods(service)
    assert before == []  # two distinct reports are not three
    assert (notes["count"], notes["report_ids"]) == ("3", "r1,r2,r3")


async def test_after_a_restart_reports_read_again_are_not_counted_again_and_the_cluster_ends(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    reports = [report("r1", 0), report("r2", 5, north_m=200), report("r3", 10, east_m=200)]
    async with alerting(rules_file, registry, tmp_path, clock) as earlier:
        observe(earlier, clock, *reports)
    async with alerting(rules_file, registry, tmp_path, clock) as later:
        kept = floods(later)[0][1]  # not resolved at start as the alert of an unknown rule
        links = observe(later, clock, *reports)  # the desk reads the recent reports again
        [(_, _, notes)] = floods(later)
    async with alerting(rules_file, registry, tmp_path, clock) as third:  # nothing read again
        clock.now = T0 + 41 * MINUTE
        third.check_flood_reports()
        [(_, status, _)] = floods(third)
    assert kept is AlertStatus.FIRING
    assert links[-1] == [fingerprint("CitizenFloodReports", "cluster=r1")]
    assert (notes["count"], notes["report_ids"]) == ("3", "r1,r2,r3")
    assert status is AlertStatus.RESOLVED


# --- links to sensor alerts --------------------------------------------------------------


async def test_a_banjir_report_near_a_gauge_at_siaga_2_is_linked_and_counted_by_its_alert(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, 0, 860)  # Siaga 2
        links = observe(service, clock, report("r12", 1, north_m=400),
                        report("r15", 2, east_m=-700), report("r12", 3, north_m=400))
        in_book = service.book.get(GAUGE_ALERT)
        gauge(service, clock, 4, 870)  # the rule's next signal keeps the count
        kept = service.book.get(GAUGE_ALERT)
        history = service.book.history(GAUGE_ALERT)
    assert links == [[GAUGE_ALERT], [GAUGE_ALERT], [GAUGE_ALERT]]
    assert in_book is not None and kept is not None
    assert in_book.alert.labels["level"] == "siaga-2"
    assert (in_book.alert.annotations["citizen_reports"],
            in_book.alert.annotations["citizen_report_ids"]) == ("2", "r12,r15")
    assert kept.alert.annotations["citizen_report_ids"] == "r12,r15"
    assert kept.alert.annotations["value"] == "870"
    assert [e.note for e in history if not e.paged] == ["citizen report r15 linked",
                                                        "citizen report r12 linked"]


async def test_a_gauge_at_siaga_4_is_not_linked(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, 0, 700)
        assert observe(service, clock, report("r1", 1, north_m=100)) == [[]]
        assert service.book.get(GAUGE_ALERT) is None


async def test_a_banjir_report_farther_than_1_km_from_the_gauge_is_not_linked(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, 0, 960)  # Siaga 1
        assert observe(service, clock, report("r1", 1, north_m=1200)) == [[]]


async def test_the_count_travels_with_the_gauge_alerts_next_notification(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
    receiver: RecordingReceiver,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock, receiver.url) as service:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            gauge(service, clock, 0, 800)  # Siaga 3: paged
            observe(service, clock, report("r7", 1, north_m=300))  # counted, not paged
            gauge(service, clock, 2, 960)  # Siaga 1: paged, with the count
            await eventually(lambda: len(receiver.delivered()) == 2, what="two pages")
            stop.set()
    pages = [request.json["alerts"][0] for request in receiver.delivered()]
    assert [page["labels"]["level"] for page in pages] == ["siaga-3", "siaga-1"]
    assert "citizen_reports" not in pages[0]["annotations"]
    assert pages[1]["annotations"]["citizen_reports"] == "1"
    assert pages[1]["annotations"]["citizen_report_ids"] == "r7"
    assert len(receiver.requests) == 2


async def test_a_macet_report_near_a_congested_traffic_sensor_is_linked(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        for minute in range(26):  # 10 minutes to fill the mean, then `for: 10m`
            at = T0 + minute * MINUTE
            clock.now = at
            service.observe([Reading(Kind.TRAFFIC, "sudirman-setiabudi", at,
                                     {"speed_kmh": 6.0}, None)], [], at)
        congested = service.book.get(CONGESTION)
        jam = report("m1", 26, north_m=500, near=SUDIRMAN, category="macet", agency=DISHUB)
        far = report("m2", 26, north_m=3000, near=SUDIRMAN, category="macet", agency=DISHUB)
        links = observe(service, clock, jam, far)
        linked = service.book.get(CONGESTION)
    assert congested is not None and congested.alert.status is AlertStatus.FIRING
    assert links == [[CONGESTION], []]
    assert linked is not None and linked.alert.annotations["citizen_report_ids"] == "m1"


async def test_links_survive_a_restart_and_a_report_read_again_is_not_counted_again(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as earlier:
        gauge(earlier, clock, 0, 860)
        observe(earlier, clock, report("r1", 1, north_m=100))
    async with alerting(rules_file, registry, tmp_path, clock) as later:
        observe(later, clock, report("r1", 1, north_m=100), report("r2", 2, north_m=-100))
        gauge(later, clock, 3, 870)
        view = later.book.get(GAUGE_ALERT)
    assert view is not None
    assert view.alert.annotations["citizen_report_ids"] == "r1,r2"


# --- ReportOverdue -----------------------------------------------------------------------


async def test_report_overdue_is_raised_for_the_agency_and_resolved_when_answered(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    overdue = fingerprint("ReportOverdue", "r9")
    late = report("r9", 0, category="sampah", agency="Dinas Lingkungan Hidup")
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        clock.now = T0 + 25 * 60 * MINUTE  # a day and an hour later
        service.report_overdue(late, due_ns=T0 + 24 * 60 * MINUTE)
        service.report_overdue(late, due_ns=T0 + 24 * 60 * MINUTE)  # the next check: kept
        firing = service.book.get(overdue)
        open_ids = service.overdue_reports()
        service.report_answered("r9")
        service.report_answered("r9")  # a later update: nothing open, nothing happens
        service.report_answered("no-such-report")
        resolved = service.book.get(overdue)
        history = service.book.history(overdue)
    assert firing is not None and resolved is not None
    assert firing.alert.status is AlertStatus.FIRING and open_ids == ["r9"]
    assert firing.alert.labels == {"alertname": "ReportOverdue", "severity": "warning",
                                   "category": "sampah", "agency": "Dinas Lingkungan Hidup",
                                   "report_id": "r9"}
    notes = firing.alert.annotations
    assert notes["due_at"] == "2023-11-16 05:13 WIB"
    assert "POST /api/reports/r9/updates" in notes["description"]
    assert resolved.alert.status is AlertStatus.RESOLVED
    assert resolved.alert.annotations["summary"].startswith("Report r9 was answered")
    assert [entry.change for entry in reversed(history)] == ["firing", "resolved"]


async def test_report_overdue_is_routed_to_its_agencys_receiver(
    registry: Registry, tmp_path: Path, clock: Clock, receiver: RecordingReceiver,
) -> None:
    routed = RulesFile.model_validate({
        "receivers": [{"name": "dishub", "url": receiver.url}],
        "routes": [{"receivers": ["dishub"],
                    "match": {"alertname": "ReportOverdue", "agency": DISHUB}}],
    })
    async with alerting(routed, registry, tmp_path, clock) as service:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            clock.now = T0 + 2 * 60 * MINUTE
            service.report_overdue(report("b1", 0), T0 + 60 * MINUTE)  # BPBD's: not dishub's
            service.report_overdue(report("m1", 0, category="macet", agency=DISHUB),
                                   T0 + 60 * MINUTE)
            await eventually(lambda: len(receiver.delivered()) == 1, what="dishub's page")
            service.report_answered("m1")
            await eventually(lambda: len(receiver.delivered()) == 2, what="the resolution")
            stop.set()
    pages = [request.json["alerts"][0] for request in receiver.delivered()]
    assert [(p["status"], p["labels"]["report_id"]) for p in pages] == [
        ("firing", "m1"), ("resolved", "m1")]
    assert pages[0]["labels"]["agency"] == DISHUB


# --- configuration -----------------------------------------------------------------------


async def test_the_thresholds_come_from_the_citizens_section(
    registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    two = RulesFile.model_validate({"citizens": {"flood_reports": {
        "count": 2, "radius_m": 2000, "window": "3h"}}})
    async with alerting(two, registry, tmp_path, clock) as service:
        observe(service, clock, report("r1", 0), report("r2", 150, north_m=1500))
        [(subject, status, notes)] = floods(service)
    assert (subject, status, notes["count"]) == ("cluster=r1", AlertStatus.FIRING, "2")


def test_a_traffic_link_naming_no_rule_is_refused_with_its_line(
    registry: Registry, tmp_path: Path,
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: []\ncitizens:\n  traffic_link:\n    alerts: [Congestoin]\n")
    with pytest.raises(ConfigFileError) as caught:
        load_rules(path, registry)
    assert str(caught.value) == (f"{path}:4: citizens.traffic_link.alerts[0]: no rule named "
                                 "'Congestoin' in this file")
