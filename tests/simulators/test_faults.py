"""Faults: each one on its own switch, valid ones still valid, malformed ones dead letters."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
import pytest

from devices.kinds import Kind
from devices.readings import READING_MODELS
from simulators.emission import Emission
from simulators.faults import FAULT_NAMES, MAX_BATCH, Fault, FaultRates
from simulators.scenario import DeviceSelection, load_scenario
from simulators.simulation import Simulation
from tests.simulators.decoding import catalog, decode, emissions_of

BUNDLED = ["chaos", "dry-season-haze", "flash-flood-katulampa", "flood-2020-01-01",
           "normal-day", "rush-hour"]  # fmt: skip
MAX_PAYLOAD = 64 * 1024  # SPEC section 1


def chaos() -> tuple[Emission, ...]:
    return emissions_of("chaos")


def with_only(fault: str, rate: float, hours: float = 6, **kwargs: float) -> list[Emission]:
    """Emissions of a few devices, every minute, with one fault switched on."""
    scenario = load_scenario("normal-day").with_intervals(60).with_duration(timedelta(hours=hours))
    scenario = scenario.with_faults(FaultRates().with_fault(fault, rate, kwargs.get("duration_s")))
    selection = DeviceSelection(ids=("manggarai", "dki1-bundaran-hi", "thamrin-sarinah"))
    return list(Simulation(catalog(), replace(scenario, devices=selection), 7).emissions())


def items(emission: Emission) -> list[dict[str, Any]]:
    body = orjson.loads(emission.payload)
    return body if isinstance(body, list) else [body]


# --- validity ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLED)
def test_every_reading_validates_with_the_reading_models(name: str) -> None:
    for emission in emissions_of(name):
        if emission.readings == 0:
            continue
        for reading in items(emission):
            READING_MODELS[emission.kind].model_validate(reading)


def test_the_service_stores_every_valid_reading_and_dead_letters_the_rest() -> None:
    # Decoded by Siaga's own decoder, received at the simulated send time: skewed clocks
    # stay within the 5 minutes ahead it accepts.
    for emission in chaos():
        verdict = decode(emission)
        if emission.retain:
            assert (verdict.statuses, verdict.dead) == (1, 0)
        elif emission.events:
            assert (verdict.detections, verdict.dead) == (1, 0), emission
        else:
            assert verdict.stored == emission.readings, emission
            assert verdict.dead == (1 if emission.readings == 0 else 0), emission


def test_every_malformed_emission_fails_validation() -> None:
    malformed = [e for e in chaos() if e.fault == "malformed"]
    assert len(malformed) > 20
    for emission in malformed:
        assert emission.readings == 0
        try:
            body = orjson.loads(emission.payload)
        except orjson.JSONDecodeError:
            continue
        assert not _valid(emission.kind, body), emission.payload


def _valid(kind: Kind, body: object) -> bool:
    readings = body if isinstance(body, list) else [body]
    if not readings:
        return False  # an empty batch is no reading
    try:
        for reading in readings:
            READING_MODELS[kind].model_validate(reading)
    except ValueError:
        return False
    return True


def test_the_malformed_payloads_are_of_many_kinds() -> None:
    payloads = [e.payload for e in chaos() if e.fault == "malformed"]
    assert b"" in payloads
    assert any(b"NaN" in p or b"nan" in p or b"Infinity" in p for p in payloads)
    assert any(p.startswith(b"\xff") for p in payloads)


def test_unknown_devices_are_dead_lettered_but_sent_by_a_real_device() -> None:
    unknown = [e for e in chaos() if e.fault == "unknown-device"]
    assert unknown
    for emission in unknown:
        assert emission.topic.split("/")[2] != emission.device_id
        assert catalog().get(emission.device_id) is not None
        assert decode(emission).dead == 1


def test_the_chaos_scenario_emits_every_fault() -> None:
    assert {e.fault for e in chaos()} == {None, *FAULT_NAMES}


def test_without_faults_nothing_is_faulted() -> None:
    for name in BUNDLED[1:]:
        assert {e.fault for e in emissions_of(name)} == {None}


# --- each fault -------------------------------------------------------------------------


def by_device(emissions: Sequence[Emission]) -> dict[str, list[Emission]]:
    grouped: dict[str, list[Emission]] = defaultdict(list)
    for emission in emissions:
        grouped[emission.device_id].append(emission)
    return grouped


def test_valid_readings_keep_contiguous_seqs_whatever_the_faults() -> None:
    for emissions in by_device(chaos()).values():
        seqs = {reading["seq"] for e in emissions if e.readings for reading in items(e)}
        assert seqs == set(range(len(seqs)))


def test_a_duplicate_repeats_a_reading_already_sent() -> None:
    for emissions in by_device(with_only("duplicate", 0.05)).values():
        sent: set[bytes] = set()
        for emission in emissions:
            if emission.fault == "duplicate":
                assert emission.payload in sent
            sent.add(emission.payload)


def test_an_out_of_order_reading_arrives_after_a_later_one() -> None:
    found = 0
    for emissions in by_device(with_only("out-of-order", 0.05)).values():
        for before, late in itertools.pairwise(emissions):
            if late.fault == "out-of-order":
                assert items(late)[0]["seq"] == items(before)[0]["seq"] - 1
                found += 1
    assert found > 10


def test_store_and_forward_sends_the_kept_readings_as_batches_after_reconnecting() -> None:
    emissions = with_only("store-and-forward", 0.01, duration_s=1800)
    batches = [e for e in emissions if e.payload.startswith(b"[")]
    assert batches
    for batch in batches:
        readings = items(batch)
        assert batch.readings == len(readings) <= MAX_BATCH
        seqs = [r["seq"] for r in readings]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert all(r["ts"] < batch.sim_time_s + 1e-3 for r in readings)


def test_a_long_outage_is_forwarded_in_batches_within_spec_limits() -> None:
    # Readings every second for two hours offline: 7,200 readings, several batches.
    scenario = load_scenario("normal-day").with_intervals(1).with_duration(timedelta(hours=3))
    scenario = scenario.with_faults(FaultRates().with_fault("store-and-forward", 0.001, 7200))
    selection = DeviceSelection(ids=("dki1-bundaran-hi",))
    simulation = Simulation(catalog(), replace(scenario, devices=selection), 3)
    batches = [e for e in simulation.emissions() if e.payload.startswith(b"[")]
    assert len(batches) >= 8
    assert all(e.readings <= MAX_BATCH and len(e.payload) <= MAX_PAYLOAD for e in batches)


def test_dropouts_and_outages_go_offline_and_come_back_online() -> None:
    for fault in ("dropout", "store-and-forward"):
        for emissions in by_device(with_only(fault, 0.01, duration_s=1800)).values():
            statuses = [e.payload for e in emissions if e.retain]
            assert all(e.fault == fault for e in emissions if e.retain)
            assert statuses[: len(statuses) // 2 * 2] == [b"offline", b"online"] * (
                len(statuses) // 2
            )


def test_a_draining_battery_falls_below_the_soft_flag_then_browns_out() -> None:
    emissions = with_only("battery", 0.02, hours=12, duration_s=4 * 3600)
    volts = [r["battery_v"] for e in emissions if e.fault == "battery" and e.readings
             for r in items(e)]  # fmt: skip
    assert min(volts) < 3.3 < max(volts)  # jakarta.md section 5
    assert any(e.retain and e.payload == b"offline" for e in emissions if e.fault == "battery")


def test_a_skewed_clock_stays_within_five_minutes() -> None:
    skewed = [e for e in with_only("skew", 0.02) if e.fault == "skew"]
    assert skewed
    for emission in skewed:
        offset = items(emission)[0]["ts"] - emission.sim_time_s
        assert 29 <= abs(offset) <= 241


def test_a_stuck_sensor_repeats_its_values() -> None:
    for emissions in by_device(with_only("stuck", 0.01, duration_s=3600)).values():
        stuck = [items(e)[0] for e in emissions if e.fault == "stuck"]
        main = {"water-level": "level_cm", "air-quality": "pm25", "traffic": "speed_kmh"}
        field = main[emissions[0].kind.value]
        assert len(stuck) > 10
        assert len({r[field] for r in stuck}) < len(stuck) / 10


def test_a_spike_stays_within_physical_bounds() -> None:
    spikes = [e for e in with_only("spike", 0.05) if e.fault == "spike"]
    assert spikes
    for emission in spikes:
        READING_MODELS[emission.kind].model_validate(items(emission)[0])


def test_faults_never_change_what_the_devices_measure() -> None:
    clean = {e.payload for e in with_only("spike", 0.0)}
    faulty = with_only("spike", 0.05)
    untouched = [e for e in faulty if e.fault is None]
    assert untouched and all(e.payload in clean for e in untouched)


def test_the_same_seed_gives_the_same_faults() -> None:
    assert with_only("malformed", 0.05) == with_only("malformed", 0.05)


# --- the switches -----------------------------------------------------------------------


def test_every_fault_is_off_by_default() -> None:
    assert FaultRates().enabled() == ()


def test_every_switches_every_fault_on_with_default_durations() -> None:
    faults = FaultRates.every(0.1)
    assert faults.enabled() == FAULT_NAMES
    assert faults.get("store-and-forward").duration_s == FaultRates().store_and_forward.duration_s


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_a_rate_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="chance per reading"):
        Fault(rate)
