"""Scenarios: the bundled stories play out as jakarta.md tells them; files are checked strictly."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.registry import Registry
from siaga_core.errors import ConfigFileError
from simulators.calendar import HOUR_S, WIB
from simulators.scenario import (
    Incident,
    Keyframes,
    Rain,
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
)
from simulators.simulation import Simulation
from tests.simulators.decoding import catalog, emissions_of, number, readings_of

BUNDLED = [
    "chaos", "dry-season-haze", "flash-flood-katulampa", "flood-2020-01-01", "normal-day",
    "rush-hour",
]  # fmt: skip


def wib(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=WIB).timestamp()


def threshold(device_id: str, name: str) -> float:
    device = catalog().get(device_id)
    assert device is not None
    return device.thresholds[name]


def peak(name: str, device_id: str) -> tuple[float, float]:
    """(time, level) of a gauge's highest reading in a bundled scenario."""
    readings = readings_of(emissions_of(name), device_id)
    best = max(readings, key=lambda r: number(r, "level_cm"))
    return number(best, "ts"), number(best, "level_cm")


def level_at(name: str, device_id: str, at: float) -> float:
    """The gauge's reading closest to `at`."""
    readings = readings_of(emissions_of(name), device_id)
    return number(min(readings, key=lambda r: abs(number(r, "ts") - at)), "level_cm")


# --- the bundled scenarios --------------------------------------------------------------


def test_the_bundled_scenarios_are_listed_by_name() -> None:
    assert [scenario.name for scenario in list_scenarios()] == BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_scenario_runs_on_the_catalog_without_warnings(name: str) -> None:
    simulation = Simulation(catalog(), load_scenario(name), seed=1)
    assert simulation.warnings == []
    assert simulation.devices
    assert any(emission.readings for emission in emissions_of(name))


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_scenario_starts_in_jakarta_time_and_describes_itself(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.start.utcoffset() == timedelta(hours=7)
    assert len(scenario.description) > 40


def test_the_katulampa_peak_reaches_manggarai_about_nine_hours_later() -> None:
    # jakarta.md section 1: Katulampa -> Manggarai usually ~9 h (6-12 h).
    katulampa_at, _ = peak("flash-flood-katulampa", "katulampa")
    manggarai_at, _ = peak("flash-flood-katulampa", "manggarai")
    assert 7.5 * HOUR_S <= manggarai_at - katulampa_at <= 10.5 * HOUR_S


def test_the_katulampa_peak_reaches_depok_about_three_hours_later() -> None:
    katulampa_at, _ = peak("flash-flood-katulampa", "katulampa")
    depok_at, _ = peak("flash-flood-katulampa", "depok")
    assert 2 * HOUR_S <= depok_at - katulampa_at <= 4.5 * HOUR_S


def test_the_flash_rise_takes_katulampa_from_zero_to_siaga_1_within_the_evening() -> None:
    # 21 Sep 2020: 0 cm at 17:00, 250 cm (Siaga 1) at 18:18.
    assert level_at("flash-flood-katulampa", "katulampa", wib("2020-09-21T17:00")) < 10
    at, level = peak("flash-flood-katulampa", "katulampa")
    assert level >= threshold("katulampa", "siaga1_cm")
    assert wib("2020-09-21T18:00") <= at <= wib("2020-09-21T19:00")


def test_katulampa_reports_every_minute_in_the_flash_scenario() -> None:
    # Its minute log shows the 40 -> 120 cm in 4 minutes the KatulampaRapidRise rule of
    # rules/default.yaml watches for (50 cm within 30 minutes); other gauges stay hourly.
    readings = readings_of(emissions_of("flash-flood-katulampa"), "katulampa")
    stamps = [number(r, "ts") for r in readings]
    assert {round(b - a) for a, b in itertools.pairwise(stamps)} == {60}
    levels = [number(r, "level_cm") for r in readings]
    assert max(b - a for a, b in zip(levels, levels[30:], strict=False)) >= 50
    depok = readings_of(emissions_of("flash-flood-katulampa"), "depok")
    assert number(depok[1], "ts") - number(depok[0], "ts") == pytest.approx(3600)


def test_the_flash_wave_arrives_flattened_at_manggarai() -> None:
    # The wave raises Manggarai into Siaga, but it loses height on 9 hours of river.
    _, level = peak("flash-flood-katulampa", "manggarai")
    assert threshold("manggarai", "siaga3_cm") <= level < threshold("manggarai", "siaga1_cm")


def test_the_new_year_flood_brings_manggarai_and_karet_to_siaga_1() -> None:
    for gauge in ("manggarai", "karet"):
        _, level = peak("flood-2020-01-01", gauge)
        assert level >= threshold(gauge, "siaga1_cm"), gauge


def test_the_new_year_flood_keeps_pulo_gadung_at_siaga_2() -> None:
    _, level = peak("flood-2020-01-01", "pulo-gadung")
    assert threshold("pulo-gadung", "siaga2_cm") <= level < threshold("pulo-gadung", "siaga1_cm")


@pytest.mark.parametrize(
    ("gauge", "at", "reported"),
    [("manggarai", "2020-01-01T02:00", 700), ("manggarai", "2020-01-01T03:00", 815),
     ("manggarai", "2020-01-01T06:00", 920), ("manggarai", "2020-01-02T00:00", 965),
     ("karet", "2020-01-01T03:00", 480), ("karet", "2020-01-01T06:00", 630),
     ("pulo-gadung", "2020-01-01T03:00", 620), ("pulo-gadung", "2020-01-01T06:00", 735)],
)  # fmt: skip
def test_the_new_year_replay_reads_what_the_gauges_reported(
    gauge: str, at: str, reported: float
) -> None:
    assert level_at("flood-2020-01-01", gauge, wib(at)) == pytest.approx(reported, abs=6)


def test_a_normal_day_keeps_every_river_below_siaga_3() -> None:
    emissions = emissions_of("normal-day")
    for gauge in catalog().by_kind(Kind.WATER_LEVEL):
        if gauge.labels.get("river") == "Java Sea":
            continue  # the tide may touch Siaga 3 at spring tides
        levels = [number(r, "level_cm") for r in readings_of(emissions, gauge.id)]
        assert max(levels) < gauge.thresholds["siaga3_cm"], gauge.id


def test_the_rush_hour_crash_brings_sudirman_to_a_crawl() -> None:
    readings = readings_of(emissions_of("rush-hour"), "sudirman-setiabudi")
    speed = {round(number(r, "ts") / 60): number(r, "speed_kmh") for r in readings}

    def around(clock: str) -> float:
        minute = round(wib(f"2024-09-02T{clock}") / 60)
        return min(speed[m] for m in range(minute - 2, minute + 3) if m in speed)

    assert around("08:25") < 10  # LOS F: the Congestion rule's 15 km/h is far above
    assert around("08:05") > 2 * around("08:25")  # sudden: minutes before, traffic moved


# --- scenario values --------------------------------------------------------------------


def test_moving_a_scenario_moves_its_events_with_it() -> None:
    scenario = load_scenario("flash-flood-katulampa")
    later = scenario.starting_at(scenario.start + timedelta(days=30))
    shifted = Simulation(catalog(), later, seed=1)
    readings = readings_of(shifted.emissions(), "katulampa")
    best = max(readings, key=lambda r: number(r, "level_cm"))
    assert number(best, "level_cm") > 200
    assert number(best, "ts") - later.start_s == pytest.approx(6.5 * HOUR_S, abs=HOUR_S)


def test_with_intervals_sets_how_often_devices_report() -> None:
    scenario = load_scenario("dry-season-haze").with_intervals(60.0).with_duration(
        timedelta(hours=1)
    )
    simulation = Simulation(catalog(), scenario, 1)
    readings = [e for e in simulation.emissions() if e.readings == 1]
    assert len(readings) / len(simulation.devices) == pytest.approx(60, abs=1)


def test_devices_can_be_chosen_by_kind_and_id(tmp_path: Path) -> None:
    path = write(tmp_path, "devices: {kinds: [air-quality], ids: [manggarai]}\n")
    devices = Simulation(catalog(), load_scenario(path), 1).devices
    assert {d.kind for d in devices} == {Kind.AIR_QUALITY, Kind.WATER_LEVEL}
    assert [d.id for d in devices if d.kind is Kind.WATER_LEVEL] == ["manggarai"]


def test_a_scenario_naming_a_device_the_catalog_lacks_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "devices: [manggarai, nowhere]\n")
    with pytest.raises(ScenarioError, match="nowhere"):
        Simulation(catalog(), load_scenario(path), 1)


def test_events_for_devices_the_catalog_lacks_are_ignored_with_a_warning() -> None:
    only_karet = Registry([d for d in catalog() if d.id == "karet"])
    simulation = Simulation(only_karet, load_scenario("flood-2020-01-01"), 1)
    assert any("manggarai" in warning for warning in simulation.warnings)
    _, level = max((number(r, "ts"), number(r, "level_cm"))
                   for r in readings_of(simulation.emissions(), "karet"))  # fmt: skip
    assert level > 0


def test_an_event_naming_a_device_of_the_wrong_kind_is_refused() -> None:
    scenario = load_scenario("normal-day")
    wrong = Scenario(scenario.name, "", scenario.start, scenario.duration,
                     events=(Incident("manggarai", 0.0, HOUR_S),))  # fmt: skip
    with pytest.raises(ScenarioError, match="manggarai"):
        Simulation(catalog(), wrong, 1)


def test_keyframes_for_a_field_the_device_lacks_are_refused() -> None:
    scenario = load_scenario("normal-day")
    wrong = replace(scenario, events=(Keyframes("manggarai", ((0.0, 50.0),), "pm25"),))
    with pytest.raises(ScenarioError, match="pm25"):
        Simulation(catalog(), wrong, 1)


def test_a_scenario_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        Scenario("x", "", datetime(2024, 1, 1), timedelta(hours=1))


# --- scenario files ---------------------------------------------------------------------

HEAD = "start: 2024-03-12T00:00:00+07:00\nduration: 1d\n"


def write(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(head + body, encoding="utf-8")
    return path


def test_a_scenario_file_of_ones_own_loads_with_every_way_of_writing_time(tmp_path: Path) -> None:
    path = write(tmp_path, """\
events:
  - type: rain
    at: "14:30"
    duration: 1h30m
    rises: {katulampa: 100}
  - type: keyframes
    device: manggarai
    points: [["+2h", 700], [2024-03-12T05:00:00+07:00, 720], ["28:00", 710]]
  - type: incident
    device: sudirman-setiabudi
    at: +8h
    duration: 45m
""")  # fmt: skip
    scenario = load_scenario(path)
    rain, keyframes, incident = scenario.events
    assert scenario.name == "mine"
    assert isinstance(rain, Rain) and rain.at_s == 14.5 * HOUR_S
    assert rain.duration_s == 1.5 * HOUR_S and rain.rises == (("katulampa", 100.0),)
    assert isinstance(keyframes, Keyframes)
    assert [t for t, _ in keyframes.points] == [2 * HOUR_S, 5 * HOUR_S, 28 * HOUR_S]
    assert isinstance(incident, Incident) and incident.at_s == 8 * HOUR_S


def test_a_start_without_an_offset_is_taken_as_wib(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "", "start: 2024-03-12 06:00:00\nduration: 1h\n"))
    assert scenario.start == datetime(2024, 3, 12, 6, tzinfo=WIB)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("colour: blue\n", "mine.yaml:3: colour: unknown key"),
        ("faults: {spikes: 0.1}\n", "faults.spikes: must be one of"),
        ("faults: {spike: 2}\n", "faults.spike: must be a chance per reading"),
        ("intervals: {traffic: soon}\n", "intervals.traffic: must be a duration"),
        ("events:\n  - type: flood\n", "mine.yaml:4: events[0].type: must be one of rain"),
        ("events:\n  - {type: rain, duration: 1h}\n", "events[0].at: required"),
        ("events:\n  - type: rain\n    at: 17:00\n    duration: 1h\n",
         "mine.yaml:5: events[0].at: put times in quotes"),
        ("events:\n  - type: haze\n    at: +1h\n    duration: 1h\n    factr: 2\n",
         "mine.yaml:7: events[0].factr: unknown key (did you mean factor?"),
        ("events:\n  - {type: keyframes, device: x, points: [[\"02:00\"]]}\n",
         "events[0].points[0]: must be a pair"),
        ("devices: nearby\n", "devices: must be all, a list of device ids"),
    ],
)  # fmt: skip
def test_a_bad_scenario_file_is_refused_with_file_line_place_and_fix(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_scenario(write(tmp_path, body))
    assert expected in str(caught.value)


def test_a_missing_start_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="start: required"):
        load_scenario(write(tmp_path, "", head="duration: 1d\n"))


def test_an_unknown_scenario_name_lists_the_bundled_ones() -> None:
    with pytest.raises(ConfigFileError, match="flood-2020-01-01"):
        load_scenario("flood-2021")


def test_every_bundled_file_names_itself_after_its_file() -> None:
    for scenario in list_scenarios():
        assert scenario.source is not None and scenario.source.stem == scenario.name


def test_scenario_events_are_replayable_pairs_in_time_order() -> None:
    for scenario in list_scenarios():
        for event in scenario.events:
            if isinstance(event, Keyframes):
                times = [t for t, _ in event.points]
                assert all(a <= b for a, b in itertools.pairwise(times))
