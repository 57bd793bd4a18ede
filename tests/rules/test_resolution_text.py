"""A resolution says what happened, the last value and when: never the firing text again.

Each rule type through the real engine (bundled catalog, rules written as an operator
would), the offline checker and the storage alert through their own paths, and once end
to end: the service, a real broker and database, and a real webhook receiver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry, bundled_catalog_path, load_catalog
from ingest.settings import InfluxSettings
from rules.alert import Alert, AlertStatus, Severity, Transition, fingerprint
from rules.alerting import Alerting
from rules.config import RulesFile, load_rules
from rules.engine import RuleEngine
from rules.offline import DEVICE_OFFLINE, DeviceTracker, OfflineChecker, OfflineConfig
from siaga.cli.demo import _alert_text
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.integration.support import Publisher, make_settings, running_service, unique_name
from tests.polling import eventually
from tests.receiver import RecordingReceiver

WIB = timezone(timedelta(hours=7))
MINUTE_NS = 60 * 10**9
T0 = int(datetime(2020, 1, 1, 13, 0, tzinfo=WIB).timestamp()) * 10**9  # 13:00 WIB


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_catalog(bundled_catalog_path())


def engine_for(tmp_path: Path, registry: Registry, rules: str) -> RuleEngine:
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return RuleEngine(load_rules(path, registry), registry)


def reading(kind: Kind, device_id: str, minute: float, **values: float) -> Reading:
    return Reading(kind, device_id, T0 + int(minute * MINUTE_NS), dict(values), None)


def resolved(engine: RuleEngine, readings: Iterator[Reading] | list[Reading]) -> Alert:
    """The one resolution the readings cause, after exactly one firing."""
    transitions = [t for r in readings for t in engine.evaluate(r)]
    assert [t.change for t in transitions] == ["firing", "resolved"], transitions
    firing, ended = transitions
    assert ended.alert.annotations["summary"] != firing.alert.annotations["summary"]
    return ended.alert


LADDER = """\
rules:
  - name: FloodLevel
    type: ladder
    kind: water-level
    clear_margin: 10
    steps:
      - {threshold: siaga3_cm, level: siaga-3, severity: warning}
      - {threshold: siaga2_cm, level: siaga-2, severity: major}
"""


def test_a_flood_level_resolution_says_back_below_siaga_3_the_level_and_when(
    tmp_path: Path, registry: Registry
) -> None:
    engine = engine_for(tmp_path, registry, LADDER)
    alert = resolved(engine, [reading(Kind.WATER_LEVEL, "manggarai", 55, level_cm=800),
                              reading(Kind.WATER_LEVEL, "manggarai", 65, level_cm=610)])
    assert alert.annotations["summary"] == (
        "Pintu Air Manggarai is back below siaga-3: level_cm 610 at 2020-01-01 14:05 WIB")
    assert alert.annotations["description"].startswith(
        "Pintu Air Manggarai reads level_cm 610 at 2020-01-01 14:05 WIB, below the siaga-3 "
        "threshold of 751")
    assert alert.annotations["value"] == "610"
    assert alert.annotations["resolved_at"] == "2020-01-01T14:05:00+07:00"
    assert alert.ends_at_ns == T0 + 65 * MINUTE_NS


def test_the_clock_of_resolution_texts_is_configurable(tmp_path: Path, registry: Registry) -> None:
    engine = engine_for(tmp_path, registry, LADDER + "alerting: {utc_offset: '+08:00'}\n")
    alert = resolved(engine, [reading(Kind.WATER_LEVEL, "manggarai", 55, level_cm=800),
                              reading(Kind.WATER_LEVEL, "manggarai", 65, level_cm=610)])
    assert alert.annotations["summary"].endswith("at 2020-01-01 15:05 WITA")


def test_a_threshold_resolution_says_which_way_the_value_went_back(
    tmp_path: Path, registry: Registry
) -> None:
    engine = engine_for(tmp_path, registry, """\
rules:
  - {name: LowBattery, type: threshold, devices: [manggarai], field: battery_v,
     below: 11.5, clear_above: 12}
""")
    alert = resolved(engine, [reading(Kind.WATER_LEVEL, "manggarai", 0, battery_v=11.0),
                              reading(Kind.WATER_LEVEL, "manggarai", 10, battery_v=11.8),
                              reading(Kind.WATER_LEVEL, "manggarai", 20, battery_v=12.4)])
    assert alert.annotations["summary"] == (
        "Pintu Air Manggarai: battery_v back above 12: 12.4 at 2020-01-01 13:20 WIB")


def test_a_congestion_resolution_gives_the_mean_speed_and_when(
    tmp_path: Path, registry: Registry
) -> None:
    engine = engine_for(tmp_path, registry, """\
rules:
  - {name: Congestion, type: window, kind: traffic, field: speed_kmh, aggregate: mean,
     window: 10m, below: 15, clear_above: 25}
""")
    speeds = [10.0] * 12 + [40.0] * 12
    alert = resolved(engine, [reading(Kind.TRAFFIC, "sudirman-setiabudi", minute, speed_kmh=s)
                              for minute, s in enumerate(speeds)])
    summary = alert.annotations["summary"]
    assert summary.startswith(
        "Jl. Jenderal Sudirman at Setiabudi: mean speed_kmh over 10m back above 25: ")
    mean = float(summary.split("back above 25: ")[1].split(" at ")[0])
    assert mean > 25
    assert summary.endswith(f"at {_wib(alert.ends_at_ns)}")


def test_a_rapid_rise_resolution_says_the_rise_is_over(tmp_path: Path, registry: Registry) -> None:
    engine = engine_for(tmp_path, registry, """\
rules:
  - {name: RapidRise, type: rate_of_change, devices: [katulampa], field: level_cm, rise: 50,
     within: 30m}
""")
    alert = resolved(engine, [reading(Kind.WATER_LEVEL, "katulampa", 0, level_cm=40),
                              reading(Kind.WATER_LEVEL, "katulampa", 10, level_cm=120),
                              reading(Kind.WATER_LEVEL, "katulampa", 45, level_cm=125)])
    assert alert.annotations["summary"] == (
        "Bendung Katulampa: level_cm no longer rising fast: 125 at 2020-01-01 13:45 WIB")
    assert ": 0 within 30m, under the limit of 50" in alert.annotations["description"]


def test_an_air_quality_resolution_names_the_category_it_is_back_to(
    tmp_path: Path, registry: Registry
) -> None:
    engine = engine_for(tmp_path, registry, """\
rules:
  - {name: AirQuality, type: ispu, kind: air-quality, window: 10m}
""")
    pm25 = [150.0] * 12 + [10.0] * 12
    alert = resolved(engine, [reading(Kind.AIR_QUALITY, "dki1-bundaran-hi", minute, pm25=value)
                              for minute, value in enumerate(pm25)])
    summary = alert.annotations["summary"]
    assert summary.startswith("Air at DKI1 Bundaran HI is back to ")
    assert alert.annotations["category"] in summary
    assert alert.annotations["category"] in ("Baik", "Sedang")
    assert f"ISPU {alert.annotations['index']} at {_wib(alert.ends_at_ns)}" in summary


def test_a_flood_wave_resolution_calls_the_wave_off_downstream(
    tmp_path: Path, registry: Registry
) -> None:
    engine = engine_for(tmp_path, registry, """\
rules:
  - name: FloodWaveExpected
    type: flood_wave
    upstream: katulampa
    at_level: siaga-2
    downstream: [{device: depok, travel: 3h}]
""")
    limit = registry.get("katulampa").thresholds["siaga2_cm"]  # type: ignore[union-attr]
    alert = resolved(engine, [reading(Kind.WATER_LEVEL, "katulampa", 0, level_cm=limit + 20),
                              reading(Kind.WATER_LEVEL, "katulampa", 60, level_cm=limit - 30)])
    assert alert.subject == "depok"
    assert alert.annotations["summary"] == (
        f"Flood wave at Pos Depok called off: Bendung Katulampa is back below siaga-2: "
        f"level_cm {limit - 30:g} at 2020-01-01 14:00 WIB")


def test_a_device_back_online_says_when_it_was_heard_from(registry: Registry) -> None:
    manggarai = registry.get("manggarai")
    assert manggarai is not None
    one = Registry([manggarai])
    tracker = DeviceTracker(started_ns=T0)
    tracker.broker_connection_changed(True, T0)
    checker = OfflineChecker(OfflineConfig(), one, tracker)
    engine = RuleEngine(RulesFile(), one)
    later = T0 + 3 * 60 * MINUTE_NS  # hourly gauge, grace 2x: offline after 2 h of silence
    [fired] = [t for s in checker.check(later) if (t := engine.signal(s, checker.resolution))]
    assert (fired.change, fired.alert.rule) == ("firing", DEVICE_OFFLINE)
    tracker.seen("manggarai", later + 5 * MINUTE_NS)
    back = later + 6 * MINUTE_NS
    [ended] = [t for s in checker.check(back) if (t := engine.signal(s, checker.resolution))]
    assert ended.change == "resolved"
    assert ended.alert.annotations["summary"] == (
        "Pintu Air Manggarai is back online: heard from at 2020-01-01 16:05 WIB")
    assert ended.alert.annotations["resolved_at"] == "2020-01-01T16:06:00+07:00"


def test_a_rule_gone_from_the_rules_file_resolves_saying_so(registry: Registry) -> None:
    now = T0
    orphan = Alert(fingerprint("OldRule", "manggarai"), "OldRule", "manggarai",
                   AlertStatus.FIRING, Severity.WARNING, {"alertname": "OldRule"},
                   {"summary": "the firing text"}, now, None, now, now)
    [ended] = RuleEngine(RulesFile(), registry).restore([orphan])
    assert ended.change == "resolved"
    assert ended.alert.annotations["summary"] == (
        "OldRule ended: the rule is no longer in the rules file")


async def test_storage_back_says_readings_are_durable_again(
    tmp_path: Path, registry: Registry
) -> None:
    clock = [T0]
    rules = RulesFile()
    async with Alerting(rules, registry, tmp_path, webhook_url=None,
                        external_url="http://127.0.0.1:1", clock_ns=lambda: clock[0]) as alerting:
        alerting.durability_changed("spool full")
        clock[0] += 7 * MINUTE_NS
        alerting.durability_changed(None)
        view = alerting.book.get(fingerprint("StorageUnavailable", "storage"))
        assert view is not None and view.alert.status is AlertStatus.RESOLVED
        assert view.alert.annotations["summary"] == (
            "Siaga makes readings durable again (at 2020-01-01 13:07 WIB)")
        assert "had stopped at 2020-01-01 13:00 WIB" in view.alert.annotations["description"]


def _wib(ns: int | None) -> str:
    assert ns is not None
    return datetime.fromtimestamp(ns / 1e9, WIB).strftime("%Y-%m-%d %H:%M WIB")


# --- end to end ------------------------------------------------------------------------


@pytest.mark.integration  # real Mosquitto and InfluxDB: `-m "not integration"` skips it
async def test_the_webhooks_resolved_alert_carries_the_resolution_text(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, server: RecordingReceiver
) -> None:
    rules = tmp_path / "rules.yaml"
    # page_max_age widened: the readings are stamped an hour ago, and should be paged.
    rules.write_text(LADDER + f"""\
alerting: {{page_max_age: 1d}}
receivers: [{{name: bpbd, url: "{server.url}"}}]
routes: [{{receivers: [bpbd]}}]
""", encoding="utf-8")
    settings = make_settings(mosquitto.url, InfluxSettings(
        url=influxdb1.url, database=unique_name("resolution_")), tmp_path / "data", rules=rules)
    start_s = int(time.time()) - 3600
    async with running_service(settings):
        publisher = Publisher(mosquitto)
        topic = f"{settings.mqtt.topic_prefix}/water-level/manggarai/telemetry"
        for index, level in enumerate([800, 610]):
            publisher.publish(topic, {"ts": start_s + index * 600, "level_cm": level})
        await eventually(lambda: len(server.delivered()) >= 2, what="firing and resolved")
        publisher.close()
    firing, ended = (request.json for request in server.delivered())
    assert (firing["status"], ended["status"]) == ("firing", "resolved")
    at = _wib((start_s + 600) * 10**9)
    text = f"Pintu Air Manggarai is back below siaga-3: level_cm 610 at {at}"
    [alert] = ended["alerts"]
    assert alert["annotations"]["summary"] == text
    assert ended["commonAnnotations"]["summary"] == text
    assert alert["annotations"]["value"] == "610"
    assert firing["alerts"][0]["annotations"]["summary"] == (
        "Pintu Air Manggarai is at siaga-3: level_cm 800")
    # The demo prints the same body as its operator's line.
    assert _alert_text(alert) == (
        f"  ALERT RESOLVED FloodLevel manggarai (was siaga-3 warning): {text}")


def test_every_resolved_transition_of_the_bundled_rules_has_its_own_text(
    registry: Registry,
) -> None:
    # The bundled file's FloodLevel, Congestion and rate-of-change over the same engine.
    engine = RuleEngine(load_rules(Path(__file__).parents[2] / "rules" / "default.yaml",
                                   registry), registry)
    levels = [700, 800, 900, 800, 600]
    transitions: list[Transition] = [
        t for minute, level in enumerate(levels)
        for t in engine.evaluate(reading(Kind.WATER_LEVEL, "manggarai", minute * 60,
                                         level_cm=level))]
    ends = [t for t in transitions if t.change == "resolved"]
    assert len(ends) == 1
    assert "is at" not in ends[0].alert.annotations["summary"]
    assert ends[0].alert.annotations["summary"].startswith("Pintu Air Manggarai is back below")
