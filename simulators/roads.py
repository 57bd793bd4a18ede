"""Traffic detectors: speed, volume and occupancy from demand through Greenshields' model.

Greenshields: speed falls linearly with density, v = vf (1 - k/kj), so flow q = k v peaks
at half the jam density, where speed is half the free-flow speed. Demand below capacity
takes the uncongested branch; demand above it builds a queue (the congested branch), where
speed and flow both fall. Volume, occupancy and speed of one reading come from one density,
so they always agree with each other.
"""

from __future__ import annotations

import math
import random
from typing import Final

from devices.registry import Device
from simulators.calendar import FRIDAY, HOUR_S, MONDAY, SATURDAY, SUNDAY, DailyProfile, local_hour
from simulators.calendar import weekday as weekday_of
from simulators.noise import Fields, add_diagnostics, jitter, wander
from simulators.world import World

# Demand as a share of a typical road's capacity, jakarta.md section 4: weekday peaks
# 07-09 (worst ~08) and 17-19 (worst 17-18; the evening is worse), quietest 10-16.
# At the peaks demand just exceeds capacity: speed about half of free flow, ~21-23 km/h,
# as Jakarta's rush-hour averages (22 km/h in 2022, 21 in 2023).
WEEKDAY: Final = DailyProfile((
    (0, 0.12), (4, 0.1), (5, 0.3), (6, 0.75), (7, 1.02), (8, 1.12), (9, 0.95), (10, 0.72),
    (11, 0.62), (13, 0.65), (15, 0.72), (16, 0.88), (17, 1.12), (18, 1.15), (19, 1.0),
    (20, 0.78), (22, 0.45), (24, 0.12),
))  # fmt: skip
SATURDAY_DEMAND: Final = DailyProfile((
    (0, 0.15), (5, 0.15), (7, 0.45), (10, 0.75), (13, 0.8), (16, 0.75), (18, 0.85),
    (20, 0.8), (22, 0.5), (24, 0.2),
))  # fmt: skip
SUNDAY_DEMAND: Final = DailyProfile((  # the quietest day (section 4)
    (0, 0.15), (6, 0.15), (9, 0.45), (12, 0.6), (16, 0.6), (19, 0.65), (22, 0.35), (24, 0.15),
))  # fmt: skip
MONDAY_MORNING = 1.05  # 2019: Monday mornings and Friday evenings the worst of the week
FRIDAY_EVENING = 1.07
FREE_FLOW_KMH = (40.0, 60.0)  # urban arterials, limit 50 km/h; ~43 km/h typical off-peak
LANES = (2, 3, 4)
LANE_CAPACITY_VPH = 1650.0  # MKJI base, urban divided road, per lane (section 4)
JAM_OCCUPANCY_PCT = 60.0  # occupancy at jam density: ~30% at capacity, "congested >25-30%"
QUEUE_GAIN = 1.5  # how fast density climbs once demand exceeds capacity
MAX_DENSITY = 0.95  # of jam density: a queue still creeps
MIN_SPEED_KMH = 3.0
SITE_SPREAD = 0.1  # some roads are busier than others
DRIFT_TAU_S, DRIFT_SD, NOISE_SD = HOUR_S, 0.08, 0.05
# Rain slows everyone and costs some capacity; a flooded gauge nearby means water on the
# road (at Siaga 1: most of the capacity gone, crawling speeds); an incident blocks lanes.
RAIN_CAPACITY, RAIN_SPEED = 0.1, 0.15
FLOOD_CAPACITY, FLOOD_SPEED = 0.6, 0.4
INCIDENT_SPEED = 0.3


def density(load: float) -> float:
    """Density as a share of jam density for demand `load` (1 = capacity), Greenshields."""
    if load <= 1.0:
        return (1.0 - math.sqrt(1.0 - max(load, 0.0))) / 2
    return min(0.5 + 0.5 * (load - 1.0) * QUEUE_GAIN, MAX_DENSITY)


def demand(t: float) -> float:
    """Citywide demand at `t` as a share of a typical road's capacity."""
    day, hour = weekday_of(t), local_hour(t)
    if day == SATURDAY:
        return SATURDAY_DEMAND.at(t)
    if day == SUNDAY:
        return SUNDAY_DEMAND.at(t)
    share = WEEKDAY.at(t)
    if day == MONDAY and hour < 12:
        share *= MONDAY_MORNING
    elif day == FRIDAY and hour >= 15:
        share *= FRIDAY_EVENING
    return share


class Road:
    """A detector on one road: its free-flow speed, lanes and busyness, and its drift."""

    def __init__(self, device: Device, world: World, rng: random.Random, interval_s: float):
        self._id, self._world, self._rng = device.id, world, rng
        self._interval_s = interval_s
        self._phase_s = rng.uniform(0.0, interval_s)
        self._free_flow = rng.uniform(*FREE_FLOW_KMH)
        self._capacity = rng.choice(LANES) * LANE_CAPACITY_VPH
        self._site = math.exp(rng.gauss(0.0, SITE_SPREAD))
        self._drift = rng.gauss(0.0, DRIFT_SD)
        self._last_t: float | None = None
        self._replay = world.replay(device.id, "speed_kmh")

    def first_time(self, start_s: float) -> float:
        return start_s + self._phase_s

    def next_time(self, t: float) -> float:
        return t + self._interval_s

    def measure(self, t: float) -> Fields:
        rng, world = self._rng, self._world
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        self._drift = wander(self._drift, dt, DRIFT_TAU_S, DRIFT_SD, rng)
        rain, flood = world.rain(t), world.flood_severity(self._id, t)
        incident = world.incident(self._id, t)
        capacity = (1 - RAIN_CAPACITY * rain) * (1 - FLOOD_CAPACITY * flood) * (1 - incident)
        free_flow = self._free_flow * (1 - RAIN_SPEED * rain) * (1 - FLOOD_SPEED * flood)
        free_flow *= 1 - INCIDENT_SPEED * incident
        load = demand(t) * self._site * math.exp(self._drift) * (1.0 + jitter(rng, NOISE_SD))
        k = density(load / max(capacity, 0.05))
        k = self._replayed(t, k, free_flow)
        speed = max(free_flow * (1 - k), MIN_SPEED_KMH)
        # q = 4 qmax k (1 - k): the flow Greenshields gives for density k.
        volume = 4 * self._capacity * capacity * k * (1 - k) * (1.0 + jitter(rng, 0.03))
        occupancy = k * JAM_OCCUPANCY_PCT + jitter(rng, 0.5)
        fields: Fields = {
            "speed_kmh": round(speed, 1),
            "volume_vph": round(volume),
            "occupancy_pct": round(min(max(occupancy, 0.0), 100.0), 1),
        }
        add_diagnostics(fields, rng)
        return fields

    def _replayed(self, t: float, k: float, free_flow: float) -> float:
        """The density the scenario's speed keyframes imply, blended with the simulated one."""
        if self._replay is None:
            return k
        weight, speed = self._replay.at(t)
        wanted = min(max(1 - speed / free_flow, 0.0), MAX_DENSITY)
        return weight * wanted + (1 - weight) * k
