"""Cameras near a gauge across a cluster's instances (issue 18): two `Alerting`s on one real
PostgreSQL. A gauge's reading judges again only the cameras near it that the instance reading
the gauge reads itself (`Alerting._own_cameras`); a camera another instance reads is that
instance's to judge, after its refresh of the shared gauges. After partitions may have moved
(`ownership_changed`), a camera read here before counts as read here again only from its
next reading on. A takeover may leave gauges' notes of the cameras seeing water still to
write; the next watched gauge's run writes them, judged at once or reading by reading. A
camera coming back to an instance that judged it before is judged from what the other
instance left in the book, not from what the first instance held. So are its hotspots and
listed plates, whose alerts have subjects of their own: one raised by the other instance is
carried on (not raised again) and ended here, and one the other instance ended is not ended
again. A takeover the book could not read is done when the batch comes again.

The instances' scheduled jobs do not run: the test calls the shared-book refresh the 2-s job
makes (`refresh_shared_gauges`) itself, so that what each instance has read is known at every
assertion, and nothing happens in the background between two steps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from devices.kinds import Kind
from devices.readings import Reading, StatusUpdate
from devices.registry import Registry
from rules.alert import fingerprint
from rules.alerting import Alerting, Cluster
from rules.citizens import CitizenReport
from rules.config import RulesFile
from siaga_core.errors import StorageError
from tests.rules.books import MINUTE, T0, Clock
from tests.rules.test_cameras import CAM, camera, flood_of, gauge, severities
from tests.rules.test_cameras_events import (
    HOTSPOT,
    KUNINGAN,
    KUNINGAN_AT,
    M_PER_DEG,
    counts,
    detect,
    event,
)

GAUGE = "manggarai"  # CAM watches it: Siaga 3 at 751 cm, Siaga 2 at 851, Siaga 1 at 950
OTHER_GAUGE = "karet"  # watched by two other cameras, none near GAUGE; Siaga 3 at 451 cm
FLOOD_AT_CAM = fingerprint("FloodDetected", CAM)


@asynccontextmanager
async def instance(name: str, rules_file: RulesFile, registry: Registry, tmp_path: Path,
                   database: str, clock: Clock) -> AsyncIterator[Alerting]:
    """One instance of the cluster, connected to its broker; its jobs not running."""
    async with Alerting(rules_file, registry, tmp_path / name, webhook_url=None,
                        external_url="http://siaga.test", clock_ns=clock,
                        cluster=Cluster(database)) as alerting:
        alerting.broker_connection_changed(True)
        yield alerting


@asynccontextmanager
async def two_instances(rules_file: RulesFile, registry: Registry, tmp_path: Path,
                        database: str, clock: Clock) -> AsyncIterator[tuple[Alerting, Alerting]]:
    """Instances "a" and "b" of one cluster, on one clock."""
    async with (instance("a", rules_file, registry, tmp_path, database, clock) as a,
                instance("b", rules_file, registry, tmp_path, database, clock) as b):
        yield a, b


def judged_here(service: Alerting) -> str | None:
    """The severity of the camera's FloodDetected as this instance's engine holds it: what
    the instance judged, even where the shared book kept a newer record instead."""
    alert = service.engine.current("FloodDetected", CAM)
    return None if alert is None else alert.severity.value


def seeing_water(service: Alerting, alert_fingerprint: str) -> str:
    """The cameras a gauge's alert names as seeing water, in the shared book."""
    view = service.book.get(alert_fingerprint)
    assert view is not None, f"no alert {alert_fingerprint}"
    return view.alert.annotations.get("cameras_seeing_water", "")


def history_ids(service: Alerting) -> list[int]:
    """Every line the shared book holds of the camera's FloodDetected: a raise, a change,
    a resolution or a page would each add one."""
    return [entry.id for entry in service.book.history(FLOOD_AT_CAM)]


async def test_a_gauge_read_here_does_not_judge_a_camera_another_instance_reads(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with instance("b", rules_file, registry, tmp_path, database, clock) as b:
        camera(b, clock, 0, 3, water_score=0.9)  # the gauge's level unknown: uncorroborated
        assert severities(b) == [("firing", "warning")]
        # The first instance starts now: from the shared book it holds the camera's open
        # alert (and the camera's flood as firing), as it would had it read the camera
        # before its partition moved to the other instance.
        async with instance("a", rules_file, registry, tmp_path, database, clock) as a:
            assert a.engine.current("FloodDetected", CAM) is not None
            before = history_ids(a)
            gauge(a, clock, 3.2, 860)  # Siaga 2, read by the first instance
            assert a.book.get(fingerprint("FloodLevel", GAUGE)) is not None
            # The camera is the other's: the gauge's reader changes nothing of it.
            assert history_ids(a) == before
            assert (flood_of(a)[1], judged_here(a)) == ("warning", "warning")
            # Its reader corroborates it once it reads the gauge's alert in the book.
            await b.refresh_shared_gauges()
            _, severity, notes = flood_of(b)
            assert (severity, notes["corroborated_by"]) == ("critical",
                                                            "Pintu Air Manggarai at Siaga 2")
            # The gauge falls back to Siaga 3: again only the camera's reader lowers it.
            before = history_ids(a)
            gauge(a, clock, 3.4, 760)
            assert history_ids(a) == before
            assert judged_here(a) == "warning"  # as restored: never judged here
            await b.refresh_shared_gauges()
            assert severities(b) == [("firing", "warning"), ("changed", "critical"),
                                     ("changed", "warning")]


async def test_a_camera_read_here_before_partitions_moved_counts_again_at_its_next_reading(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        gauge(a, clock, -5, 700)  # Siaga 4
        camera(a, clock, 0, 3, water_score=0.9)
        assert severities(a) == [("firing", "warning")]
        # Partitions move: the camera goes to the other instance, which carries it on.
        a.ownership_changed()
        camera(b, clock, 3.5, 4, water_score=0.9)
        # The gauge stays with the first instance and reaches Siaga 2: the camera it read
        # before is not its own now, and it is not judged here.
        before = history_ids(a)
        gauge(a, clock, 4.2, 860)
        assert history_ids(a) == before
        # Nor in its engine: the other instance's newer record in the book would hide a
        # change judged here from what it held before (the book keeps the newest).
        assert judged_here(a) == "warning"
        # The camera comes back before the other instance read the gauge's new level: its
        # next reading here judges it with that level ...
        b.ownership_changed()
        camera(a, clock, 4.5, 4.5, water_score=0.9)
        assert severities(a) == [("firing", "warning"), ("changed", "critical")]
        # ... and from then on the gauge's readings here judge it again.
        gauge(a, clock, 4.7, 760)  # Siaga 3
        assert severities(a) == [("firing", "warning"), ("changed", "critical"),
                                 ("changed", "warning")]


async def test_notes_a_takeover_left_to_write_are_written_at_the_next_watched_gauges_run(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    flood_level = fingerprint("FloodLevel", GAUGE)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        gauge(a, clock, -5, 860)  # Siaga 2 on the first instance: no camera sees water yet
        camera(b, clock, 0, 3, water_score=0.9)  # the other instance's camera does now
        # Partitions move; the gauge's next reading comes here before the first instance
        # read the shared book again: its alert still names no camera.
        a.ownership_changed()
        gauge(a, clock, 3.2, 860)
        # The camera's partition moves here too; its status comes first. The takeover
        # takes its open FloodDetected from the book: the camera sees water, and the
        # gauge's alert is to name it, at the next camera rules' turn.
        a.observe([], [StatusUpdate(Kind.CAMERA, CAM, True, clock.now)], clock.now)
        assert seeing_water(a, flood_level) == ""
        # A run of another gauge that cameras watch, none of them firing: judged as one
        # run it must still write the notes, as judging it reading by reading does.
        at = clock.now + MINUTE
        clock.now = at + 2 * MINUTE
        a.observe([Reading(Kind.WATER_LEVEL, OTHER_GAUGE, at + i * MINUTE,
                           {"level_cm": 300.0 + i}, None) for i in range(3)], [], clock.now)
        assert seeing_water(a, flood_level) == CAM
        assert a.book.history(flood_level)[0].note == f"cameras seeing water: {CAM}"


async def test_a_camera_coming_back_is_judged_from_what_the_other_instance_left_in_the_book(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        camera(a, clock, 0, 3, water_score=0.9)
        a.ownership_changed()
        camera(b, clock, 3.5, 8, water_score=0.1)  # the water is gone: resolved there
        assert severities(b) == [("firing", "warning"), ("resolved", "warning")]
        b.ownership_changed()
        camera(a, clock, 8.5, 9, water_score=0.1)  # back: the road is dry
        assert judged_here(a) is None  # the first instance holds no open alert for it
        camera(a, clock, 9.5, 14, water_score=0.95)  # water again, for 4.5 minutes
        assert severities(a) == [("firing", "warning"), ("resolved", "warning"),
                                 ("firing", "warning")]


async def test_readings_the_other_instance_judged_are_late_when_the_camera_comes_back(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        camera(a, clock, 0, 3, water_score=0.1)  # a dry road, read by the first instance
        a.ownership_changed()
        camera(b, clock, 3.5, 6, water_score=0.9)  # water for 2.5 minutes, there
        camera(b, clock, 6.5, 10, water_score=0.1)  # and gone again
        assert severities(b) == [("firing", "warning"), ("resolved", "warning")]
        b.ownership_changed()
        # The partition comes back with the readings the other instance judged (redelivered,
        # their acknowledgements lost with the move): they are late here too.
        camera(a, clock, 3.5, 6, water_score=0.9)
        assert judged_here(a) is None
        assert severities(a) == [("firing", "warning"), ("resolved", "warning")]


async def test_a_takeover_the_book_could_not_read_is_tried_again_with_the_batch(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        camera(a, clock, 0, 3, water_score=0.9)
        a.ownership_changed()
        camera(b, clock, 3.5, 8, water_score=0.1)  # resolved there
        b.ownership_changed()
        with psycopg.connect(database, autocommit=True) as db:
            # The book fails the first instance's takeover read (a real error of the real
            # server: its table is not there for a moment).
            db.execute("ALTER TABLE alerts RENAME TO alerts_away")
            with pytest.raises(StorageError):
                camera(a, clock, 8.5, 8.5, water_score=0.1)
            db.execute("ALTER TABLE alerts_away RENAME TO alerts")
        camera(a, clock, 8.5, 9, water_score=0.1)  # the batch again, unacknowledged
        assert judged_here(a) is None  # it took the camera over: the flood ended there



PLATE = "B1234XYZ"
PLATE_SEEN = fingerprint("WatchlistVehicleSeen", f"{KUNINGAN}/plate={PLATE}")
HOTSPOT_SUBJECT = f"{KUNINGAN}/illegal-parking/bus-stop"


def changes(service: Alerting, alert_fingerprint: str) -> list[str]:
    """The alert's changes in the shared book, oldest first (firing, resolved...)."""
    return [entry.change for entry in reversed(service.book.history(alert_fingerprint))]


def violations(service: Alerting, clock: Clock, start: int, name: str) -> None:
    """Ten illegal-parking detections in the bus-stop zone, a minute apart: a hotspot."""
    detect(service, clock, *(event(f"{name}{n}", start + n) for n in range(10)))


def car(service: Alerting, clock: Clock, minute: float) -> None:
    """A detection of no rule's label: it only moves the camera's event time on."""
    detect(service, clock, event(f"car-{minute}", minute, label="car", zone=None))


async def test_a_listed_plate_another_instance_raised_ends_with_the_events_new_reader(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        detect(a, clock, event("p1", 0, label="plate", zone=None, plate=PLATE))
        assert changes(a, PLATE_SEEN) == ["firing"]
        a.ownership_changed()
        # The camera's partitions now come to the other instance: its counts alone (its
        # events may be another partition's) end nothing of the detections...
        counts(b, clock, 31, 36, KUNINGAN, vehicles_per_min=10)
        assert changes(b, PLATE_SEEN) == ["firing"]
        # ... its events do: 37 minutes without the plate.
        car(b, clock, 37)
        assert changes(b, PLATE_SEEN) == ["firing", "resolved"]


async def test_a_hotspot_another_instance_raised_is_carried_on_not_raised_again(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        violations(a, clock, 0, "e")
        assert changes(a, HOTSPOT) == ["firing"]
        a.ownership_changed()
        violations(b, clock, 20, "f")  # still a hotspot
        assert changes(b, HOTSPOT) == ["firing"]
        assert b.engine.current("ViolationHotspot", HOTSPOT_SUBJECT) is not None
        car(b, clock, 90)  # an hour without a violation
        assert changes(b, HOTSPOT) == ["firing", "resolved"]


async def test_a_hotspot_the_other_instance_ended_is_not_ended_again_when_the_camera_is_back(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        violations(a, clock, 0, "e")
        a.ownership_changed()
        car(b, clock, 80)  # quiet for over an hour: the other instance ends it
        assert changes(b, HOTSPOT) == ["firing", "resolved"]
        b.ownership_changed()
        counts(a, clock, 90, 95, KUNINGAN, vehicles_per_min=10)  # its counts, back here
        car(a, clock, 96)  # and its events
        assert a.engine.current("ViolationHotspot", HOTSPOT_SUBJECT) is None
        assert changes(a, HOTSPOT) == ["firing", "resolved"]
        # New violations here make a new hotspot, raised once.
        violations(a, clock, 100, "g")
        assert changes(a, HOTSPOT) == ["firing", "resolved", "firing"]


async def test_the_counts_reader_leaves_alone_a_hotspot_the_events_reader_keeps_alive(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    # The camera's telemetry and events topics hash to different partitions (docs/
    # scaling.md 2.1): one instance reads its counts, the other its detections. The first
    # read both before partitions moved, so it still holds the hotspot it raised.
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        violations(a, clock, 0, "e")
        a.ownership_changed()
        for minute in range(10, 100):  # a violation a minute, and the counts
            detect(b, clock, event(f"k{minute}", minute))
            counts(a, clock, minute + 0.5, minute + 0.5, KUNINGAN, vehicles_per_min=10)
        assert changes(b, HOTSPOT) == ["firing"]


async def test_a_camera_whose_events_come_here_is_still_judged_by_its_counts_reader(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    flood_level = fingerprint("FloodLevel", GAUGE)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        gauge(b, clock, -5, 860)  # Siaga 2, read by the second instance
        # ... which also reads the camera's events; its counts come to the first.
        detect(b, clock, event("x1", -4, device=CAM, label="car", zone=None))
        camera(a, clock, 0, 3, water_score=0.9)
        await b.refresh_shared_gauges()  # as every 2 s
        gauge(b, clock, 3.2, 860)
        # The gauge's alert names the camera the first instance sees water on: the second
        # does not judge it from what it holds of the camera itself.
        assert seeing_water(b, flood_level) == CAM


async def test_a_parkir_liar_report_is_named_in_a_hotspot_by_its_events_reader_only(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (a, b):
        counts(a, clock, 0, 0, KUNINGAN, vehicles_per_min=10)
        violations(a, clock, 0, "e")  # raised where both the counts and events were read
        a.ownership_changed()
        counts(a, clock, 10, 10, KUNINGAN, vehicles_per_min=10)  # the counts stay here,
        detect(b, clock, event("k10", 10.2))  # the events go to the other instance
        clock.now = T0 + 11 * MINUTE
        report = CitizenReport("p1", "parkir-liar", KUNINGAN_AT[0] + 100 / M_PER_DEG,
                               KUNINGAN_AT[1], clock.now, "Dinas Perhubungan",
                               "Mobil parkir di trotoar")
        # Every instance hears the report as it follows; the first still holds the hotspot
        # it raised, but it is the events reader's now.
        assert a.observe_report(report) == []
        assert b.observe_report(report) == [HOTSPOT]
        view = b.book.get(HOTSPOT)
        assert view is not None and view.alert.annotations["parking_report_ids"] == "p1"


GATOT = fingerprint("ViolationHotspot", f"{KUNINGAN}/illegal-parking/gatot-subroto")


def gatot(service: Alerting, clock: Clock, minutes: list[float]) -> None:
    detect(service, clock, *(event(f"g{minute}", minute, zone="gatot-subroto")
                             for minute in minutes))


async def test_a_camera_that_stayed_keeps_its_counted_violations_when_partitions_move(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with instance("a", rules_file, registry, tmp_path, database, clock) as a:
        counts(a, clock, 0, 0, KUNINGAN, vehicles_per_min=10)  # its counts and its events
        gatot(a, clock, [1 + n for n in range(9)])  # nine in one zone
        detect(a, clock, *(event(f"e{n}", 10 + n) for n in range(9)))
        counts(a, clock, 19.5, 19.5, KUNINGAN, vehicles_per_min=10)
        detect(a, clock, event("e9", 19.2))  # a bus-stop hotspot, behind the counts
        assert changes(a, HOTSPOT) == ["firing"]  # recorded at the camera's time, 19.5
        a.ownership_changed()  # another partition moved in; this camera's stayed
        counts(a, clock, 20, 20, KUNINGAN, vehicles_per_min=10)
        gatot(a, clock, [20.1])  # the tenth in the zone within 20 minutes
        assert changes(a, GATOT) == ["firing"]


async def test_a_camera_that_stayed_keeps_its_violations_after_a_plate_ended_on_its_counts(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str) -> None:
    clock = Clock(T0)
    async with instance("a", rules_file, registry, tmp_path, database, clock) as a:
        detect(a, clock, event("p1", 0, label="plate", zone=None, plate=PLATE))
        gatot(a, clock, [1 + n for n in range(9)])
        counts(a, clock, 9.5, 40, KUNINGAN, vehicles_per_min=10)  # the plate ends at 30
        assert changes(a, PLATE_SEEN) == ["firing", "resolved"]
        a.ownership_changed()
        counts(a, clock, 40.5, 40.5, KUNINGAN, vehicles_per_min=10)
        gatot(a, clock, [41])  # the tenth within the hour
        assert changes(a, GATOT) == ["firing"]
