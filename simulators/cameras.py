"""CCTV analytics: a camera's counts every 10 s and its detections, Frigate-style (SPEC 7).

What a camera sees comes from the scenario's city: the traffic on its road (the same demand,
incidents and replays as the traffic sensor it watches over), water as its watched gauge
climbs the Siaga ladder or as rain ponds in an underpass, and, for a glare-prone camera,
headlights on a wet road at night. Its detections (floods, jams, violations, plates) are
events with ids that go `new`, `update`, `end`, as Frigate publishes them.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import string
from typing import Final

from devices.detections import EventType
from devices.kinds import Kind
from devices.registry import Device
from simulators.calendar import HOUR_S, DailyProfile
from simulators.noise import Fields, jitter, wander
from simulators.roads import (
    FREE_FLOW_KMH,
    INCIDENT_SPEED,
    LANE_CAPACITY_VPH,
    RAIN_SPEED,
    demand,
    density,
)
from simulators.world import World, normal_range

# --- counts -----------------------------------------------------------------------------

# Lanes in view (both directions, or the approaches of a junction) and the vehicles a lane
# passes a minute at capacity. Jakarta's traffic is mostly motorcycles, which MKJI counts as
# 0.25 of a car: a camera counting vehicles sees more of them than the capacity in cars.
VIEW_LANES = (4, 6, 8)
LANE_VPM = LANE_CAPACITY_VPH / 60
VEHICLES_PER_PCU = 1.5
# Past capacity a junction's queue keeps filling the view: counts climb while speed falls.
MAX_LOAD = 1.4
SITE_SPREAD, DRIFT_TAU_S, DRIFT_SD, NOISE_SD = 0.1, HOUR_S, 0.08, 0.05
MIN_SPEED_KMH = 2.0
# People in view through the day; floods draw onlookers to the riverbanks and sluice gates.
PEOPLE_DAY: Final = DailyProfile(((0, 0.1), (5, 0.2), (7, 1.0), (12, 0.8), (17, 1.0),
                                  (20, 0.6), (22, 0.3), (24, 0.1)))  # fmt: skip
PEOPLE_PEAK = (5.0, 40.0)
FLOOD_ONLOOKERS = 2.0  # people in view triple when the water is at its highest
# Water on the road stops traffic: from half-way (puddles) to full (under water).
WATER_SLOWS_FROM = 0.5
WATER_SPEED, WATER_COUNT = 0.8, 0.85

# --- water ------------------------------------------------------------------------------

WET_ROAD = (0.03, 0.12)  # the score of a dry road, and what rain adds (reflections)
WATER_NOISE = 0.02
# The score as the watched gauge climbs: nothing at normal, rising through Siaga 3, past
# 0.8 at Siaga 2 (the analytics see water on the road), nearly sure at Siaga 1.
LADDER_SCORES = (0.0, 0.3, 0.84, 0.95)  # at normal high, Siaga 3, Siaga 2, Siaga 1
POND_SCORE = 0.95  # an underpass under water
UNDERPASS_ZONE = "underpass"

# --- detections -------------------------------------------------------------------------

SEEN = 0.8  # the analytics report a flood from this water score (the rules' threshold too)
CLEARED = 0.6  # and end it below this one, so noise near 0.8 does not flap
JAM_KMH, JAM_CLEARED_KMH = 15.0, 25.0  # congestion: LOS F (jakarta.md section 4) and clear
UPDATE_S = 300.0  # an ongoing detection is updated every five minutes
# Violations per hour at a busy junction at full demand (illustrative): parked cars and
# ojek waiting where they must not, motorcycles against the traffic to save a U-turn.
ILLEGAL_PARKING_PER_H = 4.0
PARKED_S = (3 * 60.0, 40 * 60.0)
WRONG_WAY_PER_H = 6.0
WRONG_WAY_S = (5.0, 25.0)
HOTSPOT_SHARE = 0.5  # half of a camera's violations happen in one zone (a bus stop...)
# Plates read with confidence, per hour at full demand: a sample, not every car.
PLATES_PER_H = 30.0
PLATE_S = (2.0, 6.0)
LISTED_SHARE = 0.05  # of plates read: a vehicle on the watch list (tax arrears)
SCORE = (0.62, 0.97)
EVENT_ID_SUFFIX = 6  # Frigate: "<start epoch>.<us>-<6 random characters>"
_ID_CHARS = string.ascii_lowercase + string.digits

# Made-up plates of vehicles on a watch list (the suffixes say they are not real), for
# tests and the demo: write them to a CSV with a `plate` column.
WATCHED_PLATES: Final = ("B 1234 SIM", "B 4321 TAX", "B 777 ARR", "D 2020 BJR", "F 88 PJK")
_WATCHED_KEYS: Final = frozenset(plate.replace(" ", "") for plate in WATCHED_PLATES)
# Jakarta's plates begin with B; commuters bring Bogor (F), Bandung (D), Banten (A).
PLATE_REGIONS = ("B",) * 8 + ("F", "D", "A")

Event = dict[str, object]


def random_plate(rng: random.Random) -> str:
    """A made-up plate in the Indonesian form, never one of `WATCHED_PLATES`."""
    while True:
        suffix = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(1, 3)))
        plate = f"{rng.choice(PLATE_REGIONS)} {rng.randint(1, 9999)} {suffix}"
        if plate.replace(" ", "") not in _WATCHED_KEYS:
            return plate


def ladder_score(level: float, device: Device) -> float:
    """The water score a camera sees at a gauge's `level` (0 when the gauge has no ladder)."""
    thresholds = device.thresholds
    if not all(name in thresholds for name in ("siaga3_cm", "siaga2_cm", "siaga1_cm")):
        return 0.0
    steps = (normal_range(device)[1], thresholds["siaga3_cm"], thresholds["siaga2_cm"],
             thresholds["siaga1_cm"])  # fmt: skip
    if level <= steps[0]:
        return 0.0
    for (low, score_low), (high, score_high) in itertools.pairwise(
            zip(steps, LADDER_SCORES, strict=True)):
        if level < high:
            return score_low + (score_high - score_low) * (level - low) / max(high - low, 1e-9)
    return LADDER_SCORES[-1]


class Camera:
    """One camera: its road, its water, and its detections' lifecycles."""

    def __init__(self, device: Device, world: World, rng: random.Random, interval_s: float,
                 watched: Device | None = None) -> None:
        self._device, self._world, self._rng = device, world, rng
        self._interval_s = interval_s
        self._phase_s = rng.uniform(0.0, interval_s)
        self._gauge = watched if watched is not None and watched.kind is Kind.WATER_LEVEL else None
        road = watched if watched is not None and watched.kind is Kind.TRAFFIC else None
        self._road_id = (road or device).id  # incidents and replays of the road it watches
        self._underpass = UNDERPASS_ZONE in device.zones
        self._free_flow = rng.uniform(*FREE_FLOW_KMH)
        self._vpm_capacity = rng.choice(VIEW_LANES) * LANE_VPM * VEHICLES_PER_PCU
        self._site = math.exp(rng.gauss(0.0, SITE_SPREAD))
        self._people = rng.uniform(*PEOPLE_PEAK)
        self._drift = rng.gauss(0.0, DRIFT_SD)
        self._last_t: float | None = None
        self._last: Fields | None = None
        self._real_water = 0.0  # the last water score without glare or noise
        self._detections = Detections(device, rng)

    def first_time(self, start_s: float) -> float:
        return start_s + self._phase_s

    def next_time(self, t: float) -> float:
        return t + self._interval_s

    def measure(self, t: float) -> Fields:
        if self._last is not None and self._world.frozen(self._device.id, t):
            return dict(self._last)  # the analytics hang; the publisher repeats its counts
        rng = self._rng
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        self._drift = wander(self._drift, dt, DRIFT_TAU_S, DRIFT_SD, rng)
        water = self.water(t)
        # A road under water empties: speed and counts fall with the water (real water:
        # glare fools the analytics, not the drivers).
        flooded = max(0.0, (min(water, self._real_water) - WATER_SLOWS_FROM)
                      / (1.0 - WATER_SLOWS_FROM))
        speed, vpm = self._traffic(t)
        fields: Fields = {
            "vehicles_per_min": round(vpm * (1.0 - WATER_COUNT * flooded), 1),
            "mean_speed_kmh": round(max(speed * (1.0 - WATER_SPEED * flooded), MIN_SPEED_KMH), 1),
            "water_score": round(water, 3),
            "people": round(self._people * PEOPLE_DAY.at(t) * (1.0 + FLOOD_ONLOOKERS * flooded)
                            * (1.0 + jitter(rng, 0.2))),
        }  # fmt: skip
        self._last = fields
        return dict(fields)

    def water(self, t: float) -> float:
        """The water score the analytics report at `t`, noise included."""
        world = self._world
        score = WET_ROAD[0] + WET_ROAD[1] * world.rain(t)
        if self._gauge is not None:
            level = world.expected_level(self._gauge.id, t)
            score = max(score, ladder_score(level, self._gauge))
        if self._underpass:
            score = max(score, POND_SCORE * world.ponding(t))
        replay = world.replay(self._device.id, "water_score")
        if replay is not None:
            weight, value = replay.at(t)
            score = weight * value + (1.0 - weight) * score
        self._real_water = score
        score = max(score, world.glare(self._device.id, t))
        return min(max(score + jitter(self._rng, WATER_NOISE), 0.0), 1.0)

    def _traffic(self, t: float) -> tuple[float, float]:
        """Mean speed and vehicles a minute on the road in view, as Greenshields has them."""
        world, rng = self._world, self._rng
        rain, incident = world.rain(t), world.incident(self._road_id, t)
        load = demand(t) * self._site * math.exp(self._drift) * (1.0 + jitter(rng, NOISE_SD))
        free_flow = self._free_flow * (1 - RAIN_SPEED * rain) * (1 - INCIDENT_SPEED * incident)
        k = density(load / max(1.0 - incident, 0.05))
        replay = world.replay(self._road_id, "speed_kmh")
        if replay is not None:
            weight, wanted = replay.at(t)
            k = weight * min(max(1 - wanted / free_flow, 0.0), 0.95) + (1 - weight) * k
        speed = max(free_flow * (1 - k), MIN_SPEED_KMH)
        vpm = self._vpm_capacity * min(load, MAX_LOAD) * (1.0 + jitter(rng, 0.04))
        return speed, vpm

    def detections(self, t: float, fields: Fields, until_s: float) -> list[tuple[float, Event]]:
        """The events the analytics publish in [t, until_s), given the counts measured at `t`."""
        frozen = self._world.frozen(self._device.id, t)
        return self._detections.step(t, fields, until_s, demand(t), frozen)


class Detections:
    """A camera's events: floods and jams from its counts, violations and plates at random."""

    def __init__(self, device: Device, rng: random.Random) -> None:
        self._id, self._rng = device.id, rng
        self._analytics = frozenset(device.analytics)
        self._zones = device.zones
        self._hotspot = rng.choice(device.zones) if device.zones else None
        self._due: list[tuple[float, int, Event]] = []  # messages scheduled, by time
        self._order = itertools.count()  # ties keep the order they were scheduled in
        self._flood: tuple[str, float] | None = None  # open event id, its next update
        self._jam: tuple[str, float] | None = None

    def step(self, t: float, fields: Fields, until_s: float, load: float,
             frozen: bool) -> list[tuple[float, Event]]:
        if not frozen:
            self._states(t, fields)
            self._arrivals(t, until_s, load)
        out = []
        while self._due and self._due[0][0] < until_s:
            at, _, event = heapq.heappop(self._due)
            out.append((at, event))
        return out

    # --- from the counts ----------------------------------------------------------------

    def _states(self, t: float, fields: Fields) -> None:
        water, speed = fields.get("water_score"), fields.get("mean_speed_kmh")
        if "flood" in self._analytics and isinstance(water, float):
            self._flood = self._ongoing(self._flood, t, "flood", water, water >= SEEN,
                                        water < CLEARED, self._zone_for_water())
        if "congestion" in self._analytics and isinstance(speed, float):
            score = min(1.0, max(0.0, 1.0 - speed / JAM_CLEARED_KMH) + 0.5)
            self._jam = self._ongoing(self._jam, t, "congestion", score, speed < JAM_KMH,
                                      speed > JAM_CLEARED_KMH, self._zones[0] if self._zones
                                      else None)  # fmt: skip

    def _ongoing(self, state: tuple[str, float] | None, t: float, label: str, score: float,
                 begins: bool, ends: bool, zone: str | None) -> tuple[str, float] | None:
        """A detection held while its condition lasts: new, an update every 5 min, end."""
        score = round(min(max(score, 0.0), 1.0), 3)
        if state is None:
            if not begins:
                return None
            event_id = self._event_id(t)
            self._schedule(t, event_id, "new", label, score, zone)
            return event_id, t + UPDATE_S
        event_id, next_update = state
        if ends:
            self._schedule(t, event_id, "end", label, score, zone)
            return None
        if t >= next_update:
            self._schedule(t, event_id, "update", label, score, zone)
            return event_id, t + UPDATE_S
        return state

    def _zone_for_water(self) -> str | None:
        for zone in (UNDERPASS_ZONE, "road", "riverbank"):
            if zone in self._zones:
                return zone
        return self._zones[0] if self._zones else None

    # --- at random ----------------------------------------------------------------------

    def _arrivals(self, t: float, until_s: float, load: float) -> None:
        hours = (until_s - t) / HOUR_S
        if "illegal-parking" in self._analytics:
            # Parking follows the day's activity, not the jam: capped at full demand.
            self._maybe(t, until_s, ILLEGAL_PARKING_PER_H * min(load, 1.0) * hours,
                        "illegal-parking", PARKED_S)
        if "wrong-way" in self._analytics:
            self._maybe(t, until_s, WRONG_WAY_PER_H * min(load, MAX_LOAD) * hours,
                        "wrong-way", WRONG_WAY_S)
        if "plate" in self._analytics:
            self._maybe(t, until_s, PLATES_PER_H * min(load, MAX_LOAD) * hours, "plate", PLATE_S)

    def _maybe(self, t: float, until_s: float, expected: float, label: str,
               lasting: tuple[float, float]) -> None:
        """At most one new detection of `label` in [t, until_s), with chance `expected`."""
        rng = self._rng
        if rng.random() >= expected:
            return
        start = rng.uniform(t, until_s)
        event_id = self._event_id(start)
        zone = self._violation_zone() if label != "plate" else self._any_zone()
        plate = None
        if label == "plate":
            plate = rng.choice(WATCHED_PLATES) if rng.random() < LISTED_SHARE else random_plate(rng)
        score = round(rng.uniform(*SCORE), 3)
        end = start + rng.uniform(*lasting)
        self._schedule(start, event_id, "new", label, score, zone, plate)
        update = start + UPDATE_S
        while update < end:
            score = round(min(1.0, score + rng.uniform(0.0, 0.02)), 3)
            self._schedule(update, event_id, "update", label, score, zone, plate)
            update += UPDATE_S
        self._schedule(end, event_id, "end", label, score, zone, plate)

    def _violation_zone(self) -> str | None:
        if self._hotspot is not None and self._rng.random() < HOTSPOT_SHARE:
            return self._hotspot
        return self._any_zone()

    def _any_zone(self) -> str | None:
        return self._rng.choice(self._zones) if self._zones else None

    def _event_id(self, t: float) -> str:
        suffix = "".join(self._rng.choice(_ID_CHARS) for _ in range(EVENT_ID_SUFFIX))
        return f"{t:.6f}-{suffix}"

    def _schedule(self, at: float, event_id: str, kind: EventType, label: str, score: float,
                  zone: str | None, plate: str | None = None) -> None:
        event: Event = {"ts": round(at, 3), "event_id": event_id, "type": kind,
                        "label": label, "score": score}  # fmt: skip
        if zone is not None:
            event["zone"] = zone
        if plate is not None:
            event["plate"] = plate
        heapq.heappush(self._due, (at, next(self._order), event))
