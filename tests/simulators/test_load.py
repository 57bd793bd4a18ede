"""Load mode: synthetic devices, a fixed aggregate rate, a bounded window, counted acks."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from devices.detections import validate_event
from devices.kinds import Kind
from devices.readings import READING_MODELS
from devices.registry import load_catalog
from devices.topics import TopicScheme
from siaga.sandbox.mosquitto import Mosquitto
from simulators.cameraload import synthetic_cameras
from simulators.fleet import FleetConfigError
from simulators.load import (
    LoadConfig,
    LoadRun,
    _stream,
    _tenths,
    synthetic_devices,
    write_catalog,
)
from simulators.summary import Count
from tests.integration.support import simulator_address
from tests.polling import eventually
from tests.simulators.collector import Collector
from tests.simulators.fakes import FakeClock, Opener

NOW = 1_700_000_000.0


def run_of(count: int, clock: FakeClock, opener: Opener, **config: Any) -> LoadRun:
    return LoadRun(synthetic_devices(count), LoadConfig(**config), clock=clock,
                   open_outlets=opener)


def bodies(opener: Opener) -> Iterator[tuple[str, Any]]:
    for outlet in opener.opened[0].connections:
        for sent in outlet.sent:
            yield sent.topic, orjson.loads(sent.payload)


def test_synthetic_devices_are_numbered_and_take_the_kinds_in_turn() -> None:
    devices = synthetic_devices(4)
    assert [d.id for d in devices] == ["load-000001", "load-000002", "load-000003",
                                       "load-000004"]
    assert [d.kind for d in devices] == [Kind.WATER_LEVEL, Kind.AIR_QUALITY, Kind.TRAFFIC,
                                         Kind.WATER_LEVEL]
    assert len({(d.lat, d.lon) for d in devices}) == 4


def test_a_written_catalog_loads_back_as_the_same_devices(tmp_path: Path) -> None:
    devices = synthetic_devices(30, expected_interval_s=2.5)
    write_catalog(devices, tmp_path / "load.yaml")
    registry = load_catalog(tmp_path / "load.yaml")
    assert list(registry) == devices


@pytest.mark.parametrize("count", [0, 1_000_000])
def test_a_device_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(FleetConfigError):
        synthetic_devices(count)


@pytest.mark.parametrize("overrides", [{"rate": 0.0}, {"batch": 0}, {"batch": 1001},
                                       {"window": 0}, {"qos": 2}, {"duration_s": -1.0}])
def test_a_config_out_of_range_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(FleetConfigError):
        LoadConfig(**overrides)


async def test_the_rate_holds_over_the_duration() -> None:
    clock = FakeClock(epoch=NOW)
    opener = Opener(clock)
    summary = await run_of(30, clock, opener, rate=500.0, duration_s=4.0).run()
    assert 1950 <= summary.readings <= 2000  # 500/s for 4 s, less the first tick
    assert summary.rate == pytest.approx(500, rel=0.05)


async def test_batches_carry_the_batch_size_in_readings() -> None:
    clock = FakeClock(epoch=NOW)
    opener = Opener(clock)
    summary = await run_of(6, clock, opener, rate=600.0, batch=10, duration_s=1.0).run()
    assert summary.readings == 10 * summary.messages > 0
    for _, body in bodies(opener):
        assert isinstance(body, list) and len(body) == 10
        stamps = [reading["ts"] for reading in body]
        assert stamps == sorted(set(stamps))


async def test_the_window_bounds_what_is_unacknowledged() -> None:
    clock = FakeClock(epoch=NOW)
    opener = Opener(clock, window=8)
    summary = await run_of(30, clock, opener, rate=None, duration_s=0.01).run()
    assert summary.messages >= 10 * 8  # ten round trips of a millisecond, a window each
    assert max(outlet.max_in_flight for outlet in opener.opened[0].connections) == 8


async def test_readings_are_valid_with_contiguous_seqs_per_device() -> None:
    clock = FakeClock(epoch=NOW)
    opener = Opener(clock)
    run = run_of(9, clock, opener, rate=900.0, duration_s=1.0)
    await run.run()
    seqs: dict[str, list[int]] = defaultdict(list)
    for topic, body in bodies(opener):
        kind, device = topic.split("/")[1:3]
        READING_MODELS[Kind(kind)].model_validate(body)
        seqs[device].append(body["seq"])
    assert seqs == {device: list(range(last + 1)) for device, last in run.last_seq().items()}


def test_a_stream_stamps_microseconds_a_microsecond_apart_at_least() -> None:
    # One of each kind, and a reservoir gauge whose normal band is below zero.
    pluit = synthetic_devices(1)[0].model_copy(
        update={"thresholds": {"normal_low_cm": -190.0, "normal_high_cm": -110.0}})
    for device in [*synthetic_devices(3), pluit]:
        stream = _stream(device, TopicScheme("t"))
        times = [NOW, NOW, NOW + 4e-7, NOW + 0.0123456789, NOW + 0.0123456789]
        made = [*stream.readings(times, random.Random(1)), stream.reading(NOW, random.Random(2))]
        micros = [round(reading["ts"] * 1e6) for reading in made]  # type: ignore[operator]
        assert [reading["ts"] for reading in made] == [micro / 1e6 for micro in micros]
        assert micros == [round(NOW * 1e6) + step for step in (0, 1, 2)] + [
            round((NOW + 0.0123456789) * 1e6) + step for step in (0, 1, 2)]
        assert [reading["seq"] for reading in made] == list(range(6))
        for reading in made:
            model = READING_MODELS[device.kind].model_validate(reading)
            value = next(v for k, v in reading.items() if k not in ("ts", "seq"))
            assert isinstance(value, float), model
            assert stream.low <= value <= stream.high and round(value, 1) == value


def test_values_are_rounded_to_the_nearest_tenth_either_side_of_zero() -> None:
    assert [_tenths(v) for v in (-150.06, -150.04, 150.06, 150.04, -0.04)] == [
        -150.1, -150.0, 150.1, 150.0, 0.0]


async def test_the_same_seed_gives_the_same_payloads() -> None:
    payloads = []
    for _ in range(2):
        clock = FakeClock(epoch=NOW)
        opener = Opener(clock)
        await run_of(6, clock, opener, rate=100.0, duration_s=1.0, seed=7).run()
        payloads.append(list(bodies(opener)))
    assert payloads[0] == payloads[1]


# --- against a real Mosquitto -----------------------------------------------------------------


@pytest.fixture
def collector(mosquitto: Mosquitto) -> Iterator[tuple[str, Collector]]:
    prefix = f"loadtest{uuid.uuid4().hex[:8]}"
    collector = Collector(mosquitto, prefix)
    yield prefix, collector
    collector.close()


def config(mosquitto: Mosquitto, prefix: str, **overrides: Any) -> LoadConfig:
    settings: dict[str, Any] = {"address": simulator_address(mosquitto),
                                "topic_prefix": prefix, "client_id": prefix}
    return LoadConfig(**(settings | overrides))


def readings_received(collector: Collector) -> int:
    count = 0
    for _, payload, _ in collector.received("telemetry"):
        body = orjson.loads(payload)
        count += len(body) if isinstance(body, list) else 1
    return count


@pytest.mark.integration
async def test_the_acknowledged_count_is_what_a_subscriber_received(
    mosquitto: Mosquitto, collector: tuple[str, Collector]
) -> None:
    prefix, received = collector
    summary = await LoadRun(synthetic_devices(300),
                            config(mosquitto, prefix, rate=None, duration_s=1.0)).run()
    assert summary.acknowledged_messages == summary.messages > 1000
    await eventually(lambda: len(received.received("telemetry")) >= summary.messages)
    assert len(received.received("telemetry")) == summary.acknowledged_messages
    await eventually(lambda: len(received.received("status")) >= 2 * 300)  # online, offline
    assert summary.status_messages == len(received.received("status")) == 2 * 300


@pytest.mark.integration
async def test_a_small_window_and_batches_lose_nothing(
    mosquitto: Mosquitto, collector: tuple[str, Collector]
) -> None:
    prefix, received = collector
    summary = await LoadRun(synthetic_devices(50), config(
        mosquitto, prefix, rate=None, duration_s=0.5, window=8, batch=20, status=False)).run()
    assert summary.acknowledged_readings == summary.readings == 20 * summary.messages > 160
    await eventually(lambda: readings_received(received) >= summary.readings)
    assert readings_received(received) == summary.acknowledged_readings


@pytest.mark.integration
async def test_a_broker_restart_mid_run_is_survived_and_every_reading_acknowledged(
    tmp_path: Path
) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        run = LoadRun(synthetic_devices(30), LoadConfig(
            simulator_address(broker), rate=500.0, duration_s=4.0,
            status=False))

        async def restart_broker() -> None:
            await eventually(lambda: run.snapshot().acknowledged_messages > 200)
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)

        async with asyncio.TaskGroup() as group:
            group.create_task(restart_broker())
            summary = await run.run()
    assert summary.acknowledged == summary.sent  # resent after reconnecting, then acknowledged
    assert summary.messages > 1000


# --- cameras ----------------------------------------------------------------------------------


def camera_run(devices: int, cameras: int, clock: FakeClock, opener: Opener,
               **config: Any) -> LoadRun:
    fleet = [*(synthetic_devices(devices) if devices else []),
             *synthetic_cameras(cameras, centre=(-6.2, 106.8))]
    return LoadRun(fleet, LoadConfig(**config), clock=clock, open_outlets=opener)


def test_synthetic_cameras_are_numbered_cameras_that_load_back(tmp_path: Path) -> None:
    cameras = synthetic_cameras(3, centre=(-6.2, 106.8))
    assert [c.id for c in cameras] == ["load-cam-000001", "load-cam-000002", "load-cam-000003"]
    write_catalog([*synthetic_devices(3), *cameras], tmp_path / "load.yaml")
    assert list(load_catalog(tmp_path / "load.yaml")) == [*synthetic_devices(3), *cameras]


async def test_cameras_send_their_counts_every_ten_seconds_and_detections() -> None:
    clock = FakeClock(epoch=NOW)
    opener = Opener(clock)
    summary = await camera_run(0, 100, clock, opener, duration_s=60.0).run()
    # 100 cameras every 10 s for a minute, less the first tick.
    assert 590 <= summary.by_kind()["camera"].readings <= 600
    detections = summary.by_kind()["camera-events"]
    # 24 detections a camera an hour: 40 in a minute, a new and an end each.
    assert 76 <= detections.messages <= 80 and detections.readings == 0
    for topic, body in bodies(opener):
        if topic.endswith("/events"):
            event = validate_event(body)
            assert (event.plate is not None) == (event.label == "plate")
        else:
            READING_MODELS[Kind.CAMERA].model_validate(body)


async def test_cameras_leave_the_rate_of_the_other_devices_as_it_was() -> None:
    figures = []
    for cameras in (0, 50):
        clock = FakeClock(epoch=NOW)
        opener = Opener(clock)
        summary = await camera_run(30, cameras, clock, opener, rate=500.0, duration_s=4.0).run()
        figures.append(summary.readings - summary.by_kind().get("camera", Count()).readings)
    assert 1950 <= figures[0] == figures[1] <= 2000
