"""The simulated devices of a registry: seeded per-device streams of readings, without I/O."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from devices.kinds import Kind
from devices.registry import Device, Registry
from devices.topics import TopicScheme
from simulators.behaviours import Behaviour, behaviour_for

# InfluxDB keeps one point per series and timestamp, and an epoch float near 1.7e9 resolves
# ~0.24 us: a device's readings are stamped at least 1 us apart so none overwrites another.
MIN_TS_STEP_S = 1e-6
TS_DECIMALS = 6  # microseconds: what the step above can tell apart, and a short payload

Payload = dict[str, object]


@dataclass(slots=True)
class DeviceStream:
    """One simulated device: its topic, its own seeded randomness and its sequence number.

    Each device draws from its own `random.Random`, seeded by the run's seed and its id, so
    its readings do not depend on which other devices run or in what order.
    """

    device: Device
    topic: str
    rng: random.Random
    seq: int = 0
    last_ts: float = field(default=float("-inf"))

    def stamp(self, ts: float) -> float:
        """`ts`, moved later when needed so this device's timestamps strictly increase."""
        ts = max(round(ts, TS_DECIMALS), round(self.last_ts + MIN_TS_STEP_S, TS_DECIMALS))
        self.last_ts = ts
        return ts


class Simulation:
    """Every device of a registry with its behaviour; produces readings on demand.

    Behaviours are created once per kind and keep per-device state, so devices of a kind
    can later be coupled (a flood wave travelling downstream from gauge to gauge).
    """

    def __init__(self, registry: Registry, seed: int, topics: TopicScheme | None = None) -> None:
        scheme = topics if topics is not None else TopicScheme()
        self.streams = [
            DeviceStream(device, scheme.telemetry(device.kind, device.id),
                         random.Random(f"{seed}/{device.id}"))
            for device in registry
        ]  # fmt: skip
        self._behaviours: dict[Kind, Behaviour] = {kind: behaviour_for(kind) for kind in Kind}

    def reading(self, stream: DeviceStream, sim_time_s: float) -> Payload:
        """The next reading of `stream`'s device at `sim_time_s`, with `ts` and `seq`."""
        ts = stream.stamp(sim_time_s)
        behaviour = self._behaviours[stream.device.kind]
        fields = behaviour.next_reading(stream.device, ts, stream.rng)
        payload: Payload = {"ts": ts, "seq": stream.seq, **fields}
        stream.seq += 1
        return payload


def generate(
    registry: Registry,
    count: int,
    seed: int,
    start_s: float,
    *,
    interval_s: float = 60.0,
    topics: TopicScheme | None = None,
) -> Iterator[tuple[str, Payload]]:
    """`count` (topic, reading) pairs, as the fleet would publish them, without a broker.

    Devices take turns; each reports every `interval_s` simulated seconds from `start_s`,
    the fleet's readings spread evenly over that interval. The same seed gives the same
    readings.
    """
    simulation = Simulation(registry, seed, topics)
    streams = simulation.streams
    if not streams:
        return
    spacing_s = interval_s / len(streams)
    for index in range(count):
        stream = streams[index % len(streams)]
        yield stream.topic, simulation.reading(stream, start_s + index * spacing_s)
