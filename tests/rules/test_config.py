"""The rules file: the bundled default, and broken files named by line, field and reason."""

from datetime import timedelta
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.registry import Registry, bundled_catalog_path, load_catalog
from rules.alert import Severity
from rules.config import RulesFile, load_rules
from rules.ruletypes import FloodWaveRule, LadderRule, WindowRule
from siaga_core.errors import ConfigFileError
from tests.rules.books import DEFAULT_RULES

LADDER = """\
rules:
  - name: FloodLevel
    type: ladder
    kind: water-level
    clear_margin: 10
    steps:
      - {threshold: siaga3_cm, level: siaga-3, severity: warning}
"""


def problems(tmp_path: Path, registry: Registry, text: str) -> list[str]:
    """The rendered problems of a rules file, without the file name."""
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as caught:
        load_rules(path, registry)
    return [line.removeprefix(str(path)) for line in caught.value.render().splitlines()]


def test_the_bundled_rules_load_against_the_bundled_catalog(registry: Registry) -> None:
    rules = load_rules(DEFAULT_RULES, registry)
    assert [rule.name for rule in rules.rules] == [
        "FloodLevel", "KatulampaRapidRise", "FloodWaveExpected", "FloodWaveExpectedKrukut",
        "FloodWaveExpectedSunter", "Congestion", "AirQuality",
    ]
    assert rules.receivers == [] and rules.routes == []


def test_the_bundled_ladder_is_siaga_3_2_1_with_a_10_cm_clear_margin(registry: Registry) -> None:
    ladder = load_rules(DEFAULT_RULES, registry).rules[0]
    assert isinstance(ladder, LadderRule) and ladder.clear_margin == 10
    assert [(s.threshold, s.level, s.severity) for s in ladder.steps] == [
        ("siaga3_cm", "siaga-3", Severity.WARNING), ("siaga2_cm", "siaga-2", Severity.MAJOR),
        ("siaga1_cm", "siaga-1", Severity.CRITICAL),
    ]


def test_the_bundled_flood_wave_uses_the_published_travel_times(registry: Registry) -> None:
    wave = load_rules(DEFAULT_RULES, registry).rules[2]
    assert isinstance(wave, FloodWaveRule) and wave.upstream == "katulampa"
    assert [(d.device, d.travel) for d in wave.downstream] == [
        ("depok", timedelta(hours=3)), ("manggarai", timedelta(hours=9)),
    ]


def test_durations_and_defaults_are_read_as_operators_write_them() -> None:
    rules = RulesFile.model_validate({"rules": [{
        "name": "Jam", "type": "window", "kind": "traffic", "field": "speed_kmh",
        "aggregate": "mean", "window": "10m", "below": 15, "clear_above": 25, "for": "1h30m",
    }]})
    rule = rules.rules[0]
    assert isinstance(rule, WindowRule) and rule.kind is Kind.TRAFFIC
    assert (rule.window, rule.for_) == (timedelta(minutes=10), timedelta(hours=1, minutes=30))
    assert rules.alerting.page_max_age == timedelta(minutes=15)
    assert rules.alerting.repeat_interval == timedelta(hours=4)
    assert rules.offline.grace_factor == 2.0


def test_an_empty_file_is_no_rules_and_every_default(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_rules(path, registry) == RulesFile()


def test_two_rules_with_one_name_are_refused(tmp_path: Path, registry: Registry) -> None:
    text = LADDER + LADDER.removeprefix("rules:\n")
    assert problems(tmp_path, registry, text) == [
        ":8: rules[1].name: duplicate rule name 'FloodLevel': rules[0] has it too",
    ]


def test_a_rule_named_like_the_offline_alerts_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER.replace("FloodLevel", "DeviceOffline")
    assert problems(tmp_path, registry, text) == [
        ":2: rules[0].name: DeviceOffline is raised by the offline checker",
    ]


def test_a_rule_named_like_the_storage_alert_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER.replace("FloodLevel", "StorageUnavailable")
    assert problems(tmp_path, registry, text) == [
        ":2: rules[0].name: StorageUnavailable is raised by the service when readings cannot"
        " be made durable",
    ]


def test_an_unknown_device_is_refused_at_its_line(tmp_path: Path, registry: Registry) -> None:
    text = LADDER.replace("    kind: water-level\n", "    devices: [manggarai, monas]\n")
    assert problems(tmp_path, registry, text) == [":4: rules[0].devices[1]: unknown device 'monas'"]


def test_an_unknown_kind_is_refused_with_the_known_ones(tmp_path: Path, registry: Registry) -> None:
    text = LADDER.replace("kind: water-level", "kind: sewer")
    [problem] = problems(tmp_path, registry, text)
    assert problem.startswith(":4: rules[0].kind: must be one of water-level, air-quality")


def test_a_field_the_kind_does_not_have_is_refused(tmp_path: Path, registry: Registry) -> None:
    text = LADDER.replace("    clear_margin: 10\n", "    field: speed_kmh\n")
    [problem] = problems(tmp_path, registry, text)
    assert problem.startswith(":5: rules[0].field: water-level readings have no field 'speed_kmh'")


def test_a_ladder_on_a_device_without_its_thresholds_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER.replace("    kind: water-level\n", "    devices: [sudirman-setiabudi]\n")
    text = text.replace("    clear_margin: 10\n", "    field: speed_kmh\n")
    assert problems(tmp_path, registry, text) == [
        ":4: rules[0].devices[0]: sudirman-setiabudi has no threshold siaga3_cm",
    ]


def test_ladder_steps_out_of_order_are_refused(tmp_path: Path, registry: Registry) -> None:
    text = LADDER + "      - {threshold: siaga3_cm, level: again, severity: major}\n"
    [problem, *_] = problems(tmp_path, registry, text)
    assert problem.startswith(":7: rules[0].steps: must rise step by step; katulampa has")


def test_an_unknown_key_in_a_rule_suggests_the_right_one(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER.replace("clear_margin", "clear_margn")
    [problem] = problems(tmp_path, registry, text)
    assert problem.startswith(":5: rules[0].clear_margn: unknown key (did you mean clear_margin?")


def test_an_unknown_key_in_a_step_names_the_keys_of_a_step(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER.replace("severity: warning}", "severity: warning, colour: blue}")
    assert problems(tmp_path, registry, text) == [
        ":7: rules[0].steps[0].colour: unknown key (expected one of threshold, level, severity)",
    ]


def test_an_unknown_rule_type_lists_the_types(tmp_path: Path, registry: Registry) -> None:
    text = LADDER.replace("type: ladder", "type: staircase")
    assert problems(tmp_path, registry, text) == [
        ":3: rules[0].type: unknown rule type 'staircase' (one of ladder, threshold, "
        "rate_of_change, window, ispu, flood_wave)",
    ]


def test_a_bad_value_inside_a_rule_is_placed_at_its_line(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER.replace("clear_margin: 10", "clear_margin: -1")
    assert problems(tmp_path, registry, text) == [
        ":5: rules[0].clear_margin: must be >= 0 (got -1)",
    ]


def test_a_threshold_needs_exactly_one_direction(tmp_path: Path, registry: Registry) -> None:
    text = ("rules:\n  - name: X\n    type: threshold\n    field: level_cm\n"
            "    above: 900\n    below: 100\n")
    assert problems(tmp_path, registry, text) == [
        ":2: rules[0]: needs exactly one of above or below",
    ]


def test_a_clear_limit_on_the_wrong_side_is_refused(tmp_path: Path, registry: Registry) -> None:
    text = ("rules:\n  - name: X\n    type: threshold\n    field: level_cm\n"
            "    above: 900\n    clear_below: 950\n")
    [problem] = problems(tmp_path, registry, text)
    assert "clear_below <= above" in problem


def test_an_unknown_placeholder_is_refused_with_a_suggestion(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER + "    annotations:\n      summary: '{name} at {levle}'\n"
    [problem] = problems(tmp_path, registry, text)
    assert problem.startswith(":9: rules[0].annotations.summary: unknown placeholder {levle} "
                              "(did you mean {level}?")


def test_a_device_label_is_a_known_placeholder(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(LADDER + "    labels:\n      team: 'bpbd-{kota}-{river}'\n", encoding="utf-8")
    assert load_rules(path, registry).rules[0].labels == {"team": "bpbd-{kota}-{river}"}


def test_a_label_cannot_use_a_placeholder_that_changes_with_every_reading(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER + "    labels:\n      height: '{value}'\n"
    [problem] = problems(tmp_path, registry, text)
    assert problem.startswith(":9: rules[0].labels.height: {value} changes with the readings")


def test_a_rule_cannot_set_the_labels_siaga_sets(tmp_path: Path, registry: Registry) -> None:
    text = LADDER + "    labels:\n      severity: critical\n"
    assert problems(tmp_path, registry, text) == [
        ":9: rules[0].labels.severity: set by Siaga itself, not by a rule",
    ]


def test_a_flood_wave_with_unknown_gauges_is_refused(tmp_path: Path, registry: Registry) -> None:
    text = ("rules:\n  - name: Wave\n    type: flood_wave\n    upstream: bogor\n"
            "    downstream:\n      - {device: depok, travel: 3h}\n"
            "      - {device: jakarta, travel: 9h}\n")
    assert problems(tmp_path, registry, text) == [
        ":4: rules[0].upstream: unknown device 'bogor'",
        ":7: rules[0].downstream[1].device: unknown device 'jakarta'",
    ]


def load(tmp_path: Path, registry: Registry, text: str) -> RulesFile:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return load_rules(path, registry)


def test_an_optional_rule_is_cut_to_the_devices_the_catalog_has(
    tmp_path: Path, registry: Registry
) -> None:
    text = LADDER.replace("    kind: water-level\n",
                          "    optional: true\n    devices: [manggarai, monas]\n")
    rules = load(tmp_path, registry, text)
    assert isinstance(rules.rules[0], LadderRule) and rules.rules[0].devices == ["manggarai"]
    assert [line.removeprefix(str(tmp_path / "rules.yaml")) for line in rules.skipped] == [
        ":2: rules[0]: FloodLevel applies without what the catalog lacks: "
        "the catalog has no device 'monas'",
    ]


def test_an_optional_rule_with_nothing_left_to_watch_is_skipped(
    tmp_path: Path, registry: Registry
) -> None:
    text = ("rules:\n  - name: Wave\n    type: flood_wave\n    optional: true\n"
            "    upstream: bogor\n    downstream:\n      - {device: depok, travel: 3h}\n")
    rules = load(tmp_path, registry, text)
    assert rules.rules == []
    assert [line.removeprefix(str(tmp_path / "rules.yaml")) for line in rules.skipped] == [
        ":2: rules[0]: Wave skipped: the catalog has no device 'bogor' (the upstream gauge)",
    ]


def test_an_optional_flood_wave_keeps_the_downstream_gauges_the_catalog_has(
    tmp_path: Path, registry: Registry
) -> None:
    text = ("rules:\n  - name: Wave\n    type: flood_wave\n    optional: true\n"
            "    upstream: katulampa\n    downstream:\n      - {device: depok, travel: 3h}\n"
            "      - {device: jakarta, travel: 9h}\n")
    [wave] = load(tmp_path, registry, text).rules
    assert isinstance(wave, FloodWaveRule)
    assert [entry.device for entry in wave.downstream] == ["depok"]


def test_an_optional_rule_still_refuses_a_real_mistake(tmp_path: Path, registry: Registry) -> None:
    # A device the catalog has, of another kind: not absent, wrong.
    text = LADDER.replace("    kind: water-level\n",
                          "    kind: water-level\n    optional: true\n"
                          "    devices: [sudirman-setiabudi]\n")
    assert problems(tmp_path, registry, text) == [
        ":6: rules[0].devices[0]: sudirman-setiabudi is traffic, not water-level",
    ]


def test_the_bundled_rules_skip_nothing_with_the_bundled_catalog(registry: Registry) -> None:
    assert load_rules(DEFAULT_RULES, registry).skipped == ()


def test_a_route_naming_an_undefined_receiver_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    text = ("receivers:\n  - {name: bpbd, url: 'https://bpbd.example/hook'}\n"
            "routes:\n  - receivers: [bpbd, dishub]\n    match: {alertname: Congestion}\n")
    assert problems(tmp_path, registry, text) == [
        ":4: routes[0].receivers[1]: unknown receiver 'dishub' (receivers: bpbd)",
    ]


def test_a_zero_window_is_refused(tmp_path: Path, registry: Registry) -> None:
    text = ("rules:\n  - name: Jam\n    type: window\n    kind: traffic\n    field: speed_kmh\n"
            "    aggregate: mean\n    window: 0s\n    below: 15\n")
    assert problems(tmp_path, registry, text) == [
        ":7: rules[0].window: must be longer than 0s, e.g. 30s",
    ]


def test_a_ladder_whose_threshold_no_selected_device_has_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: Typo\n"
        "    type: ladder\n"
        "    kind: water-level\n"
        "    field: level_cm\n"
        "    steps: [{threshold: siaga9_cm, level: siaga-3, severity: warning}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigFileError, match=r"steps\[0\]\.threshold: no selected device"):
        load_rules(path, load_catalog(bundled_catalog_path()))
