"""Load mode: thousands of devices at a fixed aggregate rate over one shared connection."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml

from devices.kinds import Kind
from devices.registry import Device
from devices.topics import TopicScheme
from siaga_core.mqttloop import BrokerAddress
from simulators.cameraload import CameraLoad
from simulators.connection import MAX_WINDOW
from simulators.fleet import FleetConfigError, OpenOutlets, Outlet, Outlets
from simulators.pacing import SystemClock, WallClock
from simulators.pool import Pool, PoolConfig
from simulators.summary import Summary, Tally, merge_acks

TICK_S = 0.01  # the schedule wakes 100 times a second: smooth at any rate, cheap when idle
MAX_BURST_S = 1.0  # after a stall, catch up at most one second of readings, not a flood
CHUNK = 500  # readings published between two yields to the event loop (~5 ms of work)
MAX_BATCH = 1000  # SPEC section 1: a batch holds at most 1000 readings
DEFAULT_WINDOW = 10_000  # unacknowledged messages: ample for a local broker, far below paho's
DRAIN_TIMEOUT_S = 10.0  # at the end, how long to wait for the broker's last PUBACKs
KINDS = (Kind.WATER_LEVEL, Kind.AIR_QUALITY, Kind.TRAFFIC)  # the round-robin of synthetic ids
JAKARTA = (-6.2088, 106.8456)  # synthetic devices sit on a grid around Monas
GRID_STEP_DEG = 0.002  # ~220 m between neighbours; 10,000 devices span ~22 km


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """How the load run connects, and what it publishes how fast."""

    address: BrokerAddress = field(default_factory=BrokerAddress)
    topic_prefix: str = "siaga"
    rate: float | None = 1000.0  # readings per second, all devices together; None: flat out
    batch: int = 1  # readings per message; above 1, a JSON array as store-and-forward sends
    duration_s: float | None = None  # None: until `stop` is set
    seed: int = 0
    qos: int = 1
    window: int = DEFAULT_WINDOW
    status: bool = True  # every device `online` (retained) at the start, `offline` at the end
    client_id: str = "siaga-load"
    progress_every_s: float = 1.0
    on_progress: Callable[[Summary], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.rate is None or (math.isfinite(self.rate) and self.rate > 0),
             "rate must be > 0 (None: as fast as possible)"),
            (self.duration_s is None or self.duration_s >= 0, "duration_s must be >= 0"),
            (self.qos in (0, 1), "qos must be 0 or 1"),
            (1 <= self.batch <= MAX_BATCH, f"batch must be within 1..{MAX_BATCH}"),
            (1 <= self.window <= MAX_WINDOW, f"window must be within 1..{MAX_WINDOW}"),
            (0 < self.address.port < 65536, "port must be within 1..65535"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise FleetConfigError("; ".join(errors))


def synthetic_devices(count: int, *, expected_interval_s: float | None = None,
                      centre: tuple[float, float] = JAKARTA) -> list[Device]:
    """`count` devices `load-000001`...: kinds in turn, on a grid around `centre` (Monas)."""
    if not 1 <= count <= 999_999:
        raise FleetConfigError(f"devices must be within 1..999999, got {count}")
    side = math.ceil(math.sqrt(count))
    return [Device(
        id=f"load-{number:06d}", kind=KINDS[(number - 1) % len(KINDS)],
        name=f"Load device {number}",
        lat=round(centre[0] + ((number - 1) // side - side / 2) * GRID_STEP_DEG, 6),
        lon=round(centre[1] + ((number - 1) % side - side / 2) * GRID_STEP_DEG, 6),
        # One area label, so the offline rules tell one AreaOffline when a run ends,
        # not one DeviceOffline per device.
        labels={"kota": "load-test"},
        expected_interval_s=expected_interval_s,
    ) for number in range(1, count + 1)]


def write_catalog(devices: Sequence[Device], path: Path) -> None:
    """A catalog file of `devices` that the service loads with `catalog: FILE`."""
    entries = [device.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
               for device in devices]
    header = ("# Synthetic devices for `siaga simulate --devices N` (load mode), written by\n"
              "# `siaga simulate --write-catalog`. Point the service's `catalog:` at this file,\n"
              "# or set `ingest.unknown_devices: accept` instead.\n")
    body = yaml.safe_dump({"devices": entries}, sort_keys=False, allow_unicode=True)
    path.write_text(header + body, encoding="utf-8")


# Readings are made in integer microseconds and tenths: `round(x, 6)` on an epoch time
# took 2.1 us (it rounds through the decimal digits), three of them most of the 11 us a
# reading cost, and the load generator, not the system under test, then used most of a
# core at 90,000 readings/s. A scaled integer divided back gives the same nearest double
# but in rare halfway cases.
US_PER_S = 1_000_000


def _tenths(value: float) -> float:
    """`value` to one decimal place (halves up: a reservoir's band is below zero)."""
    return math.floor(value * 10 + 0.5) / 10


def _water_level(ts: float, seq: int, value: float) -> dict[str, object]:
    return {"ts": ts, "seq": seq, "level_cm": value}


def _air_quality(ts: float, seq: int, value: float) -> dict[str, object]:
    return {"ts": ts, "seq": seq, "pm25": value, "pm10": _tenths(value * 1.5)}


def _traffic(ts: float, seq: int, value: float) -> dict[str, object]:
    return {"ts": ts, "seq": seq, "speed_kmh": value, "volume_vph": round(value * 40),
            "occupancy_pct": 12.5}


# Plausible fields around the main value; quiet ones, so a load run raises no alerts.
_READING = {Kind.WATER_LEVEL: _water_level, Kind.AIR_QUALITY: _air_quality,
            Kind.TRAFFIC: _traffic}


@dataclass(slots=True)
class _Stream:
    """One device's topic, sequence number and last timestamp."""

    device: Device
    topic: str
    key: tuple[str, None]
    low: float  # the band its main value moves in
    high: float
    seq: int = 0
    last_us: int = -1  # the last reading's time in microseconds; -1: none yet

    def reading(self, ts: float, rng: random.Random) -> dict[str, object]:
        return self.readings((ts,), rng)[0]

    def readings(self, times: Iterable[float], rng: random.Random) -> list[dict[str, object]]:
        """One reading at each of `times` (epoch seconds), in order: each at least a
        microsecond (the precision Siaga keeps) after the one before, since InfluxDB keeps
        one point per series and timestamp."""
        make, random_ = _READING[self.device.kind], rng.random
        low, span = self.low, self.high - self.low
        last, seq = self.last_us, self.seq
        made = []
        for ts in times:
            last = max(int(ts * US_PER_S + 0.5), last + 1)
            made.append(make(last / US_PER_S, seq, _tenths(low + span * random_())))
            seq += 1
        self.last_us, self.seq = last, seq
        return made


# The main value's band per kind: water at a gauge's normal range when the catalog gives
# one; PM2.5 inside the ISPU "sedang" band (15.5 to 55.4 ug/m3: above 15.5, so the load
# does not flip stations between baik and sedang); traffic well above the congestion threshold.
_BANDS = {Kind.WATER_LEVEL: (20.0, 80.0), Kind.AIR_QUALITY: (16.0, 35.0),
          Kind.TRAFFIC: (30.0, 60.0)}


def _stream(device: Device, topics: TopicScheme) -> _Stream:
    low, high = _BANDS[device.kind]
    normal = (device.thresholds.get("normal_low_cm"), device.thresholds.get("normal_high_cm"))
    if normal[0] is not None and normal[1] is not None and normal[0] < normal[1]:
        low, high = normal[0], normal[1]
    return _Stream(device, topics.telemetry(device.kind, device.id), (str(device.kind), None),
                   low, high)


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


class LoadRun:
    """Devices take turns publishing at `rate` readings per second over one connection.

    The connection's window bounds what is unacknowledged, so the summary's acknowledged
    count is what the broker has, and its rate is the rate actually achieved.
    """

    def __init__(self, devices: Sequence[Device], config: LoadConfig, *,
                 clock: WallClock | None = None, open_outlets: OpenOutlets | None = None) -> None:
        if not devices:
            raise FleetConfigError("no devices to simulate")
        self._config = config
        self._clock = clock or SystemClock()
        topics = TopicScheme(config.topic_prefix)
        pool = PoolConfig(config.address, shared=True, window=config.window, qos=config.qos,
                          client_prefix=config.client_id + "-")
        self._open_outlets: OpenOutlets = open_outlets or (
            lambda devs: Pool(devs if config.status else [], pool, topics))
        self._devices = list(devices)
        # Cameras keep their own clock (counts every 10 s, detections), beside the rate.
        self._streams = [_stream(device, topics) for device in devices
                         if device.kind is not Kind.CAMERA]
        self._rng = random.Random(config.seed)
        cameras = [device for device in devices if device.kind is Kind.CAMERA]
        self._cameras = (CameraLoad(cameras, topics, random.Random(f"{config.seed}/cameras"))
                         if cameras else None)
        self._next = 0  # round-robin cursor into the streams
        self._tally = Tally()
        self._outlets: Outlets | None = None
        self._started = self._clock.monotonic()
        self._finished: float | None = None

    async def run(self, stop: asyncio.Event | None = None) -> Summary:
        """Publishes until `duration_s` has passed or `stop` is set; returns what happened."""
        stop = stop or asyncio.Event()
        async with self._open_outlets(self._devices) as outlets:
            self._outlets = outlets
            self._started = self._clock.monotonic()
            outlet = outlets.for_device(self._devices[0].id)
            await self._publish_all(outlet, stop)
            await outlet.drain(DRAIN_TIMEOUT_S)
            # The rate is over publishing and its acknowledgement, not the `offline` round.
            self._finished = self._clock.monotonic()
        return self.snapshot()

    async def _publish_all(self, outlet: Outlet, stop: asyncio.Event) -> None:
        config, clock = self._config, self._clock
        deadline = math.inf if config.duration_s is None else self._started + config.duration_s
        bucket = None
        if config.rate is not None:
            capacity = max(config.rate * MAX_BURST_S, float(config.batch))
            bucket = _TokenBucket(config.rate, capacity, self._started)
        next_progress = self._started + config.progress_every_s
        chunk = max(1, CHUNK // config.batch)  # messages
        while not stop.is_set() and (now := clock.monotonic()) < deadline:
            if self._cameras is not None:
                self._cameras.publish(outlet, now - self._started, clock.time(),
                                      min(outlet.room(), CHUNK), self._tally)
                if not self._streams:
                    await self._wait(outlet)
                    continue
            allowed = chunk if bucket is None else bucket.available(now) // config.batch
            count = min(allowed, outlet.room(), chunk)
            self._publish(outlet, count)
            if bucket is not None:
                bucket.spend(count * config.batch)
            if now >= next_progress and config.on_progress is not None:
                next_progress = now + config.progress_every_s
                config.on_progress(self.snapshot())
            if outlet.room() <= 0:
                await outlet.wait_for_room(TICK_S)
            elif count < chunk and bucket is not None:
                await clock.sleep(TICK_S)  # caught up with the rate: wait for the next tick
            else:
                await asyncio.sleep(0)  # let paho's callbacks and the stop event in

    async def _wait(self, outlet: Outlet) -> None:
        """Cameras alone: wait for the broker's room, or the next tick of their clock."""
        if outlet.room() <= 0:
            await outlet.wait_for_room(TICK_S)
        else:
            await self._clock.sleep(TICK_S)

    def _publish(self, outlet: Outlet, count: int) -> None:
        batch, streams = self._config.batch, self._streams
        for _ in range(count):
            stream = streams[self._next]
            self._next = (self._next + 1) % len(streams)
            now = self._clock.time()
            if batch == 1:
                body = orjson.dumps(stream.reading(now, self._rng))
            else:
                body = orjson.dumps(self._batch_of(stream, now))
            outlet.publish(stream.topic, body, stream.key, batch)
            self._tally.add(stream.key, batch)

    def _batch_of(self, stream: _Stream, now: float) -> list[dict[str, object]]:
        """Readings a store-and-forward device kept: one per interval, the last one now."""
        rate = self._config.rate
        interval_s = len(self._streams) / rate if rate is not None else 0.0
        batch = self._config.batch
        return stream.readings([now - (batch - 1 - index) * interval_s
                                for index in range(batch)], self._rng)

    def last_seq(self) -> dict[str, int]:
        """Device id -> the last seq published (seqs run from 0)."""
        return {s.device.id: s.seq - 1 for s in self._streams if s.seq > 0}

    def snapshot(self) -> Summary:
        """What was sent and acknowledged so far."""
        outlets = self._outlets
        acks = [] if outlets is None else [outlet.acks() for outlet in outlets.connections]
        acknowledged, rejected, statuses = merge_acks(acks)
        return Summary(sent=self._tally.counts(), acknowledged=acknowledged,
                       status_messages=statuses, rejected=rejected,
                       elapsed_s=(self._finished or self._clock.monotonic()) - self._started)
