"""Emissions as Siaga sees them: the service's own decoder, the bundled catalog, and scenarios."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import orjson

from devices.registry import Registry, bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.decode import Decoded, Decoder
from simulators.emission import Emission
from simulators.scenario import load_scenario
from simulators.simulation import Simulation

NS_PER_S = 1_000_000_000


@cache
def catalog() -> Registry:
    return load_catalog(bundled_catalog_path())


@cache
def emissions_of(name: str, seed: int = 1) -> tuple[Emission, ...]:
    """A bundled scenario's emissions on the bundled catalog (cached: several tests read them)."""
    return tuple(Simulation(catalog(), load_scenario(name), seed).emissions())


@dataclass(frozen=True, slots=True)
class Verdict:
    stored: int  # readings the service keeps
    dead: int  # dead letters
    statuses: int
    detections: int = 0  # a camera's events


def decode(emission: Emission, registry: Registry | None = None) -> Verdict:
    """What Siaga makes of one message received at its simulated send time."""
    decoder = Decoder(registry or catalog(), TopicScheme())
    out = Decoded()
    decoder.decode(emission.topic, emission.payload, round(emission.sim_time_s * NS_PER_S), out)
    return Verdict(len(out.readings), len(out.dead), len(out.statuses), len(out.detections))


def readings_of(emissions: Iterable[Emission], device_id: str) -> list[dict[str, object]]:
    """One device's readings sent one per message (no batches, duplicates, statuses, garbage)."""
    found = []
    for emission in emissions:
        single = emission.readings == 1 and emission.payload.startswith(b"{")
        if emission.device_id == device_id and single and emission.fault != "duplicate":
            found.append(orjson.loads(emission.payload))
    return found


def number(reading: dict[str, object], field: str) -> float:
    value = reading[field]
    assert isinstance(value, int | float)
    return float(value)
