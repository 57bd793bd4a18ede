"""Scenario playback: a simulation's emissions published over MQTT, paced by a speed-up factor."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from devices.registry import Device
from devices.topics import TopicScheme
from siaga_core.errors import ConfigurationError
from siaga_core.mqttloop import BrokerAddress
from simulators.connection import MAX_WINDOW, Acks, Tag
from simulators.emission import Emission
from simulators.pacing import Pacer, SystemClock, WallClock
from simulators.pool import Pool, PoolConfig
from simulators.summary import EVENT_KEY, Summary, Tally, merge_acks

SLICE_S = 0.25  # longest single sleep: a stop, a deadline or a progress line waits no longer
CHUNK = 500  # messages published between two looks at the stop event and the progress clock
DEFAULT_WINDOW = 1000  # unacknowledged messages per connection: a device's backlog, no more
DRAIN_TIMEOUT_S = 10.0  # at the end, how long to wait for each connection's last PUBACKs


class FleetConfigError(ConfigurationError, ValueError):
    """A fleet configuration value is out of range."""


class EmissionSource(Protocol):
    """A simulation: its devices, and its messages in order of simulated time."""

    @property
    def devices(self) -> Sequence[Device]: ...

    def emissions(self, start_s: float | None = None,
                  until_s: float | None = None) -> Iterator[Emission]: ...


class Outlet(Protocol):
    """What the fleet needs of a connection (simulators.connection.Connection)."""

    def room(self) -> int: ...
    def publish(self, topic: str, payload: bytes, tag: Tag, readings: int,
                retain: bool = False) -> None: ...
    async def wait_for_room(self, timeout_s: float) -> bool: ...
    async def drain(self, timeout_s: float) -> bool: ...
    def acks(self) -> Acks: ...


class Outlets(Protocol):
    """The fleet's connections (simulators.pool.Pool)."""

    def for_device(self, device_id: str) -> Outlet: ...
    @property
    def connections(self) -> Sequence[Outlet]: ...


OpenOutlets = Callable[[Sequence[Device]], AbstractAsyncContextManager[Outlets]]


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """How the fleet connects, and how fast it plays."""

    address: BrokerAddress = field(default_factory=BrokerAddress)
    topic_prefix: str = "siaga"  # must be the simulation's: status topics are built here
    speed: float | None = 1.0  # simulated seconds per wall second; None: as fast as possible
    shared: bool = False  # one connection for all devices instead of one each
    qos: int = 1
    window: int = DEFAULT_WINDOW
    duration_s: float | None = None  # stop after this many wall-clock seconds
    # How far simulated time may run ahead of the present; None: no limit. Siaga refuses a
    # reading stamped more than 5 minutes ahead, so by default none is sent early.
    ahead_s: float | None = 0.0
    client_prefix: str = "siaga-sim-"
    progress_every_s: float = 1.0
    on_progress: Callable[[Summary], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.speed is None or (math.isfinite(self.speed) and self.speed > 0),
             "speed must be > 0 (None: as fast as possible)"),
            (self.duration_s is None or self.duration_s >= 0, "duration_s must be >= 0"),
            (self.qos in (0, 1), "qos must be 0 or 1"),
            (1 <= self.window <= MAX_WINDOW, f"window must be within 1..{MAX_WINDOW}"),
            (0 < self.address.port < 65536, "port must be within 1..65535"),
            (self.progress_every_s > 0, "progress_every_s must be > 0"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise FleetConfigError("; ".join(errors))

    def pool_config(self) -> PoolConfig:
        return PoolConfig(self.address, shared=self.shared, window=self.window, qos=self.qos,
                          client_prefix=self.client_prefix)


class Fleet:
    """Publishes a simulation's emissions: sim time `t` goes out `(t - start) / speed` after
    the first message, but not before the present reaches `t` (see `Pacer`), over each
    device's own connection (or one shared).

    `start_s` and `until_s` bound the simulated time played (None: the simulation's own);
    pacing counts from `start_s`, or from the first emission without one.
    """

    def __init__(self, source: EmissionSource, config: FleetConfig, *,
                 start_s: float | None = None, until_s: float | None = None,
                 clock: WallClock | None = None, open_outlets: OpenOutlets | None = None) -> None:
        self._source = source
        self._config = config
        self._start_s, self._until_s = start_s, until_s
        self._clock = clock or SystemClock()
        topics = TopicScheme(config.topic_prefix)
        self._open_outlets: OpenOutlets = open_outlets or (
            lambda devices: Pool(devices, config.pool_config(), topics))
        self._tally = Tally()
        self._outlets: Outlets | None = None
        self._pacer: Pacer | None = None
        self._started = self._clock.monotonic()
        self._finished: float | None = None
        self._reached: float | None = None  # sim time of the last emission published
        self._next_progress = math.inf

    async def run(self, stop: asyncio.Event | None = None) -> Summary:
        """Plays until the emissions end, `duration_s` passes or `stop` is set."""
        stop = stop or asyncio.Event()
        emissions = self._source.emissions(self._start_s, self._until_s)
        async with self._open_outlets(self._source.devices) as outlets:
            self._outlets = outlets
            self._started = self._clock.monotonic()
            self._next_progress = self._started + self._config.progress_every_s
            await self._play(emissions, outlets, stop)
            async with asyncio.TaskGroup() as group:  # each connection's last PUBACKs at once
                for outlet in outlets.connections:
                    group.create_task(outlet.drain(DRAIN_TIMEOUT_S))
            # Elapsed time covers playing and its acknowledgement, not the `offline` round.
            self._finished = self._clock.monotonic()
        return self.snapshot(finished=True)

    async def _play(self, emissions: Iterator[Emission], outlets: Outlets,
                    stop: asyncio.Event) -> None:
        for published, emission in enumerate(emissions, 1):
            pacer = self._pacer_for(emission.sim_time_s)
            if not await self._wait_due(pacer, emission.sim_time_s, stop):
                return
            outlet = outlets.for_device(emission.device_id)
            if not await self._wait_for_room(outlet, stop):
                return
            key = EVENT_KEY if emission.events else (str(emission.kind), emission.fault)
            outlet.publish(emission.topic, emission.payload, key, emission.readings,
                           emission.retain)
            self._tally.add(key, emission.readings)
            self._reached = emission.sim_time_s
            if published % CHUNK == 0:
                if self._should_stop(stop):
                    return
                self._report_progress()
                await asyncio.sleep(0)  # let paho's callbacks and other tasks in

    def _pacer_for(self, first_sim_time_s: float) -> Pacer:
        if self._pacer is None:
            origin = first_sim_time_s if self._start_s is None else self._start_s
            self._pacer = Pacer(self._config.speed, origin, self._clock, self._started,
                                self._config.ahead_s)
        return self._pacer

    async def _wait_due(self, pacer: Pacer, sim_time_s: float, stop: asyncio.Event) -> bool:
        """Sleeps until `sim_time_s` is due, in slices; False if the run must end first."""
        while (delay := pacer.delay(sim_time_s)) > 0:
            if self._should_stop(stop):
                return False
            self._report_progress()
            await self._clock.sleep(min(delay, SLICE_S))
        return True

    async def _wait_for_room(self, outlet: Outlet, stop: asyncio.Event) -> bool:
        """Waits for PUBACKs while the connection's window is full; False if the run must end."""
        while outlet.room() <= 0:
            if self._should_stop(stop):
                return False
            self._report_progress()
            await outlet.wait_for_room(SLICE_S)
        return True

    def _should_stop(self, stop: asyncio.Event) -> bool:
        limit = self._config.duration_s
        return stop.is_set() or (
            limit is not None and self._clock.monotonic() - self._started >= limit)

    def _report_progress(self) -> None:
        on_progress = self._config.on_progress
        now = self._clock.monotonic()
        if on_progress is None or now < self._next_progress:
            return
        self._next_progress = now + self._config.progress_every_s
        on_progress(self.snapshot())

    def sim_time(self) -> float | None:
        """The simulated time reached: the pacer's clock while paced, else the last message's."""
        paced = None if self._pacer is None else self._pacer.sim_now()
        if paced is None:
            return self._reached
        if self._until_s is not None:
            paced = min(paced, self._until_s)
        return max(paced, self._reached or paced)

    def snapshot(self, finished: bool = False) -> Summary:
        """What was sent and acknowledged so far."""
        outlets = self._outlets
        acks = [] if outlets is None else [outlet.acks() for outlet in outlets.connections]
        acknowledged, rejected, statuses = merge_acks(acks)
        return Summary(
            sent=self._tally.counts(), acknowledged=acknowledged, status_messages=statuses,
            rejected=rejected,
            elapsed_s=(self._finished or self._clock.monotonic()) - self._started,
            sim_time_s=self._reached if finished else self.sim_time(), finished=finished)
