"""Residents' flood reports across a cluster's instances (issue 18): two instances, each with
its own API's desk, sharing one real PostgreSQL (the alert book, the report book, the
leader's lock). A flood cluster counts the reports whichever instance took them, is raised
once by the leader, names the level of a gauge the other instance reads, and carries on
when the leader goes; a camera is corroborated by a gauge and by reports that another
instance reads and took, and named in the gauge's alert; a cluster that formed while no
instance led is raised once by the next leader. An unanswered report is paged once, by the
leader, and ended by an answer whichever instance took it, also across a change of leader.

Each instance's turn over the shared book (`CitizenDesk.follow_once`, which `run` repeats
every second) is called by the test, so that what each instance has read is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry
from reports.book import ApiKey, ReportBook
from reports.model import State
from reports.settings import ReportsSettings
from rules.alert import AlertStatus, fingerprint
from rules.alerting import Alerting, Cluster
from rules.citizens import CITIZEN_FLOOD_REPORTS, REPORT_OVERDUE
from rules.config import RulesFile
from siaga.citizens import CitizenDesk
from tests.integration.support import unique_name
from tests.polling import eventually
from tests.rules.books import T0, Clock
from tests.rules.test_cameras import (
    CAM,
    KEMAYORAN,
    M_PER_DEG,
    UNDERPASS,
    camera,
    flood_of,
    gauge,
    severities,
)

WITHIN_S = 30
MINUTE = 60 * 10**9
# Four places within 500 m of each other, a few hundred metres from the Manggarai gate.
PLACES = ((-6.2080, 106.8490), (-6.2085, 106.8496), (-6.2078, 106.8499), (-6.2082, 106.8493))


@dataclass
class Instance:
    alerting: Alerting
    desk: CitizenDesk
    key: ApiKey
    stop: asyncio.Event  # ends its alerting's run: its scheduled jobs and its candidacy

    async def report(self, place: tuple[float, float]) -> str:
        fields = [("service_code", "banjir"), ("lat", str(place[0])), ("long", str(place[1])),
                  ("description", "Air masuk rumah, setinggi lutut")]
        submitted = await self.desk.submit(fields, None, self.key)
        return submitted.report.id

    async def follow(self) -> int:
        return await self.desk.follow_once(self.alerting)


@asynccontextmanager
async def started(name: str, rules_file: RulesFile, registry: Registry, tmp_path: Path,
                  database: str, clock: Clock) -> AsyncIterator[Instance]:
    """One running instance: its alerting (scheduled jobs, the leader's election) and its
    desk on the shared report book."""
    stop = asyncio.Event()
    data = tmp_path / name
    async with AsyncExitStack() as stack:
        alerting = await stack.enter_async_context(Alerting(
            rules_file, registry, data, webhook_url=None, external_url="http://siaga.test",
            clock_ns=clock, cluster=Cluster(database)))
        settings = ReportsSettings(database_url=SecretStr(database))
        book = stack.enter_context(ReportBook.open(settings, data, clock_ns=clock))
        desk = CitizenDesk(book, CitizenDesk.photo_store(settings, data), settings, alerting,
                           clock_ns=clock)
        key = await desk.api_key(book.add_key(unique_name("app-")))
        group = await stack.enter_async_context(asyncio.TaskGroup())
        stack.callback(stop.set)  # unwound before the group waits for its task
        alerting.broker_connection_changed(True)
        group.create_task(alerting.run(stop))
        yield Instance(alerting, desk, key, stop)


def flood_alerts(instance: Instance, rule: str = CITIZEN_FLOOD_REPORTS) -> list[tuple[str, str]]:
    """(subject, status) of every alert of `rule` (a flood cluster) in the shared book."""
    return [(view.alert.subject, view.alert.status.value)
            for view in instance.alerting.book.alerts() if view.alert.rule == rule]


def raised(instance: Instance, subject: str, rule: str = CITIZEN_FLOOD_REPORTS) -> int:
    """How often the alert (a cluster's) began: its history's firing entries."""
    history = instance.alerting.book.history(fingerprint(rule, subject))
    return sum(entry.change == "firing" for entry in history)


@asynccontextmanager
async def two_started(rules_file: RulesFile, registry: Registry, tmp_path: Path,
                      database: str, clock: Clock) -> AsyncIterator[tuple[Instance, Instance]]:
    """Two instances, the leader first, each having read the (empty) recent past."""
    async with (started("a", rules_file, registry, tmp_path, database, clock) as a,
                started("b", rules_file, registry, tmp_path, database, clock) as b):
        await eventually(lambda: a.alerting.leading != b.alerting.leading, WITHIN_S,
                         "one leader")
        for instance in (a, b):
            await instance.follow()
        yield (a, b) if a.alerting.leading else (b, a)


async def test_reports_taken_by_two_instances_make_one_cluster_raised_once_by_the_leader(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_started(rules_file, registry, tmp_path, database, clock) as (leader, other):
        # Manggarai at Siaga 1, read by the instance that does not lead.
        other.alerting.observe([Reading(Kind.WATER_LEVEL, "manggarai", clock.now,
                                        {"level_cm": 960.0}, None)], [], clock.now)
        await leader.alerting.refresh_shared_gauges()  # as every 2 s
        first = await leader.report(PLACES[0])
        clock.now += MINUTE
        second = await other.report(PLACES[1])
        clock.now += MINUTE
        third = await other.report(PLACES[2])
        # The instance that took them raised nothing itself: clusters are the leader's.
        assert flood_alerts(other) == []
        assert await other.follow() == 3
        assert flood_alerts(other) == []  # the other instance keeps the cluster, silently
        assert await leader.follow() == 3
        subject = f"cluster={first}"
        assert flood_alerts(leader) == [(subject, "firing")]
        view = leader.alerting.book.get(fingerprint(CITIZEN_FLOOD_REPORTS, subject))
        assert view is not None
        notes = view.alert.annotations
        assert notes["report_ids"] == f"{first},{second},{third}"
        # The gauge's level, from the alert the other instance raised in the shared book.
        assert notes["gauge"] == "manggarai"
        assert notes["gauge_level"].startswith("Siaga 1 ("), notes["gauge_level"]
        # Every report is linked to the cluster, and to the gauge's alert by the instance
        # that reads the gauge, whichever instance took the report.
        gauge_alert = other.alerting.book.get(fingerprint("FloodLevel", "manggarai"))
        assert gauge_alert is not None
        assert gauge_alert.alert.annotations["citizen_report_ids"] == f"{first},{second},{third}"
        for report_id in (first, second, third):
            linked = await other.desk.get(report_id)
            assert set(linked.alerts) == {view.alert.fingerprint, gauge_alert.alert.fingerprint}
        # A fourth joins: a new count, not a second alert.
        clock.now += MINUTE
        fourth = await other.report(PLACES[3])
        await other.follow()
        await leader.follow()
        view = leader.alerting.book.get(view.alert.fingerprint)
        assert view is not None and view.alert.annotations["count"] == "4"
        assert fourth in view.alert.annotations["report_ids"].split(",")
        assert raised(leader, subject) == 1


async def test_a_new_leader_carries_the_clusters_on_and_raises_none_twice(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_started(rules_file, registry, tmp_path, database, clock) as (leader, other):
        ids = [await other.report(place) for place in PLACES[:3]]
        for instance in (other, leader):
            await instance.follow()
        subject = f"cluster={ids[0]}"
        assert flood_alerts(leader) == [(subject, "firing")]
        leader.stop.set()  # it stops leading (and, like a stopped service, following)
        await eventually(lambda: other.alerting.leading, WITHIN_S, "the other leading")
        clock.now += MINUTE
        fourth = await other.report(PLACES[3])
        await other.follow()
        view = other.alerting.book.get(fingerprint(CITIZEN_FLOOD_REPORTS, subject))
        assert view is not None and view.alert.status is AlertStatus.FIRING
        assert view.alert.annotations["report_ids"].split(",") == [*ids, fourth]
        assert raised(other, subject) == 1
        # The new leader resolves it once the window passes without a report; the old
        # one, which still holds the cluster, resolves nothing.
        clock.now += 31 * MINUTE
        leader.alerting.check_flood_reports()
        assert flood_alerts(other) == [(subject, "firing")]
        other.alerting.check_flood_reports()
        assert flood_alerts(other) == [(subject, "resolved")]


async def test_a_camera_is_corroborated_by_a_gauge_and_by_reports_another_instance_took(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_started(rules_file, registry, tmp_path, database, clock) as (leader, other):
        # The camera at the Manggarai gate is read by one instance, the gauge by the other.
        camera(other.alerting, clock, 0, 3, water_score=0.9)
        assert flood_of(other.alerting)[1] == "warning"  # nothing confirms it yet
        gauge(leader.alerting, clock, 3.2, 860)  # Siaga 2, raised by the leader
        await other.alerting.refresh_shared_gauges()  # as every 2 s
        _, severity, notes = flood_of(other.alerting)
        assert (severity, notes["corroborated_by"]) == ("critical",
                                                        "Pintu Air Manggarai at Siaga 2")
        # ... and the gauge's alert, on the leader, names the camera seeing water.
        await leader.alerting.refresh_shared_gauges()
        view = leader.alerting.book.get(fingerprint("FloodLevel", "manggarai"))
        assert view is not None
        assert view.alert.annotations["cameras_seeing_water"] == CAM
        # Residents' reports near the underpass camera, all taken by the other instance's
        # API, corroborate the camera the first instance reads.
        camera(leader.alerting, clock, 4, 7, device=UNDERPASS, water_score=0.85)
        assert flood_of(leader.alerting, UNDERPASS)[1] == "warning"
        for north_m in (100, 200, 300):
            clock.now += MINUTE
            await other.report((KEMAYORAN[0] + north_m / M_PER_DEG, KEMAYORAN[1]))
        await leader.follow()
        assert flood_of(leader.alerting, UNDERPASS)[1] == "critical"
        # The count in the engine; the book has it at the camera's next reading.
        alert = leader.alerting.engine.current("FloodDetected", UNDERPASS)
        assert alert is not None and alert.annotations["flood_reports"] == "3"


async def test_a_cluster_that_formed_while_nobody_led_is_raised_once_by_the_next_leader(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    # The test holds the leader's lock (siaga_core/leader.py, key "alerting"): no instance
    # leads while the reports come in, as between a leader's death and its successor.
    with psycopg.connect(database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                       ("siaga.leader:alerting",))
        async with AsyncExitStack() as stack:
            instances = [await stack.enter_async_context(started(
                name, rules_file, registry, tmp_path, database, clock)) for name in "ab"]
            for instance in instances:
                await instance.follow()
            ids = [await instances[0].report(place) for place in PLACES[:3]]
            for instance in instances:
                assert await instance.follow() == 3
            assert flood_alerts(instances[0]) == []  # formed everywhere, raised nowhere
            assert not any(instance.alerting.leading for instance in instances)
            holder.close()  # the lock goes with the session
            await eventually(lambda: any(i.alerting.leading for i in instances), WITHIN_S,
                             "a leader")
            for instance in instances:
                await instance.follow()
            subject = f"cluster={ids[0]}"
            assert flood_alerts(instances[0]) == [(subject, "firing")]
            assert raised(instances[0], subject) == 1


async def test_an_instance_taking_a_camera_over_knows_its_gauge_from_the_start(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(started("a", rules_file, registry, tmp_path,
                                                        database, clock))
        gauge(first.alerting, clock, -5, 860)  # Siaga 2
        camera(first.alerting, clock, 0, 3, water_score=0.9)  # corroborated: critical
        # A second instance starts and the camera's partition moves to it: before its
        # first read of the shared book, it knows the gauge from what it read at start.
        second = await stack.enter_async_context(started("b", rules_file, registry,
                                                         tmp_path, database, clock))
        camera(second.alerting, clock, 3.5, 4, water_score=0.9)
        assert severities(second.alerting) == [("firing", "critical")]


async def test_an_unanswered_report_is_paged_once_by_the_leader_and_ended_by_an_answer_elsewhere(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_started(rules_file, registry, tmp_path, database, clock) as (leader, other):
        report_id = await other.report(PLACES[0])
        clock.now += 61 * MINUTE  # banjir: an hour to answer
        # Both desks check every minute; each would find the report in the shared book.
        assert await other.desk.check_overdue() == 0
        assert flood_alerts(leader, REPORT_OVERDUE) == []
        assert await leader.desk.check_overdue() == 1
        assert flood_alerts(leader, REPORT_OVERDUE) == [(report_id, "firing")]
        clock.now += MINUTE
        assert await other.desk.check_overdue() == 0
        assert other.alerting.overdue_reports() == []
        # An officer answers through the other instance's API: the leader ends the alert
        # at its next check, when the book no longer lists the report as overdue.
        await other.desk.update(report_id, State.ACKNOWLEDGED, "Tim BPBD menuju lokasi",
                                "petugas-1", None)
        assert flood_alerts(leader, REPORT_OVERDUE) == [(report_id, "firing")]
        assert await leader.desk.check_overdue() == 0
        assert flood_alerts(leader, REPORT_OVERDUE) == [(report_id, "resolved")]
        assert raised(leader, report_id, REPORT_OVERDUE) == 1


async def test_a_new_leader_carries_an_overdue_report_on_and_pages_it_once(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_started(rules_file, registry, tmp_path, database, clock) as (leader, other):
        report_id = await leader.report(PLACES[0])
        clock.now += 61 * MINUTE
        assert await leader.desk.check_overdue() == 1
        leader.stop.set()  # it stops leading, its desk still takes officers' updates
        await eventually(lambda: other.alerting.leading, WITHIN_S, "the other leading")
        clock.now += MINUTE
        assert await other.desk.check_overdue() == 1
        assert other.alerting.overdue_reports() == [report_id]  # its predecessor's alert
        # The answer reaches the old leader, which still holds the alert: it ends nothing
        # itself, and the new leader ends the alert at its next check.
        await leader.desk.update(report_id, State.IN_PROGRESS, "Pompa dikirim", "petugas-2",
                                 None)
        assert await leader.desk.check_overdue() == 0
        assert flood_alerts(other, REPORT_OVERDUE) == [(report_id, "firing")]
        assert await other.desk.check_overdue() == 0
        assert flood_alerts(other, REPORT_OVERDUE) == [(report_id, "resolved")]
        assert raised(other, report_id, REPORT_OVERDUE) == 1
