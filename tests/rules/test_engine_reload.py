"""A device's state taken from the alert book when its partition moves (issue 18).

Two engines stand for two instances: what one judged reaches the other only through the
alerts it hands over (as the shared book would), and `judged`, the event time of the last
reading that changed one.
"""

from __future__ import annotations

import pytest

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry
from rules.alert import Alert, AlertStatus, Transition
from rules.config import RulesFile
from rules.engine import RuleEngine

MINUTE = 60 * 1_000_000_000
T0 = 1_600_682_400 * 1_000_000_000


def gauge(device_id: str, minute: int, level_cm: float) -> Reading:
    return Reading(Kind.WATER_LEVEL, device_id, T0 + minute * MINUTE, {"level_cm": level_cm},
                   minute)


def changes(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.change, t.alert.labels.get("level", "")) for t in transitions
            if t.alert.rule == "FloodLevel"]


def judge(engine: RuleEngine, readings: list[Reading]) -> list[Transition]:
    return [t for reading in readings for t in engine.evaluate(reading)]


@pytest.fixture
def engines(rules_file: RulesFile, registry: Registry) -> tuple[RuleEngine, RuleEngine]:
    return RuleEngine(rules_file, registry), RuleEngine(rules_file, registry)


def open_alerts(engine: RuleEngine, subject: str) -> list[Alert]:
    return [alert for alert in engine.alerts.values() if alert.subject == subject]


def test_the_new_owner_carries_on_the_alert_the_old_one_raised(
        engines: tuple[RuleEngine, RuleEngine]) -> None:
    old, new = engines
    # Manggarai: Siaga 3/2/1 at 751/851/950 cm.
    assert changes(judge(old, [gauge("manggarai", 0, 760), gauge("manggarai", 1, 860)])) == [
        ("firing", "siaga-3"), ("changed", "siaga-2")]
    new.reload({"manggarai"}, open_alerts(old, "manggarai"), {"manggarai": T0 + MINUTE})
    assert changes(judge(new, [gauge("manggarai", 2, 960), gauge("manggarai", 3, 500)])) == [
        ("changed", "siaga-1"), ("resolved", "siaga-1")]


def test_readings_the_old_owner_judged_come_again_and_change_nothing(
        engines: tuple[RuleEngine, RuleEngine]) -> None:
    old, new = engines
    readings = [gauge("manggarai", m, level) for m, level in enumerate([760, 860, 960, 960])]
    judge(old, readings)
    # The old owner died before acknowledging any: the broker hands all four to the new
    # one, which knows from the book that minute 2 was the last change.
    new.reload({"manggarai"}, open_alerts(old, "manggarai"), {"manggarai": T0 + 2 * MINUTE})
    assert changes(judge(new, readings)) == []
    assert new.late_readings == 3
    assert changes(judge(new, [gauge("manggarai", 4, 860)])) == [("changed", "siaga-2")]


def test_without_the_book_the_replay_would_page_again(
        engines: tuple[RuleEngine, RuleEngine]) -> None:
    # What reload prevents: the same replay judged by an engine that knows nothing.
    old, new = engines
    readings = [gauge("manggarai", m, level) for m, level in enumerate([760, 860, 500])]
    judge(old, readings)
    new.reload({"manggarai"}, [], {})
    assert changes(judge(new, readings)) == [
        ("firing", "siaga-3"), ("changed", "siaga-2"), ("resolved", "siaga-2")]


def test_reload_drops_what_this_engine_held_on_the_devices_only(
        engines: tuple[RuleEngine, RuleEngine]) -> None:
    engine, _ = engines
    judge(engine, [gauge("manggarai", 0, 960), gauge("depok", 0, 400)])
    assert {a.subject for a in engine.alerts.values()} >= {"manggarai", "depok"}
    engine.reload({"manggarai"}, [], {})  # the book says manggarai's alert ended meanwhile
    assert open_alerts(engine, "manggarai") == []
    assert open_alerts(engine, "depok") != []
    # ... and the next reading at Siaga 1 is a new episode.
    assert changes(judge(engine, [gauge("manggarai", 1, 960)])) == [("firing", "siaga-1")]


def test_subjects_of_a_device_include_the_gauges_its_flood_wave_warns(
        engines: tuple[RuleEngine, RuleEngine]) -> None:
    engine, _ = engines
    subjects = engine.subjects_of(["katulampa"])
    assert "katulampa" in subjects
    assert len(subjects) > 1  # Katulampa warns the gauges downstream on the Ciliwung


def test_reload_rules_takes_only_those_rules_alerts(
        engines: tuple[RuleEngine, RuleEngine]) -> None:
    old, new = engines
    judge(old, [gauge("manggarai", 0, 960)])
    flood = open_alerts(old, "manggarai")
    assert flood and all(alert.status is AlertStatus.FIRING for alert in flood)
    new.reload_rules({"DeviceOffline"}, flood)
    assert new.alerts == {}  # FloodLevel is not among the rules reloaded
    new.reload_rules({"FloodLevel"}, flood)
    assert set(new.alerts) == {alert.fingerprint for alert in flood}


def test_judging_rules_are_the_ones_raising_alerts_on_the_device_itself(
        engines: tuple[RuleEngine, RuleEngine]) -> None:
    engine, _ = engines
    rules = engine.judging_rules(["katulampa"])
    assert "FloodLevel" in rules
    assert "FloodWaveExpected" not in rules  # its alerts are on the gauges downstream
