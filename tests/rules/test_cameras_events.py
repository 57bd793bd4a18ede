"""CameraCongestion, ViolationHotspot and WatchlistVehicleSeen, the cameras section of the
rules file, and a catalog without cameras; through the real alert book (SQLite), the
bundled catalog's cameras and a real webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devices.detections import Detection, EventType
from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry, bundled_catalog_path, load_catalog
from rules.alert import AlertStatus, fingerprint
from rules.alerting import Alerting
from rules.cameras import PlateLabels
from rules.citizens import CitizenReport
from rules.config import RulesFile, load_rules
from siaga_core.errors import ConfigFileError
from tests.polling import eventually
from tests.receiver import RecordingReceiver
from tests.rules.books import DEFAULT_RULES, MINUTE, T0, Clock

SEMANGGI = "cam-semanggi"
KUNINGAN = "cam-kuningan"  # zones gatot-subroto, rasuna-said, bus-stop
KUNINGAN_AT = (-6.2306, 106.8302)
M_PER_DEG = 111_195.0
PLATE = "B1234XYZ"
BAPENDA = "Bapenda DKI Jakarta"
HOTSPOT = fingerprint("ViolationHotspot", f"{KUNINGAN}/illegal-parking/bus-stop")


@asynccontextmanager
async def alerting(rules_file: RulesFile, registry: Registry, data_dir: Path, clock: Clock,
                   webhook_url: str | None = None,
                   plate_labels: PlateLabels | None = None) -> AsyncIterator[Alerting]:
    service = Alerting(rules_file, registry, data_dir, webhook_url=webhook_url,
                       external_url="http://siaga.test", clock_ns=clock,
                       plate_labels=plate_labels)
    async with service:
        yield service


def counts(service: Alerting, clock: Clock, start: float, end: float, device: str,
           **values: float) -> None:
    """The camera's counts every half minute from `start` to `end` (inclusive)."""
    minute = start
    while minute <= end + 1e-9:
        at = T0 + int(minute * MINUTE)
        clock.now = max(clock.now, at)
        service.observe([Reading(Kind.CAMERA, device, at, dict(values), None)], [], clock.now)
        minute += 0.5


def event(event_id: str, minute: float, kind: EventType = "new", *,
          label: str = "illegal-parking", zone: str | None = "bus-stop",
          device: str = KUNINGAN, plate: str | None = None) -> Detection:
    return Detection(device, T0 + int(minute * MINUTE), event_id, kind, label, 0.9, zone, plate)


def detect(service: Alerting, clock: Clock, *detections: Detection) -> None:
    for one in detections:
        clock.now = max(clock.now, one.ts_ns)
        service.observe_detections([one], clock.now)


def alert_of(service: Alerting, rule: str, subject: str) -> tuple[AlertStatus, Mapping[str, str],
                                                                  Mapping[str, str]] | None:
    view = service.book.get(fingerprint(rule, subject))
    return None if view is None else (view.alert.status, view.alert.labels,
                                      view.alert.annotations)


# --- CameraCongestion --------------------------------------------------------------------


async def test_slow_dense_traffic_for_10_minutes_raises_camera_congestion_naming_its_spot(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        counts(service, clock, 0, 9.5, SEMANGGI, mean_speed_kmh=9, vehicles_per_min=35)
        early = alert_of(service, "CameraCongestion", SEMANGGI)
        counts(service, clock, 10, 12, SEMANGGI, mean_speed_kmh=11, vehicles_per_min=32)
        firing = alert_of(service, "CameraCongestion", SEMANGGI)
        counts(service, clock, 12.5, 18, SEMANGGI, mean_speed_kmh=40, vehicles_per_min=30)
        cleared = alert_of(service, "CameraCongestion", SEMANGGI)
    assert early is None
    assert firing is not None and cleared is not None
    status, labels, notes = firing
    assert status is AlertStatus.FIRING
    assert (labels["device_id"], labels["spot"], labels["severity"]) == (
        SEMANGGI, "Semanggi interchange, Jl. Sudirman and Jl. Gatot Subroto", "warning")
    assert (notes["mean_speed_kmh"], notes["vehicles_per_min"]) == ("11", "32")
    assert notes["watches"] == "sudirman-setiabudi"
    assert cleared[0] is AlertStatus.RESOLVED


async def test_slow_but_sparse_traffic_raises_no_camera_congestion(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        counts(service, clock, 0, 20, SEMANGGI, mean_speed_kmh=9, vehicles_per_min=5)
        assert alert_of(service, "CameraCongestion", SEMANGGI) is None


# --- ViolationHotspot --------------------------------------------------------------------


async def test_ten_distinct_illegal_parking_events_in_a_zone_within_an_hour_raise_a_hotspot(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        for n in range(9):  # each with its update, end and a redelivered new
            minute = 5 * n
            detect(service, clock, event(f"e{n}", minute), event(f"e{n}", minute + 1, "update"),
                   event(f"e{n}", minute), event(f"e{n}", minute + 2, "end"))
        other_zone = event("z1", 46, zone="rasuna-said")
        wrong_way = event("w1", 46, label="wrong-way")
        detect(service, clock, other_zone, wrong_way)
        nine = alert_of(service, "ViolationHotspot", f"{KUNINGAN}/illegal-parking/bus-stop")
        detect(service, clock, event("e9", 50))
        ten = alert_of(service, "ViolationHotspot", f"{KUNINGAN}/illegal-parking/bus-stop")
    assert nine is None  # 36 messages, 9 detections in the zone
    assert ten is not None
    status, labels, notes = ten
    assert status is AlertStatus.FIRING
    assert (labels["zone"], labels["violation"], labels["device_id"]) == (
        "bus-stop", "illegal-parking", KUNINGAN)
    assert notes["count"] == "10"


async def test_an_update_before_its_new_counts_the_detection_once(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        for n in range(10):  # reordered by QoS 1: end, then update, then new
            detect(service, clock, event(f"e{n}", 3 * n + 2, "end"),
                   event(f"e{n}", 3 * n + 1, "update"), event(f"e{n}", 3 * n))
        view = service.book.get(HOTSPOT)
    assert view is not None and view.alert.annotations["count"] == "10"


async def test_detections_spread_over_two_hours_raise_no_hotspot_and_a_hotspot_ends_when_quiet(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        detect(service, clock, *(event(f"s{n}", 12 * n) for n in range(10)))  # 108 minutes
        spread = service.book.get(HOTSPOT)
        detect(service, clock, *(event(f"h{n}", 120 + n) for n in range(10)))
        firing = service.book.get(HOTSPOT)
        counts(service, clock, 181, 185, KUNINGAN, vehicles_per_min=10, mean_speed_kmh=30)
        quiet = service.book.get(HOTSPOT)
    assert spread is None
    assert firing is not None and firing.alert.status is AlertStatus.FIRING
    assert quiet is not None and quiet.alert.status is AlertStatus.RESOLVED
    assert quiet.alert.annotations["summary"].startswith("Zone bus-stop of camera cam-kuningan")


async def test_a_hotspot_names_the_residents_parkir_liar_reports_within_300_m(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    def parkir(report_id: str, minute: float, north_m: float) -> CitizenReport:
        return CitizenReport(report_id, "parkir-liar", KUNINGAN_AT[0] + north_m / M_PER_DEG,
                             KUNINGAN_AT[1], T0 + int(minute * MINUTE), "Dinas Perhubungan",
                             "Mobil parkir di trotoar")

    async with alerting(rules_file, registry, tmp_path, clock) as service:
        clock.now = T0
        service.observe_report(parkir("p1", 0, 100))
        service.observe_report(parkir("far", 0, 1000))
        detect(service, clock, *(event(f"e{n}", 1 + n) for n in range(10)))
        clock.now = T0 + 20 * MINUTE
        linked = service.observe_report(parkir("p2", 20, -200))
        view = service.book.get(HOTSPOT)
    assert view is not None
    assert (view.alert.annotations["parking_reports"],
            view.alert.annotations["parking_report_ids"]) == ("2", "p1,p2")
    assert linked == [HOTSPOT]


# --- WatchlistVehicleSeen ----------------------------------------------------------------


async def test_a_listed_plate_raises_watchlist_vehicle_seen_routed_to_its_agency(
    registry: Registry, tmp_path: Path, clock: Clock, receiver: RecordingReceiver,
) -> None:
    routed = RulesFile.model_validate({
        "receivers": [{"name": "bapenda", "url": receiver.url}],
        "routes": [{"receivers": ["bapenda"],
                    "match": {"alertname": "WatchlistVehicleSeen", "agency": BAPENDA}}],
    })
    listed = {PLATE: {"agency": BAPENDA, "reason": "tunggakan pajak", "severity": "critical",
                      "note\nx": "dropped"}}
    async with alerting(routed, registry, tmp_path, clock, plate_labels=listed.get) as service:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            detect(service, clock, event("p1", 0, label="plate", zone=None, plate=PLATE),
                   event("p1", 0.2, "update", label="plate", zone=None, plate=PLATE),
                   event("p2", 5, label="plate", zone=None, plate=PLATE))  # seen again
            await eventually(lambda: len(receiver.delivered()) == 1, what="bapenda's page")
            counts(service, clock, 30, 36, SEMANGGI, vehicles_per_min=10)  # another camera
            still = alert_of(service, "WatchlistVehicleSeen", f"{KUNINGAN}/plate={PLATE}")
            counts(service, clock, 30, 36, KUNINGAN, vehicles_per_min=10)  # 31 minutes quiet
            await eventually(lambda: len(receiver.delivered()) == 2, what="the resolution")
            stop.set()
    pages = [request.json["alerts"][0] for request in receiver.delivered()]
    assert [page["status"] for page in pages] == ["firing", "resolved"]
    assert pages[0]["labels"] == {
        "alertname": "WatchlistVehicleSeen", "severity": "warning", "device_id": KUNINGAN,
        "kind": "camera", "plate": PLATE, "agency": BAPENDA, "reason": "tunggakan pajak",
        "kota": "Jakarta Selatan", "road": "Jl. Gatot Subroto",
        "spot": "Kuningan intersection, Jl. Gatot Subroto and Jl. HR Rasuna Said"}
    assert still is not None and still[0] is AlertStatus.FIRING
    assert pages[1]["annotations"]["summary"].startswith(f"Listed vehicle {PLATE} not seen")


async def test_detections_without_a_plate_raise_no_watchlist_alert(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    async with alerting(rules_file, registry, tmp_path, clock) as service:
        detect(service, clock, event("c1", 0, label="car", zone=None))
        assert [v for v in service.book.alerts() if v.alert.rule == "WatchlistVehicleSeen"] == []


# --- configuration -----------------------------------------------------------------------


async def test_the_thresholds_come_from_the_cameras_section(
    registry: Registry, tmp_path: Path, clock: Clock,
) -> None:
    three = RulesFile.model_validate({"cameras": {"hotspot": {"count": 3, "window": "10m"}}})
    async with alerting(three, registry, tmp_path, clock) as service:
        detect(service, clock, *(event(f"e{n}", n) for n in range(3)))
        view = service.book.get(HOTSPOT)
    assert view is not None and view.alert.annotations["count"] == "3"


@pytest.mark.parametrize(("section", "line", "message"), [
    ("  flood:\n    water_score: 0.5\n    clear_below: 0.7\n", 4,
     "cameras.flood: clear_below must not exceed water_score"),
    ("  hotspot:\n    labels: [flood]\n", 4,
     "cameras.hotspot.labels[0]: must be one of illegal-parking, wrong-way (got 'flood')"),
    ("  congestion:\n    fro: 10m\n", 4,
     "cameras.congestion.fro: unknown key (did you mean for?"),
])
def test_a_bad_cameras_section_is_refused_with_its_line(
    registry: Registry, tmp_path: Path, section: str, line: int, message: str,
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules: []\ncameras:\n{section}")
    with pytest.raises(ConfigFileError) as caught:
        load_rules(path, registry)
    assert str(caught.value).startswith(f"{path}:{line}: {message}")


async def test_without_cameras_in_the_catalog_the_camera_rules_are_idle(
    tmp_path: Path, clock: Clock,
) -> None:
    gauges = Registry(device for device in _bundled() if device.kind is not Kind.CAMERA)
    rules = load_rules(DEFAULT_RULES, gauges)
    async with alerting(rules, gauges, tmp_path, clock) as service:
        service.observe_detections([event("e1", 0)], T0)
        service.observe([Reading(Kind.WATER_LEVEL, "manggarai", T0, {"level_cm": 800}, None)],
                        [], T0)
        [flood] = [view.alert for view in service.book.alerts()]
    assert (rules.skipped, service.cameras.active) == ((), False)
    assert flood.rule == "FloodLevel" and "cameras_seeing_water" not in flood.annotations


def _bundled() -> Registry:
    return load_catalog(bundled_catalog_path())
