"""Conditions one by one: bands, hysteresis, windows, rates, ISPU, flood waves, templates."""

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Device, Registry
from rules.alert import Alert, AlertStatus, Severity, Signal, fingerprint
from rules.conditions import (
    Condition,
    Memory,
    build,
    holds,
    ladder_band,
    render,
)
from rules.config import RulesFile
from rules.ruletypes import ThresholdRule
from rules.series import MAX_SPANS, WIDEN

MINUTE = 60 * 1_000_000_000
T0 = 1_600_682_400 * 1_000_000_000  # 2020-09-21T10:00:00Z
MANGGARAI = [751.0, 851.0, 950.0]

GAUGE = Device(id="g1", kind=Kind.WATER_LEVEL, name="Gauge One", lat=-6.2, lon=106.8,
               labels={"river": "Ciliwung", "kota": "Jakarta Selatan"},
               thresholds={"siaga3_cm": 751, "siaga2_cm": 851, "siaga1_cm": 950})
DOWN = Device(id="g2", kind=Kind.WATER_LEVEL, name="Gauge Two", lat=-6.1, lon=106.8,
              labels={"river": "Ciliwung"})
MONITOR = Device(id="a1", kind=Kind.AIR_QUALITY, name="Monitor", lat=-6.2, lon=106.8)
REGISTRY = Registry([GAUGE, DOWN, MONITOR])


def condition(**rule: Any) -> Condition:
    return build(RulesFile.model_validate({"rules": [rule]}).rules[0], REGISTRY)


def reading(minute: float, device: Device = GAUGE, **values: float) -> Reading:
    return Reading(device.kind, device.id, T0 + int(minute * MINUTE), values, None)


def run(cond: Condition, device: Device, series: Sequence[tuple[float, dict[str, float]]],
        memory: Memory | None = None) -> list[list[Signal]]:
    memory = memory or Memory()
    return [cond.evaluate(reading(m, device, **values), device, memory) for m, values in series]


def ladder(**overrides: Any) -> Condition:
    return condition(name="FloodLevel", type="ladder", clear_margin=10, steps=[
        {"threshold": "siaga3_cm", "level": "siaga-3", "severity": "warning"},
        {"threshold": "siaga2_cm", "level": "siaga-2", "severity": "major"},
        {"threshold": "siaga1_cm", "level": "siaga-1", "severity": "critical"},
    ], **overrides)


@pytest.mark.parametrize(
    ("value", "band"), [(750.9, 0), (751, 1), (850.9, 1), (851, 2), (949, 2), (950, 3), (1100, 3)]
)
def test_at_or_above_a_threshold_enters_its_band(value: float, band: int) -> None:
    assert ladder_band(value, MANGGARAI, 0, 10) == band


@pytest.mark.parametrize(("value", "band"), [(841, 2), (840.9, 1), (741, 1), (740.9, 0)])
def test_stepping_down_needs_the_value_below_the_threshold_minus_the_margin(
    value: float, band: int
) -> None:
    assert ladder_band(value, MANGGARAI, 2, 10) == band


def test_a_fall_through_several_bands_lands_in_the_band_the_value_is_in() -> None:
    assert ladder_band(760, MANGGARAI, 3, 10) == 1


def test_a_ladder_signal_carries_level_severity_and_device_labels() -> None:
    [[signal]] = run(ladder(), GAUGE, [(0, {"level_cm": 900.0})])
    assert signal.active and signal.severity is Severity.MAJOR
    assert signal.labels == {"alertname": "FloodLevel", "severity": "major", "device_id": "g1",
                             "kind": "water-level", "level": "siaga-2", "river": "Ciliwung",
                             "kota": "Jakarta Selatan"}
    assert signal.annotations["summary"] == "Gauge One is at siaga-2: level_cm 900"


def test_a_ladder_selects_only_devices_that_have_its_thresholds() -> None:
    assert ladder().selects(GAUGE)
    assert not ladder().selects(DOWN)


def test_a_ladder_restored_from_an_alert_resumes_in_that_alerts_band() -> None:
    alert = Alert(fingerprint("FloodLevel", "g1"), "FloodLevel", "g1", AlertStatus.FIRING,
                  Severity.MAJOR, {"level": "siaga-2"}, {}, T0, None, T0, T0)
    assert ladder().memory([alert]).band == 2


def test_a_limit_with_a_clear_limit_holds_in_between_only_once_crossed() -> None:
    rule = ThresholdRule.model_validate({"name": "X", "type": "threshold", "field": "level_cm",
                                         "above": 900, "clear_below": 880})
    assert not holds(rule, 890, was_active=False)
    assert holds(rule, 890, was_active=True)
    assert not holds(rule, 879, was_active=True)


def test_a_below_limit_clears_only_above_its_clear_limit() -> None:
    rule = ThresholdRule.model_validate({"name": "X", "type": "threshold", "field": "speed_kmh",
                                         "below": 15, "clear_above": 25})
    assert holds(rule, 14, False) and holds(rule, 25, True) and not holds(rule, 25.1, True)


def test_a_window_says_nothing_until_readings_span_it() -> None:
    cond = condition(name="Slow", type="window", field="level_cm", aggregate="max",
                     window="10m", above=100)
    signals = run(cond, GAUGE, [(m, {"level_cm": 500.0}) for m in (0, 5, 9, 10)])
    assert [len(s) for s in signals] == [0, 0, 0, 1]


def test_a_rise_within_the_span_fires_and_clears_when_the_rise_is_gone() -> None:
    cond = condition(name="Rise", type="rate_of_change", field="level_cm", rise=50,
                     within="30m")
    series = [(0, 10.0), (10, 30.0), (20, 65.0), (30, 70.0), (40, 75.0), (50, 80.0)]
    signals = run(cond, GAUGE, [(m, {"level_cm": v}) for m, v in series])
    assert [s[0].active for s in signals] == [False, False, True, True, False, False]
    assert signals[2][0].annotations["summary"] == "Gauge One: level_cm changed 55 within 30m"


def test_a_fall_within_the_span_fires() -> None:
    cond = condition(name="Drop", type="rate_of_change", field="level_cm", fall=20, within="1h")
    signals = run(cond, GAUGE, [(0, {"level_cm": 100.0}), (30, {"level_cm": 75.0})])
    assert [s[0].active for s in signals] == [False, True]


def test_ispu_averages_each_pollutant_over_the_window() -> None:
    cond = condition(name="Air", type="ispu", window="30m")
    series = [(0, {"pm25": 10.0}), (10, {"pm25": 100.0}), (20, {"pm25": 100.0, "o3": 50.0}),
              (30, {"pm25": 100.0})]
    signals = run(cond, MONITOR, series)
    assert [len(s) for s in signals] == [0, 0, 0, 1]
    [signal] = signals[-1]
    # pm25 mean 100 over (0, 30]: 100 + 100 * (100 - 55.4) / 95 = 146.9 -> 147, Tidak Sehat.
    assert signal.annotations["index"] == "147" and signal.labels["level"] == "tidak-sehat"
    assert signal.severity is Severity.WARNING


def test_ispu_below_the_minimum_category_is_inactive() -> None:
    cond = condition(name="Air", type="ispu", window="10m")
    signals = run(cond, MONITOR, [(0, {"pm25": 40.0}), (10, {"pm25": 40.0})])
    assert not signals[-1][0].active


def test_a_flood_wave_keeps_the_arrival_of_the_first_reading_at_the_level() -> None:
    cond = condition(name="Wave", type="flood_wave", upstream="g1", at_level="siaga-3",
                     downstream=[{"device": "g2", "travel": "2h30m"}], utc_offset="+00:00")
    signals = run(cond, GAUGE, [(0, {"level_cm": 760.0}), (30, {"level_cm": 800.0})])
    assert [s[0].annotations["expected_arrival"] for s in signals] == [
        "2020-09-21T12:30:00+00:00", "2020-09-21T12:30:00+00:00",
    ]
    assert signals[0][0].subject == "g2" and signals[0][0].labels["river"] == "Ciliwung"


def test_a_flood_wave_speaks_about_its_downstream_gauges() -> None:
    cond = condition(name="Wave", type="flood_wave", upstream="g1",
                     downstream=[{"device": "g2", "travel": "3h"}])
    assert cond.selects(GAUGE) and not cond.selects(DOWN)
    assert cond.subjects("g1") == ("g2",)


def test_every_placeholder_of_a_rule_type_has_a_value() -> None:
    cond = condition(name="Wave", type="flood_wave", upstream="g1",
                     downstream=[{"device": "g2", "travel": "3h"}], annotations={
                         "all": "{alertname}|{device_id}|{name}|{kind}|{severity}|{value}|"
                                "{field}|{level}|{threshold}|{upstream}|{upstream_name}|"
                                "{expected_arrival}|{travel_time}"})
    [[signal]] = run(cond, GAUGE, [(0, {"level_cm": 900.0})])
    assert all(part for part in signal.annotations["all"].split("|"))


def test_a_placeholder_for_a_label_the_device_lacks_renders_empty() -> None:
    assert render("{name} on {river}", {"name": "Gauge"}) == "Gauge on "


def feed(cond: Condition, device: Device, phases: Sequence[tuple[float, dict[str, float]]],
         every_ms: int, spans: Callable[[Memory], int]
         ) -> tuple[list[tuple[float, bool | None]], int]:
    """Readings every `every_ms` through phases (until minute, values): the minutes at
    which the signal changes, and the most spans the memory held."""
    memory, changes, longest, minute = Memory(), list[tuple[float, bool | None]](), 0, 0.0
    for until, values in phases:
        while minute < until:
            signals = cond.evaluate(reading(minute, device, **values), device, memory)
            longest = max(longest, spans(memory))
            active = signals[0].active if signals else None  # None: the window is not full
            if not changes or active != changes[-1][1]:
                changes.append((minute, active))
            minute += every_ms / 60_000
    return changes, longest


def lags(minutes: Sequence[float], exact: Sequence[float], window_min: float) -> bool:
    """Each change at its exact minute or later by at most the edge of a merged window."""
    edge = window_min * WIDEN / MAX_SPANS
    return all(e - 0.01 <= m <= e + edge for m, e in zip(minutes, exact, strict=True))


def test_a_window_fed_fifty_thousand_readings_stays_bounded_and_fires_then_clears() -> None:
    cond = condition(name="High", type="window", field="level_cm", aggregate="mean",
                     window="10m", above=100, clear_below=80)
    phases = [(15, {"level_cm": 50.0}), (32, {"level_cm": 150.0}), (50, {"level_cm": 50.0})]
    changes, longest = feed(cond, GAUGE, phases, 60, lambda memory: len(memory.series))
    assert longest <= MAX_SPANS
    # Exact: full at 10, the mean past 100 at 20 (half the window at 150), under 80 at 39.
    assert [active for _, active in changes] == [None, False, True, False]
    assert lags([minute for minute, _ in changes[1:]], [10, 20, 39], window_min=10)


def test_an_ispu_fed_fifty_thousand_readings_stays_bounded_and_fires_then_clears() -> None:
    cond = condition(name="Air", type="ispu", window="10m")
    phases = [(15, {"pm25": 10.0}), (32, {"pm25": 200.0}), (50, {"pm25": 10.0})]
    changes, longest = feed(cond, MONITOR, phases, 60,
                            lambda memory: len(memory.pollutants["pm25"]))
    assert longest <= MAX_SPANS
    # Exact: full at 10, the pm25 mean past 55.4 (tidak sehat) at 10 + 10 * 45.4 / 190,
    # back under it at 32 + 10 * 144.6 / 190.
    assert [active for _, active in changes] == [None, False, True, False]
    assert lags([minute for minute, _ in changes[1:]], [10, 17.39, 39.61], window_min=10)


def test_an_unknown_rule_type_raises_instead_of_becoming_a_flood_wave() -> None:
    class NotARule:
        type = "tide"

    with pytest.raises(AssertionError):
        build(NotARule(), REGISTRY)  # type: ignore[arg-type]
