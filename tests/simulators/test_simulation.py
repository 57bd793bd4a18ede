"""The simulation: emissions in time order, deterministic by seed, every device on its interval."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import FrozenInstanceError, replace
from datetime import timedelta

import orjson
import pytest

from devices.kinds import Kind
from devices.registry import Registry
from devices.topics import TopicScheme
from simulators.emission import Emission
from simulators.scenario import DeviceSelection, load_scenario
from simulators.simulation import Simulation
from tests.simulators.decoding import catalog, emissions_of

BUNDLED = ["chaos", "dry-season-haze", "flash-flood-katulampa", "flood-2020-01-01",
           "normal-day", "rush-hour"]  # fmt: skip


@pytest.mark.parametrize("name", BUNDLED)
def test_emissions_are_ordered_by_simulated_time(name: str) -> None:
    times = [emission.sim_time_s for emission in emissions_of(name)]
    assert times == sorted(times)


@pytest.mark.parametrize("name", BUNDLED)
def test_emissions_stay_inside_the_scenario(name: str) -> None:
    scenario = load_scenario(name)
    assert all(scenario.start_s <= e.sim_time_s < scenario.end_s for e in emissions_of(name))


def test_the_same_seed_gives_the_same_emissions() -> None:
    scenario = load_scenario("chaos")
    first = list(Simulation(catalog(), scenario, 11).emissions())
    again = list(Simulation(catalog(), scenario, 11).emissions())
    assert first == again


def test_another_seed_gives_other_emissions() -> None:
    assert emissions_of("normal-day", 1) != emissions_of("normal-day", 2)


def test_a_simulation_can_be_played_again() -> None:
    simulation = Simulation(catalog(), load_scenario("rush-hour"), 4)
    assert list(simulation.emissions()) == list(simulation.emissions())


def test_a_device_sends_the_same_whatever_else_runs() -> None:
    scenario = load_scenario("flood-2020-01-01")
    alone = Simulation(catalog(), replace(scenario, devices=DeviceSelection(ids=("karet",))), 9)
    together = [e for e in emissions_of("flood-2020-01-01", 9) if e.device_id == "karet"]
    assert list(alone.emissions()) == together


def test_readings_carry_the_simulated_time_and_count_from_zero_per_device() -> None:
    seqs: dict[str, list[object]] = defaultdict(list)
    for emission in emissions_of("normal-day"):
        if emission.events:
            continue  # a camera's detection: no reading, no seq
        reading = orjson.loads(emission.payload)
        assert reading["ts"] == pytest.approx(emission.sim_time_s, abs=1e-3)
        seqs[emission.device_id].append(reading["seq"])
    assert all(found == list(range(len(found))) for found in seqs.values())
    assert set(seqs) == {device.id for device in catalog()}


def test_topics_follow_the_scheme_and_its_prefix() -> None:
    scenario = load_scenario("normal-day").with_duration(timedelta(hours=2))
    for emission in Simulation(catalog(), scenario, 1, TopicScheme("city/jkt")).emissions():
        channel = "events" if emission.events else "telemetry"
        assert emission.topic == f"city/jkt/{emission.kind}/{emission.device_id}/{channel}"
        assert (emission.readings + emission.events, emission.fault, emission.retain) == (
            1, None, False)


def test_every_kind_of_the_catalog_is_simulated() -> None:
    assert {emission.kind for emission in emissions_of("normal-day")} == set(Kind)


def test_a_window_of_simulated_time_can_be_chosen() -> None:
    simulation = Simulation(catalog(), load_scenario("normal-day"), 1)
    start = simulation.scenario.start_s + 3600
    window = list(simulation.emissions(start, start + 1800))
    assert window and all(start <= e.sim_time_s < start + 1800 for e in window)


def test_an_endless_run_yields_lazily() -> None:
    simulation = Simulation(catalog(), load_scenario("normal-day"), 1)
    later = simulation.scenario.end_s + 30 * 86_400
    endless = simulation.emissions(until_s=math.inf)
    assert len(list(itertools.islice(endless, 5000))) == 5000
    assert next(iter(simulation.emissions(later, math.inf))).sim_time_s >= later


def test_the_devices_are_the_scenarios_in_catalog_order() -> None:
    simulation = Simulation(catalog(), load_scenario("dry-season-haze"), 1)
    assert [d.id for d in simulation.devices] == [
        d.id for d in catalog() if d.kind in (Kind.AIR_QUALITY, Kind.CAMERA)
    ]


def test_many_devices_of_the_same_kind_all_report() -> None:
    template = next(iter(catalog().by_kind(Kind.TRAFFIC)))
    fleet = Registry(template.model_copy(update={"id": f"road-{i}"}) for i in range(300))
    scenario = load_scenario("normal-day").with_intervals(60).with_duration(timedelta(minutes=10))
    emissions = list(Simulation(fleet, scenario, 1).emissions())
    assert len(emissions) == 300 * 10
    assert len({e.device_id for e in emissions}) == 300


def test_an_emission_cannot_be_changed() -> None:
    emission = emissions_of("normal-day")[0]
    with pytest.raises(FrozenInstanceError):
        emission.payload = b"{}"  # type: ignore[misc]
    assert isinstance(emission, Emission)


def test_every_device_reporting_every_second_emits_once_per_simulated_second() -> None:
    # The stream a loaded fleet publishes from: every catalog device reporting every second.
    # How fast it is generated is a benchmark figure (bench/), not a test.
    scenario = load_scenario("normal-day").with_intervals(1.0)
    simulation = Simulation(catalog(), scenario, 1)
    readings = (emission for emission in simulation.emissions() if not emission.events)
    minute = list(itertools.islice(readings, 60 * len(simulation.devices)))
    per_second: defaultdict[int, set[str]] = defaultdict(set)
    for emission in minute:
        per_second[int(emission.sim_time_s - scenario.start_s)].add(emission.device_id)
    assert sorted(per_second) == list(range(60))
    assert all(devices == {d.id for d in simulation.devices} for devices in per_second.values())
