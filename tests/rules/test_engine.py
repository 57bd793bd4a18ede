"""The rule engine with the bundled rules and catalog: the issue's scenarios, on event time."""

from dataclasses import replace

import pytest

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry
from rules.alert import Alert, AlertStatus, Severity, Transition, fingerprint
from rules.config import RulesFile
from rules.engine import RuleEngine

MINUTE = 60 * 1_000_000_000
T0 = 1_600_682_400 * 1_000_000_000  # 2020-09-21T10:00:00Z


@pytest.fixture
def engine(rules_file: RulesFile, registry: Registry) -> RuleEngine:
    return RuleEngine(rules_file, registry)


def gauge(device_id: str, minute: float, level_cm: float) -> Reading:
    return Reading(Kind.WATER_LEVEL, device_id, T0 + int(minute * MINUTE), {"level_cm": level_cm},
                   None)


def traffic(minute: float, speed_kmh: float) -> Reading:
    return Reading(Kind.TRAFFIC, "sudirman-setiabudi", T0 + int(minute * MINUTE),
                   {"speed_kmh": speed_kmh}, None)


def feed(engine: RuleEngine, readings: list[Reading], rule: str | None = None) -> list[Transition]:
    transitions = [t for reading in readings for t in engine.evaluate(reading)]
    return [t for t in transitions if rule is None or t.alert.rule == rule]


def summary(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.change, t.alert.labels.get("level", ""), t.alert.severity.value)
            for t in transitions]


def test_manggarai_rising_to_980_and_back_changes_level_up_and_down_then_resolves(
    engine: RuleEngine,
) -> None:
    levels = [*range(700, 981, 20), *range(960, 699, -20)]
    readings = [gauge("manggarai", 5 * i, level) for i, level in enumerate(levels)]
    assert summary(feed(engine, readings)) == [
        ("firing", "siaga-3", "warning"),
        ("changed", "siaga-2", "major"),
        ("changed", "siaga-1", "critical"),
        ("changed", "siaga-2", "major"),
        ("changed", "siaga-3", "warning"),
        ("resolved", "siaga-3", "warning"),
    ]


def test_one_alert_follows_the_level_with_a_stable_fingerprint(engine: RuleEngine) -> None:
    readings = [gauge("manggarai", 5 * i, level) for i, level in enumerate([760, 860, 700])]
    transitions = feed(engine, readings)
    assert {t.alert.fingerprint for t in transitions} == {fingerprint("FloodLevel", "manggarai")}
    assert transitions[0].alert.labels["device_id"] == "manggarai"
    assert transitions[0].alert.labels["river"] == "Ciliwung"


def test_a_level_hovering_around_851_cm_does_not_flap(engine: RuleEngine) -> None:
    levels = [840, 848, 853, 849, 852, 846, 855, 847, 851, 843, 850, 849, 854, 845]
    readings = [gauge("manggarai", 5 * i, level) for i, level in enumerate(levels)]
    assert summary(feed(engine, readings)) == [
        ("firing", "siaga-3", "warning"),
        ("changed", "siaga-2", "major"),
    ]


def test_a_brief_dip_in_speed_raises_nothing(engine: RuleEngine) -> None:
    speeds = [40.0] * 20 + [5.0] * 5 + [40.0] * 20  # one minute apart: a 5-minute dip
    readings = [traffic(minute, speed) for minute, speed in enumerate(speeds)]
    assert feed(engine, readings) == []


def test_a_dip_shorter_than_its_duration_is_never_notified(engine: RuleEngine) -> None:
    speeds = [40.0] * 20 + [5.0] * 12 + [40.0] * 20  # the mean stays low for a few minutes
    readings = [traffic(minute, speed) for minute, speed in enumerate(speeds)]
    assert [t.change for t in feed(engine, readings)] == ["pending", "abandoned"]


def test_congestion_fires_once_the_low_mean_held_for_its_duration(engine: RuleEngine) -> None:
    speeds = [40.0] * 20 + [5.0] * 30
    transitions = feed(engine, [traffic(minute, speed) for minute, speed in enumerate(speeds)])
    assert [t.change for t in transitions] == ["pending", "firing"]
    pending, firing = transitions
    # 8 of the last 10 one-minute readings at 5 km/h bring the mean under 15 km/h.
    assert pending.alert.starts_at_ns == T0 + 27 * MINUTE
    assert firing.alert.evaluated_at_ns == T0 + 37 * MINUTE


def test_congestion_clears_only_when_the_mean_is_back_above_25(engine: RuleEngine) -> None:
    speeds = [40.0] * 20 + [5.0] * 30 + [20.0] * 20 + [30.0] * 20
    transitions = feed(engine, [traffic(minute, speed) for minute, speed in enumerate(speeds)])
    assert [t.change for t in transitions] == ["pending", "firing", "resolved"]
    # (4 x 20 + 6 x 30) / 10 = 26 km/h: the first mean above 25.
    assert transitions[-1].alert.ends_at_ns == T0 + 75 * MINUTE


def test_bad_air_fires_with_its_ispu_category_index_and_pollutant(engine: RuleEngine) -> None:
    readings = [Reading(Kind.AIR_QUALITY, "dki1-bundaran-hi", T0 + minute * MINUTE,
                        {"pm25": 200.0, "pm10": 150.0}, None) for minute in range(0, 70, 10)]
    transitions = feed(engine, readings)
    assert [t.change for t in transitions] == ["firing"]
    alert = transitions[0].alert
    assert alert.evaluated_at_ns == T0 + 60 * MINUTE  # once the readings span the hour
    assert (alert.labels["level"], alert.severity) == ("sangat-tidak-sehat", Severity.MAJOR)
    assert (alert.annotations["index"], alert.annotations["dominant"]) == ("250", "pm25")


def test_katulampa_at_siaga_2_warns_depok_and_manggarai_of_the_arrival(engine: RuleEngine) -> None:
    # 21 Sep 2020: 17:49 WIB 40 cm, 17:53 120 cm, 17:58 170 cm (Siaga 2).
    readings = [gauge("katulampa", m, level) for m, level in [(49, 40), (53, 120), (58, 170)]]
    transitions = feed(engine, readings, rule="FloodWaveExpected")
    assert [(t.change, t.alert.subject) for t in transitions] == [
        ("firing", "depok"), ("firing", "manggarai"),
    ]
    depok, manggarai = (t.alert for t in transitions)
    assert depok.annotations["expected_arrival"] == "2020-09-21T20:58:00+07:00"
    assert manggarai.annotations["expected_arrival"] == "2020-09-22T02:58:00+07:00"
    assert (depok.annotations["travel_time"], manggarai.annotations["travel_time"]) == ("3h", "9h")
    assert depok.labels["device_id"] == "depok" and depok.labels["upstream"] == "katulampa"


def test_the_flood_wave_resolves_when_katulampa_falls_back_below_siaga_2(
    engine: RuleEngine,
) -> None:
    readings = [gauge("katulampa", m, level) for m, level in [(0, 170), (60, 145), (120, 130)]]
    changes = [(t.change, t.alert.subject) for t in feed(engine, readings, "FloodWaveExpected")]
    assert changes == [("firing", "depok"), ("firing", "manggarai"),
                       ("resolved", "depok"), ("resolved", "manggarai")]


def test_a_rapid_rise_at_katulampa_warns_before_any_siaga_level(engine: RuleEngine) -> None:
    readings = [gauge("katulampa", m, level) for m, level in [(0, 10), (10, 30), (20, 65)]]
    transitions = feed(engine, readings)
    assert [(t.change, t.alert.rule) for t in transitions] == [("firing", "KatulampaRapidRise")]


def test_readings_arriving_out_of_order_do_not_flap(engine: RuleEngine) -> None:
    readings = [gauge("manggarai", 0, 860), gauge("manggarai", 10, 870),
                gauge("manggarai", 5, 700), gauge("manggarai", 15, 865)]
    assert summary(feed(engine, readings)) == [("firing", "siaga-2", "major")]
    assert engine.late_readings == 1


def test_a_backlog_yields_its_changes_at_their_own_event_times(engine: RuleEngine) -> None:
    # Last night's store-and-forward batch: the alert book pages or records by these times.
    levels = [740, 760, 780, 760, 735]
    transitions = feed(engine, [gauge("manggarai", 60 * h, lv) for h, lv in enumerate(levels)])
    assert [(t.change, t.alert.starts_at_ns, t.alert.ends_at_ns) for t in transitions] == [
        ("firing", T0 + 60 * MINUTE, None),
        ("resolved", T0 + 60 * MINUTE, T0 + 240 * MINUTE),
    ]


def test_a_redelivered_reading_is_not_evaluated_twice(engine: RuleEngine) -> None:
    feed(engine, [gauge("manggarai", 0, 860), gauge("manggarai", 0, 860)])
    assert engine.late_readings == 1


def test_a_firing_alert_restored_after_a_restart_is_not_new_again(
    engine: RuleEngine, rules_file: RulesFile, registry: Registry
) -> None:
    before = feed(engine, [gauge("manggarai", 0, 860)])
    restarted = RuleEngine(rules_file, registry)
    restarted.restore([before[0].alert])
    # 845 cm is under siaga2_cm but within the clear margin: still Siaga 2 after the restart.
    assert feed(restarted, [gauge("manggarai", 5, 845), gauge("manggarai", 10, 862)]) == []


def test_restore_resumes_a_pending_timer(registry: Registry) -> None:
    rules = RulesFile.model_validate({"rules": [{
        "name": "HighWater", "type": "threshold", "devices": ["manggarai"], "field": "level_cm",
        "above": 900, "for": "30m",
    }]})
    first = RuleEngine(rules, registry)
    pending = feed(first, [gauge("manggarai", 0, 920)])
    assert [t.change for t in pending] == ["pending"]
    restarted = RuleEngine(rules, registry)
    restarted.restore([pending[0].alert])
    transitions = feed(restarted, [gauge("manggarai", 20, 930), gauge("manggarai", 30, 940)])
    assert [t.change for t in transitions] == ["firing"]
    assert transitions[0].alert.starts_at_ns == T0


def test_restore_resolves_alerts_of_rules_no_longer_in_the_file(engine: RuleEngine) -> None:
    gone = Alert(fingerprint("OldRule", "manggarai"), "OldRule", "manggarai", AlertStatus.FIRING,
                 Severity.WARNING, {"alertname": "OldRule"}, {}, T0, None, T0, T0 + MINUTE)
    kept = replace(gone, rule="FloodLevel", fingerprint=fingerprint("FloodLevel", "manggarai"))
    transitions = engine.restore([gone, kept])
    assert [(t.change, t.alert.rule) for t in transitions] == [("resolved", "OldRule")]
    assert transitions[0].alert.ends_at_ns == T0 + MINUTE
    assert list(engine.alerts) == [kept.fingerprint]


def test_readings_of_unknown_devices_are_ignored(engine: RuleEngine) -> None:
    assert engine.evaluate(gauge("nowhere", 0, 999)) == []
