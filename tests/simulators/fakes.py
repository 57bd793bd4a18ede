"""Stand-ins for the broker side of the runners: a clock that never waits, counting outlets."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

from devices.kinds import Kind
from devices.registry import Device
from simulators.connection import Acks, Tag
from simulators.emission import Emission

ACK_LATENCY_S = 0.001  # what waiting for the broker's PUBACKs costs on the fake clock


class FakeClock:
    """A monotonic clock that jumps forward when slept on, and remembers each sleep."""

    def __init__(self, start: float = 1000.0, epoch: float = 2e9) -> None:
        self.now = start
        self.epoch_offset = epoch - start  # Unix time moves with the monotonic clock
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.epoch_offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Sent:
    at: float  # the fake clock's time when published
    topic: str
    payload: bytes
    tag: Tag
    readings: int
    retain: bool


class FakeOutlet:
    """A connection whose broker acknowledges everything when asked to wait for room."""

    def __init__(self, clock: FakeClock, window: int = 1000, auto_ack: bool = True) -> None:
        self.clock = clock
        self.window = window
        self.auto_ack = auto_ack
        self.sent: list[Sent] = []
        self.acked = 0
        self.max_in_flight = 0

    def room(self) -> int:
        return self.window - (len(self.sent) - self.acked)

    def publish(self, topic: str, payload: bytes, tag: Tag, readings: int,
                retain: bool = False) -> None:
        assert self.room() > 0, "published with a full window"
        self.sent.append(Sent(self.clock.now, topic, payload, tag, readings, retain))
        self.max_in_flight = max(self.max_in_flight, len(self.sent) - self.acked)

    async def wait_for_room(self, timeout_s: float) -> bool:
        if self.auto_ack:
            self.clock.now += ACK_LATENCY_S
            self.acked = len(self.sent)
        else:
            self.clock.now += timeout_s
        return self.room() > 0

    async def drain(self, timeout_s: float) -> bool:
        if self.auto_ack:
            self.acked = len(self.sent)
        else:
            self.clock.now += timeout_s
        return self.acked == len(self.sent)

    def acks(self) -> Acks:
        messages: Counter[Tag] = Counter()
        readings: Counter[Tag] = Counter()
        for sent in self.sent[: self.acked]:
            messages[sent.tag] += 1
            readings[sent.tag] += sent.readings
        return Acks(dict(messages), dict(readings), 0, 0)


class FakeOutlets:
    """One outlet per device, as the pool would open them; acknowledged in full on close."""

    def __init__(self, clock: FakeClock, devices: Sequence[Device], window: int = 1000,
                 acks: bool = True) -> None:
        self.by_device = {device.id: FakeOutlet(clock, window, acks) for device in devices}
        self.fallback = FakeOutlet(clock, window, acks)

    def for_device(self, device_id: str) -> FakeOutlet:
        return self.by_device.get(device_id, self.fallback)

    @property
    def connections(self) -> list[FakeOutlet]:
        return [*self.by_device.values(), self.fallback]

    def all_sent(self) -> list[Sent]:
        return sorted((s for o in self.connections for s in o.sent), key=lambda s: s.at)


@dataclass
class Opener:
    """The runners' `open_outlets`: remembers what it opened; `acks` False: a mute broker."""

    clock: FakeClock
    window: int = 1000
    acks: bool = True
    opened: list[FakeOutlets] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def __call__(self, devices: Sequence[Device]) -> AsyncIterator[FakeOutlets]:
        outlets = FakeOutlets(self.clock, devices, self.window, self.acks)
        self.opened.append(outlets)
        yield outlets


def device(device_id: str, kind: Kind = Kind.WATER_LEVEL) -> Device:
    return Device(id=device_id, kind=kind, name=device_id, lat=-6.2, lon=106.8)


def emission(sim_time_s: float, device_id: str = "gauge", kind: Kind = Kind.WATER_LEVEL,
             fault: str | None = None, readings: int = 1, prefix: str = "siaga") -> Emission:
    return Emission(sim_time_s, f"{prefix}/{kind}/{device_id}/telemetry",
                    b'{"level_cm": 1}', device_id, kind, readings, fault)


class FakeSource:
    """A simulation with given emissions, cut to [start_s, until_s) as a real one is."""

    def __init__(self, devices: Sequence[Device], emissions: Sequence[Emission]) -> None:
        self.devices = list(devices)
        self._emissions = sorted(emissions, key=lambda e: e.sim_time_s)

    def emissions(self, start_s: float | None = None,
                  until_s: float | None = None) -> Iterator[Emission]:
        for item in self._emissions:
            if (start_s is None or item.sim_time_s >= start_s) and (
                    until_s is None or item.sim_time_s < until_s):
                yield item
