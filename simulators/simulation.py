"""A scenario played on a catalog's devices: every message they send, in simulated time order.

No I/O: a fleet publishes the emissions, tests read them. Each device has its own seeded
random streams (one for what it measures, one for its faults), keyed by the run's seed and
its id, so a device's emissions depend neither on the other devices nor on their order.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from operator import attrgetter

from devices.registry import Device, Registry
from devices.topics import TopicScheme
from simulators.behaviours import behaviour_for
from simulators.cameras import Camera
from simulators.emission import Emission
from simulators.faults import Delivery
from simulators.scenario import Scenario
from simulators.world import World

__all__ = ["Emission", "Simulation"]

_BY_TIME = attrgetter("sim_time_s")


class Simulation:
    """Emissions of a scenario's devices; the same registry, scenario and seed, the same bytes.

    `emissions()` may be called again (each call starts from scratch), with another window
    of simulated time. The scenario's events count from its start whatever the window.
    """

    def __init__(
        self,
        registry: Registry,
        scenario: Scenario,
        seed: int,
        topics: TopicScheme = TopicScheme(),  # noqa: B008  # frozen, so one default is safe
    ) -> None:
        self._scenario, self._seed, self._topics = scenario, seed, topics
        self._devices = scenario.devices.select(registry)
        self._world = World(scenario, registry)

    @property
    def devices(self) -> list[Device]:
        """The devices the scenario runs, in catalog order."""
        return list(self._devices)

    @property
    def scenario(self) -> Scenario:
        return self._scenario

    @property
    def warnings(self) -> list[str]:
        """Scenario events ignored because the catalog lacks the devices they name."""
        return list(self._world.warnings)

    def emissions(
        self, start_s: float | None = None, until_s: float | None = None
    ) -> Iterator[Emission]:
        """Every message sent in [start_s, until_s), ordered by `sim_time_s`.

        Defaults: the scenario's start and its end; `until_s` may be `math.inf` for a run
        that ends when its consumer stops reading. Ties keep catalog order.
        """
        start = self._scenario.start_s if start_s is None else start_s
        until = self._scenario.end_s if until_s is None else until_s
        streams = [self.device_emissions(device, start, until) for device in self._devices]
        return heapq.merge(*streams, key=_BY_TIME)

    def device_emissions(
        self, device: Device, start_s: float, until_s: float
    ) -> Iterator[Emission]:
        """One device's messages in [start_s, until_s), in time order."""
        interval = self._scenario.interval_of(device)
        rng = random.Random(f"{self._seed}/{device.id}")
        behaviour = behaviour_for(device, self._world, rng, interval)
        fault_rng = random.Random(f"{self._seed}/{device.id}/faults")
        delivery = Delivery(device, self._topics, self._scenario.faults, fault_rng)
        t = behaviour.first_time(start_s)
        if isinstance(behaviour, Camera):
            yield from self._camera_emissions(behaviour, delivery, t, until_s)
            return
        if delivery.plain:
            while t < until_s:
                measured = behaviour.measure(t)
                yield delivery.send_plain(t, measured)
                t = behaviour.next_time(t)
            return
        while t < until_s:
            measured = behaviour.measure(t)
            next_t = behaviour.next_time(t)
            for emission in delivery.send(t, measured, next_t):
                if emission.sim_time_s < until_s:
                    yield emission
            t = next_t
        yield from delivery.finish(until_s)

    @staticmethod
    def _camera_emissions(
        camera: Camera, delivery: Delivery, t: float, until_s: float
    ) -> Iterator[Emission]:
        """A camera's counts and, between them, its detections, in time order."""
        while t < until_s:
            measured = camera.measure(t)
            next_t = camera.next_time(t)
            detections = camera.detections(t, measured, min(next_t, until_s))
            sent = delivery.send(t, measured, next_t)
            events = [e for at, body in detections if (e := delivery.event(at, body)) is not None]
            for emission in heapq.merge(sent, events, key=_BY_TIME):
                if emission.sim_time_s < until_s:
                    yield emission
            t = next_t
        yield from delivery.finish(until_s)
