"""The fleet runner: publishes the simulated devices' readings over MQTT at a set rate."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from devices.registry import Registry
from devices.topics import TopicScheme
from simulators.clock import Clock, SimClock
from simulators.connection import MAX_WINDOW, BrokerAddress, SharedConnection
from simulators.errors import SimulatorError
from simulators.simulation import DeviceStream, Payload, Simulation

TICK_S = 0.01  # the schedule wakes 100 times a second: smooth at any rate, cheap when idle
MAX_BURST_S = 1.0  # after a stall, catch up at most one second of readings, not a flood
CHUNK = 500  # messages published between two yields to the event loop
PROGRESS_EVERY_S = 1.0
DRAIN_TIMEOUT_S = 10.0  # at the end, how long to wait for the broker's last PUBACKs
MAX_BATCH = 1000  # SPEC section 1: a batch holds at most 1000 readings
DEFAULT_WINDOW = 10_000  # unacknowledged messages: ample for a local broker, far below paho's limit
ONLINE, OFFLINE = b"online", b"offline"


class FleetConfigError(SimulatorError, ValueError):
    """A fleet configuration value is out of range."""


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """What a run published, and what the broker acknowledged, so far or in the end."""

    published: int  # readings handed to the connection
    acknowledged: int  # readings in messages the broker acknowledged (QoS 0: sent)
    messages: int  # telemetry messages (one per reading unless batching)
    status_messages: int
    rejected: int  # messages refused by the broker (MQTT 5 only) or lost offline at QoS 0
    published_by_kind: dict[str, int]
    acknowledged_by_kind: dict[str, int]
    last_seq: dict[str, int]  # device id -> the last seq published (seqs run from 0)
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Acknowledged readings per second achieved."""
        return self.acknowledged / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        by_kind = sorted(self.acknowledged_by_kind.items())
        kinds = ", ".join(f"{kind} {count}" for kind, count in by_kind)
        return (
            f"{self.acknowledged} of {self.published} readings acknowledged in {self.messages} "
            f"messages over {self.elapsed_s:.1f} s ({self.rate:,.0f}/s; {kinds or 'none'}), "
            f"{len(self.last_seq)} devices, {self.status_messages} status messages"
            + (f", {self.rejected} rejected" if self.rejected else "")
        )


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """How the fleet connects, what it publishes and how fast."""

    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # kept out of logs
    tls: bool = False
    topic_prefix: str = "siaga"
    rate: float | None = 10.0  # readings per second, all devices together; None: flat out
    duration_s: float | None = None  # None: until `stop` is set
    seed: int = 0
    qos: int = 1
    batch: int = 1  # readings per message; above 1, a JSON array as store-and-forward devices send
    status: bool = True  # retained `online` per device at the start, `offline` at the end
    window: int = DEFAULT_WINDOW
    client_id: str | None = None  # None: a unique one per run
    on_progress: Callable[[FleetSummary], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.rate is None or (math.isfinite(self.rate) and self.rate > 0), "rate must be > 0"),
            (self.duration_s is None or self.duration_s >= 0, "duration_s must be >= 0"),
            (self.qos in (0, 1), "qos must be 0 or 1"),
            (1 <= self.batch <= MAX_BATCH, f"batch must be within 1..{MAX_BATCH}"),
            (1 <= self.window <= MAX_WINDOW, f"window must be within 1..{MAX_WINDOW}"),
            (0 < self.port < 65536, "port must be within 1..65535"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise FleetConfigError("; ".join(errors))

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, self.username, self.password, self.tls)


class _TokenBucket:
    """Readings allowed so far at `rate` per second, holding at most `capacity` in reserve."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self._rate, self._capacity = rate, capacity
        self._tokens, self._last = 0.0, now

    def available(self, now: float) -> int:
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        return int(self._tokens)

    def spend(self, count: int) -> None:
        self._tokens -= count


class Fleet:
    """Every device of a registry publishing over one shared MQTT connection."""

    def __init__(self, registry: Registry, config: FleetConfig, clock: Clock | None = None) -> None:
        self._config = config
        self._clock = clock if clock is not None else SimClock()
        self._topics = TopicScheme(config.topic_prefix)
        self._simulation = Simulation(registry, config.seed, self._topics)
        self._streams = self._simulation.streams
        self._next = 0  # round-robin cursor into the streams
        self._messages = 0
        self._status_messages = 0
        self._published_by_kind: Counter[str] = Counter()
        self._started = time.monotonic()
        if not self._streams:
            raise FleetConfigError("the registry has no devices to simulate")

    async def run(self, stop: asyncio.Event | None = None) -> FleetSummary:
        """Publishes until `duration_s` has passed or `stop` is set; returns what happened."""
        config = self._config
        client_id = config.client_id or f"siaga-sim-{os.getpid()}-{secrets.token_hex(3)}"
        async with SharedConnection(config.address, client_id, config.window, config.qos) as conn:
            self._started = time.monotonic()
            if config.status:
                await self._publish_status(conn, ONLINE)
            await self._publish_readings(conn, stop or asyncio.Event())
            if config.status:
                await self._publish_status(conn, OFFLINE)
            await conn.drain(DRAIN_TIMEOUT_S)
            return self._summary(conn)

    async def _publish_status(self, conn: SharedConnection, status: bytes) -> None:
        for stream in self._streams:
            if conn.room() <= 0 and not await conn.wait_for_room(DRAIN_TIMEOUT_S):
                return  # the broker stopped acknowledging: the summary shows what was sent
            device = stream.device
            topic = self._topics.status(device.kind, device.id)
            conn.publish(topic, status, kind=None, readings=0, retain=True)
            self._status_messages += 1

    async def _publish_readings(self, conn: SharedConnection, stop: asyncio.Event) -> None:
        config = self._config
        started = self._started
        deadline = math.inf if config.duration_s is None else started + config.duration_s
        bucket = None
        if config.rate is not None:
            capacity = max(config.rate * MAX_BURST_S, float(config.batch))
            bucket = _TokenBucket(config.rate, capacity, started)
        next_progress = started + PROGRESS_EVERY_S
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            allowed = CHUNK if bucket is None else bucket.available(now) // config.batch
            count = min(allowed, conn.room(), CHUNK)
            self._publish_messages(conn, count)
            if bucket is not None:
                bucket.spend(count * config.batch)
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_S
                self._report_progress(conn)
            await self._pause(conn, full=conn.room() <= 0, idle=count < CHUNK)

    async def _pause(self, conn: SharedConnection, full: bool, idle: bool) -> None:
        """Waits for PUBACKs when the window is full, for the next tick when caught up."""
        if full:
            await conn.wait_for_room(TICK_S)
        elif idle and self._config.rate is not None:
            await asyncio.sleep(TICK_S)
        else:
            await asyncio.sleep(0)  # let other tasks (and the stop event) run between chunks

    def _publish_messages(self, conn: SharedConnection, count: int) -> None:
        batch = self._config.batch
        for _ in range(count):
            stream = self._streams[self._next]
            self._next = (self._next + 1) % len(self._streams)
            kind = str(stream.device.kind)
            if batch == 1:
                body = orjson.dumps(self._simulation.reading(stream, self._clock.now()))
            else:
                body = orjson.dumps(self._batch_of(stream))
            conn.publish(stream.topic, body, kind=kind, readings=batch)
            self._published_by_kind[kind] += batch
            self._messages += 1

    def _batch_of(self, stream: DeviceStream) -> list[Payload]:
        """Readings a store-and-forward device kept: one per interval, the last one now."""
        batch, rate = self._config.batch, self._config.rate
        interval_s = len(self._streams) / rate if rate is not None else 0.0
        now = self._clock.now()
        return [
            self._simulation.reading(stream, now - (batch - 1 - index) * interval_s)
            for index in range(batch)
        ]

    def _report_progress(self, conn: SharedConnection) -> None:
        if self._config.on_progress is not None:
            self._config.on_progress(self._summary(conn))

    def _summary(self, conn: SharedConnection) -> FleetSummary:
        acknowledged_by_kind = conn.acknowledged_by_kind()
        return FleetSummary(
            published=sum(self._published_by_kind.values()),
            acknowledged=sum(acknowledged_by_kind.values()),
            messages=self._messages,
            status_messages=self._status_messages,
            rejected=conn.rejected,
            published_by_kind=dict(self._published_by_kind),
            acknowledged_by_kind=acknowledged_by_kind,
            last_seq={s.device.id: s.seq - 1 for s in self._streams if s.seq > 0},
            elapsed_s=time.monotonic() - self._started,
        )
