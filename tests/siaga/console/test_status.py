"""Tests of a device's status word on the console: pure functions, no clock, no I/O."""

from __future__ import annotations

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Device, bundled_catalog_path, load_catalog
from rules.alert import Alert, AlertStatus, Severity, fingerprint
from rules.config import load_rules
from siaga.console.status import STATUSES, StatusRules, device_status, main_value, rank
from tests.rules.books import DEFAULT_RULES

T0 = 1_700_000_000_000_000_000
RULES = StatusRules(ladder=frozenset({"FloodLevel"}), ispu=frozenset({"AirQuality"}),
                    window=frozenset({"Congestion"}))
GAUGE = Device(id="pa-manggarai", kind=Kind.WATER_LEVEL, name="PA Manggarai", lat=-6.2,
               lon=106.85, thresholds={"siaga3_cm": 751, "siaga2_cm": 851, "siaga1_cm": 951})
AIR = Device(id="aq-gbk", kind=Kind.AIR_QUALITY, name="GBK", lat=-6.21, lon=106.8)
ROAD = Device(id="tr-sudirman", kind=Kind.TRAFFIC, name="Sudirman", lat=-6.2, lon=106.82)


def reading(device: Device, **values: float) -> Reading:
    return Reading(device.kind, device.id, T0, values, None)


def alert(rule: str, device: Device, status: AlertStatus = AlertStatus.FIRING,
          **labels: str) -> Alert:
    return Alert(fingerprint(rule, device.id), rule, device.id, status, Severity.WARNING,
                 {"alertname": rule, "device_id": device.id, **labels}, {}, T0, None, T0, T0)


def status(device: Device, value: Reading | None, *alerts: Alert, offline: bool = False) -> str:
    return device_status(device, value, alerts, offline, RULES)


def test_an_offline_device_is_offline_whatever_its_last_reading_said() -> None:
    above = reading(GAUGE, level_cm=990)
    assert status(GAUGE, above, alert("FloodLevel", GAUGE, level="siaga-1"),
                  offline=True) == "offline"


def test_a_device_without_a_reading_has_no_data() -> None:
    assert status(GAUGE, None) == "no-data"


def test_a_gauge_reaches_each_siaga_level_at_its_threshold() -> None:
    levels = [status(GAUGE, reading(GAUGE, level_cm=cm)) for cm in (750, 751, 850.9, 851, 951)]
    assert levels == ["ok", "siaga-3", "siaga-3", "siaga-2", "siaga-1"]


def test_a_firing_ladder_alert_keeps_its_level_while_the_water_is_within_the_margin() -> None:
    # 845 cm is under Siaga 2 (851), but the rule's clear margin keeps the alert at siaga-2:
    # the map shows what the alerts panel shows.
    held = alert("FloodLevel", GAUGE, level="siaga-2")
    assert status(GAUGE, reading(GAUGE, level_cm=845), held) == "siaga-2"


def test_a_pending_ladder_alert_does_not_colour_the_gauge() -> None:
    pending = alert("FloodLevel", GAUGE, AlertStatus.PENDING, level="siaga-1")
    assert status(GAUGE, reading(GAUGE, level_cm=700), pending) == "ok"


def test_a_gauge_without_thresholds_is_ok() -> None:
    bare = Device(id="pa-laut", kind=Kind.WATER_LEVEL, name="Laut", lat=-6.1, lon=106.8)
    assert status(bare, reading(bare, level_cm=1000)) == "ok"


def test_an_air_monitor_shows_the_ispu_category_of_its_latest_values() -> None:
    categories = [status(AIR, reading(AIR, pm25=pm25)) for pm25 in (10, 40, 100, 200, 400)]
    assert categories == ["baik", "sedang", "tidak-sehat", "sangat-tidak-sehat", "berbahaya"]


def test_a_firing_ispu_alert_level_wins_over_the_latest_values() -> None:
    held = alert("AirQuality", AIR, level="sangat-tidak-sehat")
    assert status(AIR, reading(AIR, pm25=10), held) == "sangat-tidak-sehat"


def test_a_traffic_detector_is_congested_while_its_window_alert_fires() -> None:
    slow = reading(ROAD, speed_kmh=9)
    assert [status(ROAD, slow), status(ROAD, slow, alert("Congestion", ROAD))] == [
        "ok", "congested"]


def test_an_alert_of_another_rule_type_does_not_colour_the_device() -> None:
    other = alert("KatulampaRapidRise", GAUGE, level="siaga-1")
    assert status(GAUGE, reading(GAUGE, level_cm=100), other) == "ok"


def test_rank_puts_the_most_urgent_first_and_knows_every_status() -> None:
    ordered = sorted(["ok", "siaga-3", "no-data", "siaga-1", "offline", "berbahaya"],
                     key=rank, reverse=True)
    assert ordered == ["siaga-1", "berbahaya", "siaga-3", "offline", "ok", "no-data"]
    assert len({rank(word) for word in STATUSES}) == len(STATUSES)


def test_an_air_monitor_without_pm25_shows_its_first_pollutant() -> None:
    assert main_value(AIR, reading(AIR, pm10=80, o3=20)) == ("pm10", 80)
    assert main_value(GAUGE, reading(GAUGE, level_cm=700)) == ("level_cm", 700)
    assert main_value(GAUGE, None) is None


def test_the_bundled_rules_colour_by_their_ladder_ispu_and_window_rules() -> None:
    rules = StatusRules.of(load_rules(DEFAULT_RULES, load_catalog(bundled_catalog_path())))
    assert (rules.ladder, rules.ispu, rules.window) == (
        frozenset({"FloodLevel"}), frozenset({"AirQuality"}), frozenset({"Congestion"}))


CAMERA = Device(id="cctv-manggarai", kind=Kind.CAMERA, name="CCTV Manggarai", lat=-6.2,
                lon=106.85, watches="pa-manggarai")


def test_a_camera_sees_water_from_its_score_or_its_flood_alert_and_a_jam_from_its_alert() -> None:
    calm = reading(CAMERA, water_score=0.1, vehicles_per_min=12)
    assert status(CAMERA, calm) == "ok"
    assert status(CAMERA, reading(CAMERA, water_score=0.79)) == "ok"
    assert status(CAMERA, reading(CAMERA, water_score=0.8)) == "water"
    # The flood alert holds the colour while the score dips under 0.8 (its hysteresis).
    assert status(CAMERA, reading(CAMERA, water_score=0.7),
                  alert("FloodDetected", CAMERA)) == "water"
    assert status(CAMERA, calm, alert("CameraCongestion", CAMERA)) == "congested"
    assert status(CAMERA, calm, alert("CameraCongestion", CAMERA, AlertStatus.PENDING)) == "ok"
    assert main_value(CAMERA, reading(CAMERA, water_score=0.93, people=4)) == (
        "water_score", 0.93)
    assert rank("water") > rank("siaga-3")
