"""The fleet runner against a real Mosquitto: what it says was acknowledged arrived, in order."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.kinds import Kind
from devices.readings import READING_MODELS
from devices.registry import Registry, bundled_catalog_path, load_catalog
from simulators import BrokerUnavailable, Fleet, FleetConfig, FleetConfigError, FleetSummary


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_catalog(bundled_catalog_path())


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test alone, so tests sharing the broker never see each other."""
    return f"simtest{uuid.uuid4().hex[:8]}"


class Collector:
    """A paho subscriber that keeps every message it receives under `prefix`."""

    def __init__(self, port: int, prefix: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retained
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"{prefix}/#", qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("no SUBACK within 10 s")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def received(self, channel: str) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].endswith("/" + channel)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def collect(mosquitto: Any, prefix: str) -> Iterator[Callable[[], Collector]]:
    collectors: list[Collector] = []

    def start() -> Collector:
        collectors.append(Collector(mosquitto.port, prefix))
        return collectors[-1]

    yield start
    for collector in collectors:
        collector.close()


def config(port: int, prefix: str, **overrides: Any) -> FleetConfig:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": port, "topic_prefix": prefix,
                                "rate": 200.0, "duration_s": 1.0, "seed": 1}
    return FleetConfig(**(settings | overrides))


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


def readings_by_device(collector: Collector) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, payload, _ in collector.received("telemetry"):
        body = orjson.loads(payload)
        found[topic.split("/")[2]].extend(body if isinstance(body, list) else [body])
    return found


def expected_readings(summary: FleetSummary) -> int:
    return sum(last + 1 for last in summary.last_seq.values())


@pytest.mark.integration
async def test_every_acknowledged_reading_arrives_with_contiguous_seqs(
    mosquitto: Any, prefix: str, collect: Callable[[], Collector], registry: Registry
) -> None:
    collector = collect()
    summary = await Fleet(registry, config(mosquitto.port, prefix)).run()

    assert summary.acknowledged == summary.published == expected_readings(summary)
    assert 150 <= summary.published <= 250  # 200/s for 1 s, give or take a tick
    await eventually(lambda: len(collector.received("telemetry")) >= summary.messages)
    found = readings_by_device(collector)
    assert {device: [r["seq"] for r in readings] for device, readings in found.items()} == {
        device: list(range(last + 1)) for device, last in summary.last_seq.items()
    }


@pytest.mark.integration
async def test_published_readings_validate_on_the_wire(
    mosquitto: Any, prefix: str, collect: Callable[[], Collector], registry: Registry
) -> None:
    collector = collect()
    summary = await Fleet(registry, config(mosquitto.port, prefix, rate=500.0)).run()
    await eventually(lambda: len(collector.received("telemetry")) >= summary.messages)
    for topic, payload, _ in collector.received("telemetry"):
        READING_MODELS[Kind(topic.split("/")[1])].model_validate(orjson.loads(payload))


@pytest.mark.integration
async def test_batches_are_json_arrays_of_one_devices_readings(
    mosquitto: Any, prefix: str, collect: Callable[[], Collector], registry: Registry
) -> None:
    collector = collect()
    summary = await Fleet(registry, config(mosquitto.port, prefix, rate=1000.0, batch=10)).run()
    await eventually(lambda: len(collector.received("telemetry")) >= summary.messages)
    bodies = [orjson.loads(payload) for _, payload, _ in collector.received("telemetry")]
    assert bodies and all(isinstance(body, list) and len(body) == 10 for body in bodies)
    assert summary.acknowledged == 10 * summary.messages == expected_readings(summary)
    for readings in readings_by_device(collector).values():
        stamps = [reading["ts"] for reading in readings]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


@pytest.mark.integration
async def test_devices_are_online_while_running_and_offline_after(
    mosquitto: Any, prefix: str, collect: Callable[[], Collector], registry: Registry
) -> None:
    collector = collect()
    await Fleet(registry, config(mosquitto.port, prefix, duration_s=0.2)).run()
    await eventually(lambda: len(collector.received("status")) >= 2 * len(registry))
    statuses = collector.received("status")
    assert {payload for _, payload, _ in statuses[: len(registry)]} == {b"online"}
    assert {payload for _, payload, _ in statuses[len(registry) :]} == {b"offline"}

    late = collect()  # a newcomer gets the retained status of every device
    await eventually(lambda: len(late.received("status")) >= len(registry))
    assert {(payload, retained) for _, payload, retained in late.received("status")} == {
        (b"offline", True)
    }


@pytest.mark.integration
async def test_setting_stop_ends_the_run(
    mosquitto: Any, prefix: str, registry: Registry
) -> None:
    stop = asyncio.Event()
    fleet = Fleet(registry, config(mosquitto.port, prefix, duration_s=None))
    asyncio.get_running_loop().call_later(0.3, stop.set)
    summary = await asyncio.wait_for(fleet.run(stop), 10)
    assert 0 < summary.acknowledged == summary.published
    assert summary.elapsed_s < 5


@pytest.mark.integration
async def test_progress_is_reported_about_once_a_second(
    mosquitto: Any, prefix: str, registry: Registry
) -> None:
    seen: list[FleetSummary] = []
    fleet = Fleet(registry, config(mosquitto.port, prefix, duration_s=2.5, on_progress=seen.append))
    summary = await fleet.run()
    assert 1 <= len(seen) <= 3
    assert all(0 < s.published <= summary.published for s in seen)


@pytest.mark.integration
async def test_a_window_smaller_than_a_burst_still_loses_nothing(
    mosquitto: Any, prefix: str, collect: Callable[[], Collector], registry: Registry
) -> None:
    collector = collect()
    summary = await Fleet(registry, config(mosquitto.port, prefix, rate=None, duration_s=0.5,
                                           window=8, status=False)).run()
    assert summary.acknowledged == summary.published == expected_readings(summary) > 8
    await eventually(lambda: len(collector.received("telemetry")) >= summary.messages)
    assert sum(map(len, readings_by_device(collector).values())) == summary.published


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_an_unreachable_broker_raises_broker_unavailable(registry: Registry) -> None:
    with pytest.raises(BrokerUnavailable):
        await Fleet(registry, config(free_port(), "unused")).run()


@pytest.mark.parametrize(
    "overrides",
    [{"rate": 0.0}, {"rate": float("nan")}, {"batch": 0}, {"batch": 1001}, {"qos": 2},
     {"window": 0}, {"window": 70_000}, {"duration_s": -1.0}, {"port": 0}],
)
def test_a_config_out_of_range_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(FleetConfigError):
        FleetConfig(**overrides)


class FixedClock:
    """Simulated time that stands still: the fleet must still stamp each reading apart."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


@pytest.mark.integration
async def test_readings_carry_the_time_of_the_injected_clock(
    mosquitto: Any, prefix: str, collect: Callable[[], Collector], registry: Registry
) -> None:
    collector = collect()
    fleet = Fleet(registry, config(mosquitto.port, prefix, duration_s=0.3), FixedClock(1e9))
    summary = await fleet.run()
    await eventually(lambda: len(collector.received("telemetry")) >= summary.messages)
    for readings in readings_by_device(collector).values():
        stamps = [reading["ts"] for reading in readings]
        assert all(1e9 <= ts < 1e9 + 1 for ts in stamps)
        assert stamps == sorted(set(stamps))


@pytest.mark.integration
async def test_qos_0_readings_are_counted_once_sent(
    mosquitto: Any, prefix: str, collect: Callable[[], Collector], registry: Registry
) -> None:
    collector = collect()
    summary = await Fleet(registry, config(mosquitto.port, prefix, qos=0, duration_s=0.5)).run()
    assert summary.acknowledged == summary.published == expected_readings(summary) > 0
    # Over loopback nothing is lost, even at QoS 0.
    await eventually(lambda: len(collector.received("telemetry")) >= summary.messages)
