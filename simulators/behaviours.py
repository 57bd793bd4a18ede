"""Device behaviours: what a simulated device of each kind measures at a given moment."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Protocol

from devices.kinds import Kind
from devices.registry import Device

WIB_OFFSET_S = 7 * 3600  # Jakarta keeps UTC+7 (WIB) all year, with no daylight saving
DAY_S = 86_400

# Battery-powered nodes piggyback housekeeping on some readings only, so the optional
# fields of SPEC section 1 show up now and then, as they do from real firmware.
BATTERY_SHARE = 0.1
RSSI_SHARE = 0.2
BATTERY_V = (3.6, 4.15)  # a charged 1-cell Li-ion pack (hard bounds 2.5-4.3 V in jakarta.md)
RSSI_DBM = (-78.0, 8.0, -115.0, -45.0)  # mean, spread, floor, ceiling of a urban LoRa/cellular link

Profile = tuple[tuple[float, float], ...]


class Behaviour(Protocol):
    """Produces the measured fields of one reading; the runner adds `ts` and `seq`.

    A behaviour keeps the state of every device it has seen (a random walk, a site's
    character), keyed by device id, so one instance serves a kind's whole fleet and can
    later couple devices (a flood wave travelling downstream).
    """

    def next_reading(
        self, device: Device, sim_time_s: float, rng: random.Random
    ) -> dict[str, object]: ...


def behaviour_for(kind: Kind) -> Behaviour:
    """A fresh behaviour, with no device state yet, for devices of `kind`."""
    behaviours: dict[Kind, type[WaterLevel | AirQuality | Traffic]] = {
        Kind.WATER_LEVEL: WaterLevel,
        Kind.AIR_QUALITY: AirQuality,
        Kind.TRAFFIC: Traffic,
    }
    return behaviours[kind]()


def local_hour(sim_time_s: float) -> float:
    """The hour of the day in Jakarta (0 <= h < 24) at epoch second `sim_time_s`."""
    return ((sim_time_s + WIB_OFFSET_S) % DAY_S) / 3600


def interpolate(profile: Profile, hour: float) -> float:
    """Piecewise-linear value of a daily `profile` of (hour, value) points from 0 to 24."""
    for (h0, v0), (h1, v1) in itertools.pairwise(profile):
        if h0 <= hour <= h1:
            return v0 + (v1 - v0) * (hour - h0) / (h1 - h0)
    return profile[-1][1]


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def add_diagnostics(fields: dict[str, object], rng: random.Random) -> None:
    """Adds battery voltage and signal strength to some readings."""
    if rng.random() < BATTERY_SHARE:
        fields["battery_v"] = round(rng.uniform(*BATTERY_V), 2)
    if rng.random() < RSSI_SHARE:
        mean, spread, floor, ceiling = RSSI_DBM
        fields["rssi_dbm"] = round(clamp(rng.gauss(mean, spread), floor, ceiling))


# --- water level ------------------------------------------------------------------------

FALLBACK_NORMAL_CM = (0.0, 100.0)  # a gauge whose catalog entry has no normal range
WALK_STEP = 0.02  # one reading moves the level by ~2% of the normal range: slow, like a river


@dataclass(slots=True)
class _Walk:
    """A level wandering inside [low, high], reflected at the edges."""

    level: float
    low: float
    high: float

    def step(self, rng: random.Random) -> float:
        span = self.high - self.low
        level = self.level + rng.gauss(0.0, span * WALK_STEP)
        if level < self.low:
            level = 2 * self.low - level
        if level > self.high:
            level = 2 * self.high - level
        self.level = clamp(level, self.low, self.high)
        return self.level


def normal_range(device: Device) -> tuple[float, float]:
    """The gauge's normal band from its thresholds, or a fallback when it has none."""
    low = device.thresholds.get("normal_low_cm")
    high = device.thresholds.get("normal_high_cm")
    if low is None or high is None or not low < high:
        return FALLBACK_NORMAL_CM
    return low, high


class WaterLevel:
    """A gauge's level as a random walk inside its normal range (no rain events yet)."""

    def __init__(self) -> None:
        self._walks: dict[str, _Walk] = {}

    def next_reading(
        self, device: Device, sim_time_s: float, rng: random.Random
    ) -> dict[str, object]:
        walk = self._walks.get(device.id)
        if walk is None:
            low, high = normal_range(device)
            walk = self._walks[device.id] = _Walk(rng.uniform(low, high), low, high)
        fields: dict[str, object] = {"level_cm": round(walk.step(rng), 1)}
        add_diagnostics(fields, rng)
        return fields


# --- air quality ------------------------------------------------------------------------

# Jakarta's PM shape: high from late night through the morning commute (peak ~07-08),
# lowest mid-afternoon when the mixing layer is deepest (jakarta.md section 3).
PM_PROFILE: Profile = (
    (0, 1.15), (3, 1.2), (6, 1.35), (7.5, 1.55), (9, 1.3),
    (12, 0.8), (15, 0.55), (18, 0.8), (21, 1.0), (24, 1.15),
)  # fmt: skip
# Ozone is photochemical: near zero at night, peaking in the early afternoon sun.
O3_PROFILE: Profile = ((0, 0.4), (6, 0.3), (10, 1.2), (13, 2.0), (16, 1.4), (19, 0.6), (24, 0.4))
# NO2 and CO come from exhaust and follow the two commutes.
EXHAUST_PROFILE: Profile = (
    (0, 0.7), (4, 0.6), (7.5, 1.5), (10, 1.1), (14, 0.8), (18, 1.4), (21, 1.1), (24, 0.7),
)  # fmt: skip
TEMP_PROFILE: Profile = ((0, 27.0), (5, 25.5), (9, 28.5), (14, 33.0), (18, 30.0), (24, 27.0))

# Daily-mean concentrations in ug/m3, plausible for Jakarta (annual PM2.5 ~36-49).
BASE_UG_M3 = {"pm25": 38.0, "o3": 55.0, "no2": 40.0, "so2": 20.0, "co": 1200.0}
PM10_RATIO = (1.3, 1.8)  # PM10 always exceeds PM2.5; urban ratios sit in this band
SITE_SPREAD = 0.2  # sites differ: a roadside monitor reads higher than a park
DRIFT_KEEP, DRIFT_SD, NOISE_SD = 0.9, 0.05, 0.08  # slow weather drift plus sensor noise
RH_AT_24C, RH_PER_DEGC = 95.0, 3.5  # humidity falls as the afternoon warms


@dataclass(slots=True)
class _Site:
    """What makes one monitor differ from another, and its current weather drift."""

    factor: float
    drift: float = 0.0


class AirQuality:
    """Pollutants with a Jakarta diurnal shape, temperature and humidity (no seasons yet)."""

    def __init__(self) -> None:
        self._sites: dict[str, _Site] = {}

    def next_reading(
        self, device: Device, sim_time_s: float, rng: random.Random
    ) -> dict[str, object]:
        site = self._sites.get(device.id)
        if site is None:
            site = self._sites[device.id] = _Site(math.exp(rng.gauss(0.0, SITE_SPREAD)))
        site.drift = DRIFT_KEEP * site.drift + rng.gauss(0.0, DRIFT_SD)
        hour = local_hour(sim_time_s)

        def level(name: str, profile: Profile) -> float:
            noise = math.exp(site.drift + rng.gauss(0.0, NOISE_SD))
            return BASE_UG_M3[name] * interpolate(profile, hour) * site.factor * noise

        pm25 = level("pm25", PM_PROFILE)
        temp_c = interpolate(TEMP_PROFILE, hour) + rng.gauss(0.0, 0.4)
        fields: dict[str, object] = {
            "pm25": round(pm25, 1),
            "pm10": round(pm25 * rng.uniform(*PM10_RATIO), 1),
            "o3": round(level("o3", O3_PROFILE), 1),
            "no2": round(level("no2", EXHAUST_PROFILE), 1),
            "so2": round(level("so2", ((0, 1.0), (24, 1.0))), 1),
            "co": round(level("co", EXHAUST_PROFILE)),
            "temp_c": round(temp_c, 1),
            "rh_pct": round(clamp(RH_AT_24C - (temp_c - 24) * RH_PER_DEGC, 30.0, 100.0), 1),
        }
        add_diagnostics(fields, rng)
        return fields


# --- traffic ----------------------------------------------------------------------------

# Weekday demand relative to the evening peak: commutes at 07-09 and 17-19 (jakarta.md 4).
DEMAND_PROFILE: Profile = (
    (0, 0.15), (5, 0.3), (7, 0.85), (8, 1.0), (9, 0.8), (11, 0.6),
    (15, 0.65), (17, 0.95), (18, 1.0), (19, 0.8), (22, 0.35), (24, 0.15),
)  # fmt: skip
JAM_OCCUPANCY_PCT = 60.0  # occupancy at which traffic stands still (Greenshields' jam density)
PEAK_LOAD = 0.65  # share of jam density at peak demand: ~20 km/h, Jakarta's rush-hour speed
FREE_FLOW_KMH = (45.0, 65.0)  # urban arterials, limit 50 km/h, tolerated a little above
LANES = (2, 3, 4)
LANE_CAPACITY_VPH = 1800.0  # mixed traffic per lane at capacity (MKJI urban base ~1,650 smp)
MIN_SPEED_KMH = 3.0  # a jam still creeps; a reading of 0 would mean a closed road


@dataclass(slots=True)
class _Road:
    """A sensor's road: its free-flow speed, its lanes and its current traffic drift."""

    free_flow_kmh: float
    lanes: int
    drift: float = 0.0


class Traffic:
    """Speed, volume and occupancy tied by Greenshields' speed-density relation."""

    def __init__(self) -> None:
        self._roads: dict[str, _Road] = {}

    def next_reading(
        self, device: Device, sim_time_s: float, rng: random.Random
    ) -> dict[str, object]:
        road = self._roads.get(device.id)
        if road is None:
            road = _Road(rng.uniform(*FREE_FLOW_KMH), rng.choice(LANES))
            self._roads[device.id] = road
        road.drift = DRIFT_KEEP * road.drift + rng.gauss(0.0, DRIFT_SD)
        demand = interpolate(DEMAND_PROFILE, local_hour(sim_time_s))
        load = clamp(demand * PEAK_LOAD * math.exp(road.drift + rng.gauss(0.0, NOISE_SD)),
                     0.01, 0.95)  # fmt: skip
        speed = max(road.free_flow_kmh * (1 - load), MIN_SPEED_KMH)
        volume = road.lanes * LANE_CAPACITY_VPH * 4 * load * (1 - load)
        fields: dict[str, object] = {
            "speed_kmh": round(speed, 1),
            "volume_vph": round(volume),
            "occupancy_pct": round(load * JAM_OCCUPANCY_PCT, 1),
        }
        add_diagnostics(fields, rng)
        return fields
