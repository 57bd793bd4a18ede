"""Simulated readings: valid per SPEC, deterministic by seed, shaped like Jakarta's days."""

import itertools
import random
import statistics
from collections import defaultdict
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.kinds import Kind
from devices.readings import READING_MODELS
from devices.registry import Device, Registry, bundled_catalog_path, load_catalog
from devices.timestamps import MAX_EPOCH_S, MIN_EPOCH_S
from simulators import Simulation, behaviour_for, generate
from simulators.behaviours import FALLBACK_NORMAL_CM, WIB_OFFSET_S, normal_range

DAY_START_S = 1_704_067_200.0 - WIB_OFFSET_S  # 2024-01-01 00:00 in Jakarta (WIB)
HOUR_S = 3600.0


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_catalog(bundled_catalog_path())


def kind_of(registry: Registry, topic: str) -> Kind:
    device = registry.get(topic.split("/")[2])
    assert device is not None
    return device.kind


def a_device(registry: Registry, kind: Kind) -> Device:
    return next(device for device in registry if device.kind == kind)


def readings_at(
    registry: Registry, kind: Kind, hour: float, seeds: range
) -> Iterator[dict[str, object]]:
    """One reading per device of `kind` and seed, at `hour` in Jakarta."""
    for seed in seeds:
        simulation = Simulation(registry, seed)
        for stream in simulation.streams:
            if stream.device.kind == kind:
                yield simulation.reading(stream, DAY_START_S + hour * HOUR_S)


def test_every_generated_reading_is_valid_for_its_kind(registry: Registry) -> None:
    # Five simulated days, every device every 10 minutes: all hours, many random draws.
    count = len(registry) * 6 * 24 * 5
    for topic, payload in generate(registry, count, seed=7, start_s=DAY_START_S, interval_s=600):
        # Through JSON, as the service receives it.
        READING_MODELS[kind_of(registry, topic)].model_validate(orjson.loads(orjson.dumps(payload)))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    # Within the years a reading's `ts` may carry (devices.timestamps: 2000-2100).
    start_s=st.floats(MIN_EPOCH_S, MAX_EPOCH_S - 10 * 86_400),
    interval_s=st.floats(0, 86_400),
)
def test_readings_are_valid_whatever_the_seed_and_time(
    registry: Registry, seed: int, start_s: float, interval_s: float
) -> None:
    count = len(registry) * 4
    for topic, payload in generate(registry, count, seed, start_s, interval_s=interval_s):
        READING_MODELS[kind_of(registry, topic)].model_validate(orjson.loads(orjson.dumps(payload)))


def test_every_kind_of_the_catalog_is_simulated(registry: Registry) -> None:
    topics = [topic for topic, _ in generate(registry, len(registry), 1, DAY_START_S)]
    assert {kind_of(registry, topic) for topic in topics} == set(Kind)


def test_topics_follow_the_spec_scheme(registry: Registry) -> None:
    for topic, _ in generate(registry, len(registry), 1, DAY_START_S):
        prefix, kind, device_id, leaf = topic.split("/")
        assert (prefix, leaf) == ("siaga", "telemetry")
        assert registry.get(device_id) is not None
        assert kind == kind_of(registry, topic)


def test_the_same_seed_gives_the_same_readings(registry: Registry) -> None:
    first = list(generate(registry, 500, seed=3, start_s=DAY_START_S))
    again = list(generate(registry, 500, seed=3, start_s=DAY_START_S))
    assert first == again


def test_another_seed_gives_other_readings(registry: Registry) -> None:
    first = list(generate(registry, 500, seed=3, start_s=DAY_START_S))
    other = list(generate(registry, 500, seed=4, start_s=DAY_START_S))
    assert first != other


def test_sequence_numbers_count_from_zero_per_device(registry: Registry) -> None:
    seqs: dict[str, list[object]] = defaultdict(list)
    for topic, payload in generate(registry, len(registry) * 5, 1, DAY_START_S):
        seqs[topic].append(payload["seq"])
    assert all(found == [0, 1, 2, 3, 4] for found in seqs.values())


def test_timestamps_of_a_device_strictly_increase_even_when_asked_for_the_same_time(
    registry: Registry,
) -> None:
    stream_stamps: dict[str, list[float]] = defaultdict(list)
    for topic, payload in generate(registry, len(registry) * 50, 1, DAY_START_S, interval_s=0):
        ts = payload["ts"]
        assert isinstance(ts, float)
        stream_stamps[topic].append(ts)
    for stamps in stream_stamps.values():
        assert all(a < b for a, b in itertools.pairwise(stamps))


def test_water_levels_stay_inside_the_gauges_normal_range(registry: Registry) -> None:
    for topic, payload in generate(registry, len(registry) * 300, 5, DAY_START_S):
        device = registry.get(topic.split("/")[2])
        assert device is not None
        if device.kind == Kind.WATER_LEVEL:
            low, high = normal_range(device)
            level = payload["level_cm"]
            assert isinstance(level, float)
            assert low <= level <= high


def test_a_gauge_without_a_normal_range_walks_in_the_fallback_range(registry: Registry) -> None:
    gauge = a_device(registry, Kind.WATER_LEVEL)
    bare = Device(id="bare", kind=Kind.WATER_LEVEL, name="Bare gauge", lat=gauge.lat,
                  lon=gauge.lon, labels={}, thresholds={}, expected_interval_s=None)
    behaviour, rng = behaviour_for(Kind.WATER_LEVEL), random.Random(1)
    low, high = FALLBACK_NORMAL_CM
    for step in range(500):
        level = behaviour.next_reading(bare, DAY_START_S + step, rng)["level_cm"]
        assert isinstance(level, float)
        assert low <= level <= high


def mean_of(registry: Registry, kind: Kind, field: str, hour: float) -> float:
    values = [r[field] for r in readings_at(registry, kind, hour, range(40))]
    return statistics.fmean(v for v in values if isinstance(v, float | int))


def test_pm25_is_higher_at_seven_than_at_fifteen(registry: Registry) -> None:
    assert mean_of(registry, Kind.AIR_QUALITY, "pm25", 7) > 1.5 * mean_of(
        registry, Kind.AIR_QUALITY, "pm25", 15
    )


def test_pm10_is_never_below_pm25(registry: Registry) -> None:
    for hour in range(24):
        for reading in readings_at(registry, Kind.AIR_QUALITY, hour, range(5)):
            assert reading["pm10"] >= reading["pm25"]  # type: ignore[operator]  # both floats


def test_traffic_is_slower_at_eight_than_at_eleven(registry: Registry) -> None:
    assert mean_of(registry, Kind.TRAFFIC, "speed_kmh", 8) < mean_of(
        registry, Kind.TRAFFIC, "speed_kmh", 11
    )


def test_traffic_is_slower_where_occupancy_is_higher(registry: Registry) -> None:
    readings = [
        r for hour in range(24) for r in readings_at(registry, Kind.TRAFFIC, hour, range(3))
    ]
    readings.sort(key=lambda r: r["occupancy_pct"])  # type: ignore[arg-type,return-value]
    third = len(readings) // 3
    emptiest, fullest = readings[:third], readings[-third:]
    assert statistics.fmean(r["speed_kmh"] for r in emptiest) > statistics.fmean(  # type: ignore[misc]
        r["speed_kmh"] for r in fullest  # type: ignore[misc]
    )


def test_battery_and_signal_strength_come_with_some_readings_only(registry: Registry) -> None:
    payloads = [payload for _, payload in generate(registry, 2000, 2, DAY_START_S)]
    with_battery = sum("battery_v" in payload for payload in payloads)
    with_rssi = sum("rssi_dbm" in payload for payload in payloads)
    assert 0 < with_battery < len(payloads) / 2
    assert 0 < with_rssi < len(payloads) / 2


def test_a_device_reads_the_same_whatever_other_devices_run(registry: Registry) -> None:
    gauge = a_device(registry, Kind.WATER_LEVEL)
    alone = Simulation(Registry([gauge]), seed=9)
    together = Simulation(registry, seed=9)
    stream_alone = alone.streams[0]
    stream_together = next(s for s in together.streams if s.device.id == gauge.id)
    for step in range(20):
        at = DAY_START_S + step * 60
        assert alone.reading(stream_alone, at) == together.reading(stream_together, at)
