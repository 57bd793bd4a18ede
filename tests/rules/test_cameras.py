"""FloodDetected: a camera's water, corroborated by its gauge or residents' reports; and the
gauge's flood alert naming the cameras that see water; through the real alert book (SQLite),
the bundled catalog's cameras and a real webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry
from rules.alert import AlertStatus, fingerprint, local_time
from rules.alerting import Alerting
from rules.citizens import CitizenReport
from rules.config import RulesFile
from tests.polling import eventually
from tests.receiver import RecordingReceiver
from tests.rules.books import MINUTE, T0, Clock

CAM = "cam-manggarai"  # watches the Manggarai gauge (siaga3 751, siaga2 851, siaga1 950 cm)
UNDERPASS = "cam-underpass-kemayoran"  # no gauge within 1 km: residents alone corroborate
KEMAYORAN = (-6.1617, 106.8476)
M_PER_DEG = 111_195.0
BPBD = "BPBD DKI Jakarta; Dinas Sumber Daya Air"
STEP = 0.5  # minutes between a camera's readings here (it sends every 10 s; 30 s is enough)


@asynccontextmanager
async def alerting(rules_file: RulesFile, registry: Registry, data_dir: Path, clock: Clock,
                   webhook_url: str | None = None) -> AsyncIterator[Alerting]:
    service = Alerting(rules_file, registry, data_dir, webhook_url=webhook_url,
                       external_url="http://siaga.test", clock_ns=clock)
    async with service:
        yield service


def camera(service: Alerting, clock: Clock, start: float, end: float, device: str = CAM,
           **values: float) -> None:
    """The camera's counts every STEP minutes from `start` to `end` (inclusive)."""
    minute = start
    while minute <= end + 1e-9:
        at = T0 + int(minute * MINUTE)
        clock.now = max(clock.now, at)
        service.observe([Reading(Kind.CAMERA, device, at, dict(values), None)], [], clock.now)
        minute += STEP


def gauge(service: Alerting, clock: Clock, minute: float, level_cm: float) -> None:
    at = T0 + int(minute * MINUTE)
    clock.now = max(clock.now, at)
    service.observe([Reading(Kind.WATER_LEVEL, "manggarai", at, {"level_cm": level_cm}, None)],
                    [], clock.now)


def banjir(report_id: str, minute: float, north_m: float,
           near: tuple[float, float] = KEMAYORAN) -> CitizenReport:
    lat = near[0] + north_m / M_PER_DEG
    return CitizenReport(report_id, "banjir", lat, near[1], T0 + int(minute * MINUTE), BPBD,
                         "Air masuk underpass")


def flood_of(service: Alerting, device: str = CAM) -> tuple[AlertStatus, str, dict[str, str]]:
    view = service.book.get(fingerprint("FloodDetected", device))
    assert view is not None, f"no FloodDetected for {device}"
    return view.alert.status, view.alert.severity.value, dict(view.alert.annotations)


def severities(service: Alerting, device: str = CAM) -> list[tuple[str, str]]:
    """The alert's changes, oldest first: (change, severity)."""
    history = service.book.history(fingerprint("FloodDetected", device))
    return [(entry.change, entry.severity.value) for entry in reversed(history)
            if entry.change in ("firing", "changed", "resolved")]


async def test_water_on_a_camera_for_2_minutes_raises_flood_detected_as_warning(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, -5, 700)  # Siaga 4
        camera(service, clock, 0, 1.5, water_score=0.9)
        before = service.book.get(fingerprint("FloodDetected", CAM))
        camera(service, clock, 2, 3, water_score=0.9)
        status, severity, notes = flood_of(service)
        [view] = [v for v in service.book.alerts() if v.alert.rule == "FloodDetected"]
    assert before is None  # 1.5 minutes is not 2
    assert (status, severity) == (AlertStatus.FIRING, "warning")
    assert view.alert.labels == {
        "alertname": "FloodDetected", "severity": "warning", "device_id": CAM, "kind": "camera",
        "kota": "Jakarta Selatan", "river": "Ciliwung",
        "spot": "Pintu Air Manggarai sluice gates and Jl. Manggarai Utara"}
    assert (notes["gauge"], notes["gauge_siaga"], notes["corroborated_by"]) == (
        "manggarai", "4", "none")
    assert notes["water_score"] == "0.9"
    assert "Neither a gauge nor residents' reports confirm it" in notes["description"]


async def test_flood_detected_is_critical_while_its_gauge_is_at_siaga_2_and_warning_again_after(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, -5, 700)
        camera(service, clock, 0, 3, water_score=0.9)
        gauge(service, clock, 3.2, 860)  # Siaga 2: FloodLevel at siaga-2 fires
        _, raised, notes = flood_of(service)
        camera(service, clock, 3.5, 5, water_score=0.92)
        gauge(service, clock, 5.2, 760)  # back to Siaga 3 (below 851 - 10)
        _, lowered, _ = flood_of(service)
        changes = severities(service)
    assert (raised, lowered) == ("critical", "warning")
    assert changes == [("firing", "warning"), ("changed", "critical"), ("changed", "warning")]
    assert (notes["gauge_siaga"], notes["corroborated_by"]) == (
        "2", "Pintu Air Manggarai at Siaga 2")
    assert notes["gauge_level"] == "Siaga 2 (FloodLevel firing)"


async def test_flood_detected_is_critical_with_three_banjir_reports_within_500_m(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        camera(service, clock, 0, 3, device=UNDERPASS, water_score=0.85)
        linked = [service.observe_report(banjir(f"r{n}", 3 + n, north_m=100 * n))
                  for n in (1, 2, 3)]
        camera(service, clock, 6.5, 7, device=UNDERPASS, water_score=0.85)
        status, severity, notes = flood_of(service, UNDERPASS)
        changes = severities(service, UNDERPASS)
    alert = fingerprint("FloodDetected", UNDERPASS)
    assert (status, severity) == (AlertStatus.FIRING, "critical")
    assert changes == [("firing", "warning"), ("changed", "critical")]  # at the second report
    assert all(alert in fingerprints for fingerprints in linked)  # each report is named in it
    assert (notes["flood_reports"], notes["flood_report_ids"]) == ("3", "r1,r2,r3")
    assert notes["corroborated_by"] == "3 residents' banjir reports within 500 m"
    assert "gauge" not in notes  # none within 1 km, and it watches none


async def test_a_glare_prone_camera_alone_pages_warning_and_never_critical(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
    receiver: RecordingReceiver,
) -> None:
    # Headlights on a wet road at night: water seen for half an hour, one resident's
    # report nearby (not enough), three more 2 km away (not near).
    async with alerting(rules_file, registry, tmp_path, clock, receiver.url) as service:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            camera(service, clock, 0, 10, device=UNDERPASS, water_score=0.95, people=0,
                   vehicles_per_min=3)
            service.observe_report(banjir("near", 10, north_m=200))
            for n in (1, 2, 3):
                service.observe_report(banjir(f"far{n}", 10 + n, north_m=2000 + 50 * n))
            camera(service, clock, 13, 30, device=UNDERPASS, water_score=0.97, people=1,
                   vehicles_per_min=4)
            await eventually(lambda: len(receiver.delivered()) >= 1, what="the page")
            changes = severities(service, UNDERPASS)
            _, severity, notes = flood_of(service, UNDERPASS)
            stop.set()
    pages = [request.json["alerts"][0] for request in receiver.delivered()
             if request.json["alerts"][0]["labels"]["alertname"] == "FloodDetected"]
    assert [page["labels"]["severity"] for page in pages] == ["warning"]
    assert changes == [("firing", "warning")]
    assert (severity, notes["flood_reports"], notes["corroborated_by"]) == ("warning", "1", "none")


async def test_a_frozen_camera_is_not_raised_to_critical_by_its_gauge(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, -5, 700)
        # The same picture, reading after reading.
        camera(service, clock, 0, 12, water_score=0.9, vehicles_per_min=12, mean_speed_kmh=21.5)
        gauge(service, clock, 12.2, 900)  # Siaga 2
        camera(service, clock, 12.5, 20, water_score=0.9, vehicles_per_min=12,
               mean_speed_kmh=21.5)
        _, severity, notes = flood_of(service)
        changes = severities(service)
        [gauge_alert] = [v.alert for v in service.book.alerts() if v.alert.rule == "FloodLevel"]
    assert changes == [("firing", "warning")]
    assert severity == "warning"
    assert notes["camera_frozen"].startswith("its counts have not changed since ")
    assert gauge_alert.annotations.get("cameras_seeing_water", "") == ""  # not counted either


async def test_flood_detected_holds_above_the_clear_score_and_ends_2_minutes_below_it(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        camera(service, clock, 0, 3, water_score=0.9)
        camera(service, clock, 3.5, 8, water_score=0.7)  # below 0.8, above 0.6: still water
        held, _, _ = flood_of(service)
        camera(service, clock, 8.5, 10, water_score=0.4)  # 1.5 minutes below 0.6
        still, _, _ = flood_of(service)
        camera(service, clock, 10.5, 11, water_score=0.3)
        ended, _, notes = flood_of(service)
    assert (held, still, ended) == (AlertStatus.FIRING, AlertStatus.FIRING,
                                    AlertStatus.RESOLVED)
    assert notes["summary"].startswith(f"Camera {CAM} no longer sees water")
    assert "stayed below 0.6 for 2m" in notes["description"]


async def test_a_gauge_flood_alert_names_the_cameras_seeing_water_near_it_without_paging(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
    receiver: RecordingReceiver,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock, receiver.url) as service:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            camera(service, clock, 0, 3, water_score=0.9)  # Manggarai's own camera
            gauge(service, clock, 3.2, 760)  # FloodLevel fires at siaga-3: one page
            await eventually(lambda: len(receiver.delivered()) == 2, what="two pages")
            # Kampung Melayu's camera watches over the Manggarai gauge too (2.7 km away).
            camera(service, clock, 3.5, 6, device="cam-kampung-melayu", water_score=0.95)
            both = service.book.get(fingerprint("FloodLevel", "manggarai"))
            camera(service, clock, 6.5, 9, water_score=0.2)  # Manggarai's camera: dry again
            one = service.book.get(fingerprint("FloodLevel", "manggarai"))
            stop.set()
    flood_level = [request.json["alerts"][0] for request in receiver.delivered()
                   if request.json["alerts"][0]["labels"]["alertname"] == "FloodLevel"]
    assert [page["annotations"]["cameras_seeing_water"] for page in flood_level] == [CAM]
    assert both is not None and one is not None
    assert both.alert.annotations["cameras_seeing_water"] == f"{CAM},cam-kampung-melayu"
    assert both.alert.annotations["cameras_seeing_water_count"] == "2"
    assert one.alert.annotations["cameras_seeing_water"] == "cam-kampung-melayu"
    assert len(flood_level) == 1  # a new list of cameras is recorded, not paged


async def test_a_firing_flood_detected_carries_on_after_a_restart(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as earlier:
        camera(earlier, clock, 0, 3, water_score=0.9)
    async with alerting(rules_file, registry, tmp_path, clock) as later:
        kept, _, _ = flood_of(later)  # not resolved at start as the alert of an unknown rule
        camera(later, clock, 3.5, 4, water_score=0.7)  # above the clear score: still water
        held, _, _ = flood_of(later)
        changes = severities(later)
    assert (kept, held) == (AlertStatus.FIRING, AlertStatus.FIRING)
    assert changes == [("firing", "warning")]



async def test_a_gauge_flood_alert_keeps_naming_its_cameras_after_a_restart(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as earlier:
        camera(earlier, clock, 0, 3, water_score=0.9)
        gauge(earlier, clock, 3.2, 760)
    async with alerting(rules_file, registry, tmp_path, clock) as later:
        gauge(later, clock, 4, 770)  # the ladder's signal rebuilds its annotations
        view = later.book.get(fingerprint("FloodLevel", "manggarai"))
    assert view is not None and view.alert.annotations["cameras_seeing_water"] == CAM
    assert view.alert.annotations["summary"]  # the rule's own annotations are there too


async def test_a_flooded_empty_road_holding_still_is_not_taken_for_a_frozen_picture(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    # Water 1.0, no vehicle, no speed, nobody: the same counts for 20 minutes are a flooded
    # underpass, not a frozen camera; its gauge at Siaga 2 keeps the alert critical.
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        gauge(service, clock, -5, 900)  # Siaga 2
        camera(service, clock, 0, 20, water_score=1.0, vehicles_per_min=0, mean_speed_kmh=0,
               people=0)
        _, severity, notes = flood_of(service)
        changes = severities(service)
    assert changes == [("firing", "critical")]
    assert severity == "critical" and "camera_frozen" not in notes


async def test_a_flood_carried_on_after_a_restart_is_said_to_hold_since_it_fired(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    def since(description: str) -> str:
        return description.split(" since ", 1)[1].split(".", 1)[0]

    async with alerting(rules_file, registry, tmp_path, clock) as earlier:
        camera(earlier, clock, 0, 3, water_score=0.9)
        view = earlier.book.get(fingerprint("FloodDetected", CAM))
        assert view is not None
        fired = local_time(view.alert.starts_at_ns, "+07:00")
    async with alerting(rules_file, registry, tmp_path, clock) as later:
        camera(later, clock, 3.5, 5, water_score=0.95)  # a new score: the alert is written
        _, _, notes = flood_of(later)
    assert notes["water_score"] == "0.95"
    # Not the first reading after the restart (3.5 minutes in): when it fired (2 minutes).
    assert since(notes["description"]) == fired != local_time(T0 + int(3.5 * MINUTE),
                                                               "+07:00")
