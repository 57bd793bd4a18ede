"""Device behaviours: what one simulated device measures at a moment, and when it reports next.

A behaviour holds the state of one device (a river's slow wander, a road's character) and
draws from that device's own `random.Random`, so a device reads the same whatever else runs.
The scenario's events reach it through the `World`, which is a pure function of time.
"""

from __future__ import annotations

import math
import random
from typing import Final, Protocol

from devices.kinds import Kind
from devices.registry import Device
from simulators.calendar import HOUR_S, MINUTE_S, SUNDAY, DailyProfile, YearlyProfile, weekday
from simulators.cameras import Camera
from simulators.noise import Fields, add_diagnostics, jitter, wander
from simulators.rivers import tide_cm
from simulators.roads import Road
from simulators.world import World, is_sea_gauge, normal_range


class Behaviour(Protocol):
    """One device's measurements and reporting schedule."""

    def first_time(self, start_s: float) -> float:
        """When the device first reports at or after `start_s`."""
        ...

    def measure(self, t: float) -> Fields:
        """The measured fields at `t` (the delivery adds `ts` and `seq`)."""
        ...

    def next_time(self, t: float) -> float:
        """When it reports after the reading it measured at `t`."""
        ...


def behaviour_for(device: Device, world: World, rng: random.Random, interval_s: float) -> Behaviour:
    """A fresh behaviour for `device`, reporting every `interval_s` when nothing is amiss."""
    if device.kind is Kind.WATER_LEVEL:
        return Gauge(device, world, rng, interval_s)
    if device.kind is Kind.AIR_QUALITY:
        return AirMonitor(device, world, rng, interval_s)
    if device.kind is Kind.CAMERA:
        return Camera(device, world, rng, interval_s, world.device(device.watches))
    return Road(device, world, rng, interval_s)


# --- water level ------------------------------------------------------------------------

LEVEL_TAU_S = 6 * HOUR_S  # a river at normal level wanders over hours, not minutes
LEVEL_SD_SHARE = 0.35  # of half the normal band: the wander stays mostly inside it
READ_NOISE_CM = 1.0  # sensor and surface ripple
SEA_NOISE_CM = 2.5  # waves at the sea gauge
SEA_WANDER_SHARE = 0.3  # weather moves the sea less than rain moves a river
LEVEL_BOUNDS_CM = (-390.0, 1190.0)  # inside the hard bounds of devices.readings
# jakarta.md section 1, "Reading interval": hourly at normal, every 30 min once in siaga,
# every 5 min at Siaga 1. Indexed by status: 0 normal, 1..3 = Siaga 3, 2, 1.
SIAGA_INTERVAL_S: Final = (math.inf, 30 * MINUTE_S, 30 * MINUTE_S, 5 * MINUTE_S)
SIAGA_THRESHOLDS: Final = ("siaga3_cm", "siaga2_cm", "siaga1_cm")
JITTER_MAX_S = 60.0  # a gauge's report leaves within a minute of the hour (hh:00)


class Gauge:
    """A river or sea gauge: normal wander, scenario floods and replays, tide at sea."""

    def __init__(self, device: Device, world: World, rng: random.Random, interval_s: float):
        self._id, self._world, self._rng = device.id, world, rng
        low, high = normal_range(device)
        self._low, self._high, self._mid = low, high, (low + high) / 2
        self._sd = (high - low) / 2 * LEVEL_SD_SHARE
        self._sea = is_sea_gauge(device)
        self._replay = world.replay(device.id, "level_cm")
        self._ladder = tuple(device.thresholds[name] for name in SIAGA_THRESHOLDS
                             if name in device.thresholds)  # fmt: skip
        self._interval_s = interval_s
        self._jitter_s = rng.uniform(0.0, min(JITTER_MAX_S, interval_s / 10))
        self._wander = rng.gauss(0.0, self._sd)
        self._last_t: float | None = None
        self.status = 0  # 0 normal, 1..3 = Siaga 3..1, from the last reading

    def first_time(self, start_s: float) -> float:
        interval, jitter = self._interval_s, self._jitter_s
        return math.ceil((start_s - jitter) / interval) * interval + jitter

    def next_time(self, t: float) -> float:
        interval = min(self._interval_s, SIAGA_INTERVAL_S[self.status])
        jitter = self._jitter_s
        # Reports stay on the clock (hh:00, hh:30, hh:05...) as the gauge's status changes.
        return (math.floor((t - jitter) / interval + 1e-9) + 1) * interval + jitter

    def measure(self, t: float) -> Fields:
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        self._wander = wander(self._wander, dt, LEVEL_TAU_S, self._sd, self._rng)
        level = self._water(t) + jitter(self._rng, SEA_NOISE_CM if self._sea else READ_NOISE_CM)
        if self._replay is not None:
            weight, value = self._replay.at(t)
            if weight > 0.0:
                level = weight * (value + jitter(self._rng, READ_NOISE_CM)) + (1 - weight) * level
        level = round(min(max(level, LEVEL_BOUNDS_CM[0]), LEVEL_BOUNDS_CM[1]), 1)
        # The status of what the gauge reports, as the operators (and the rules) see it.
        self.status = sum(1 for threshold in self._ladder if level >= threshold)
        fields: Fields = {"level_cm": level}
        add_diagnostics(fields, self._rng)
        return fields

    def _water(self, t: float) -> float:
        if self._sea:
            weather = self._wander * SEA_WANDER_SHARE
            return self._mid + tide_cm(t) + self._world.surge(self._id, t) + weather
        base = min(max(self._mid + self._wander, self._low), self._high)
        return base + self._world.flood_excess(self._id, t)


# --- air quality ------------------------------------------------------------------------

# jakarta.md section 3. Annual PM2.5 36-49 ug/m3 (IQAir 2019-2022).
PM25_MEAN = 38.0
# Diurnal: high from late night through the morning commute, lowest mid-afternoon when
# the mixing layer is deepest (e.g. 1 Oct 2023: 61 at 08:00, ~21 at the low). Mean ~1.
PM_DAY: Final = DailyProfile((
    (0, 1.15), (3, 1.2), (6, 1.35), (7, 1.5), (8, 1.5), (9, 1.3), (11, 0.95),
    (13, 0.7), (15, 0.55), (17, 0.7), (19, 0.9), (21, 1.05), (24, 1.15),
))  # fmt: skip
# Seasonal: the dry season (Jun-Sep) is worst. South Jakarta 2016: Jun-Aug 57.4 against
# ~20 in Dec-Feb; with the mean above, these factors give ~54 and ~24.
PM_SEASON: Final = YearlyProfile((0.62, 0.6, 0.7, 0.85, 1.05, 1.3,
                                  1.45, 1.5, 1.35, 1.1, 0.85, 0.65))  # fmt: skip
PM_SUNDAY = 0.85  # fewer vehicles, less exhaust and dust
PM10_RATIO = (1.3, 1.8)  # PM10 exceeds PM2.5; urban sites sit in this band
PM_CEILING = 990.0  # sensors saturate at 1,000 (jakarta.md section 5)
# Ozone is photochemical: near zero at night, peaking in the early-afternoon sun.
O3_DAY: Final = DailyProfile(((0, 0.4), (6, 0.3), (10, 1.2), (13, 2.0), (16, 1.4),
                              (19, 0.6), (24, 0.4)))  # fmt: skip
# NO2, CO and hydrocarbons come from exhaust and follow the two commutes.
EXHAUST_DAY: Final = DailyProfile((
    (0, 0.7), (4, 0.6), (7.5, 1.5), (10, 1.1), (14, 0.8), (18, 1.4), (21, 1.1), (24, 0.7),
))  # fmt: skip
TEMP_DAY: Final = DailyProfile(((0, 27.0), (5, 25.5), (9, 28.5), (14, 33.0), (18, 30.0),
                                (24, 27.0)))  # fmt: skip
TEMP_SEASON: Final = YearlyProfile((-0.6, -0.6, -0.3, 0.2, 0.4, 0.2,
                                    0.0, 0.3, 0.8, 0.9, 0.4, -0.3))  # fmt: skip
# Daily means of the gases, ug/m3, well inside ISPU "Baik"/"Sedang" (section 3 table).
GAS_MEAN: Final = (("o3", 45.0), ("no2", 38.0), ("so2", 22.0), ("co", 1100.0), ("hc", 28.0))
RAIN_COOLING_C = 3.0
RH_AT_24C, RH_PER_DEGC, RH_IN_RAIN = 95.0, 3.5, 93.0  # humidity falls as the day warms
SITE_SPREAD = 0.2  # sites differ: a roadside monitor reads higher than a park
DRIFT_TAU_S, DRIFT_SD, NOISE_SD = 3 * HOUR_S, 0.15, 0.06  # weather drift and sensor noise


class AirMonitor:
    """PM2.5/PM10 and gases with Jakarta's day and season, washed out by rain, raised by haze."""

    def __init__(self, device: Device, world: World, rng: random.Random, interval_s: float):
        self._id, self._world, self._rng = device.id, world, rng
        self._interval_s = interval_s
        self._phase_s = rng.uniform(0.0, interval_s)
        self._site = math.exp(rng.gauss(0.0, SITE_SPREAD))
        self._pm10_ratio = rng.uniform(*PM10_RATIO)
        self._drift = rng.gauss(0.0, DRIFT_SD)
        self._last_t: float | None = None
        self._replay = world.replay(device.id, "pm25")

    def first_time(self, start_s: float) -> float:
        return start_s + self._phase_s

    def next_time(self, t: float) -> float:
        return t + self._interval_s

    def measure(self, t: float) -> Fields:
        rng, world = self._rng, self._world
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        self._drift = wander(self._drift, dt, DRIFT_TAU_S, DRIFT_SD, rng)
        rain = world.rain(t)
        weather = self._site * math.exp(self._drift)
        pm25 = self._pm25(t, weather)
        pm10 = pm25 * self._pm10_ratio * (1.0 + jitter(rng, NOISE_SD))
        fields: Fields = {"pm25": round(pm25, 1), "pm10": round(min(pm10, PM_CEILING), 1)}
        exhaust = EXHAUST_DAY.at(t) * weather
        shapes = {"o3": O3_DAY.at(t) * (1.0 - 0.5 * rain), "no2": exhaust, "so2": weather,
                  "co": exhaust, "hc": exhaust}  # fmt: skip
        for name, mean in GAS_MEAN:
            fields[name] = round(mean * shapes[name] * (1.0 + jitter(rng, NOISE_SD)), 1)
        temp_c = TEMP_DAY.at(t) + TEMP_SEASON.at(t) - RAIN_COOLING_C * rain + jitter(rng, 0.3)
        rh = max(RH_AT_24C - (temp_c - 24.0) * RH_PER_DEGC, RH_IN_RAIN * rain)
        fields["temp_c"] = round(temp_c, 1)
        fields["rh_pct"] = round(min(max(rh + jitter(rng, 1.5), 30.0), 100.0), 1)
        add_diagnostics(fields, rng)
        return fields

    def _pm25(self, t: float, weather: float) -> float:
        world = self._world
        sunday = PM_SUNDAY if weekday(t) == SUNDAY else 1.0
        pm25 = (PM25_MEAN * PM_SEASON.at(t) * PM_DAY.at(t) * sunday * weather
                * world.washout(t) * world.haze(self._id, t)
                * (1.0 + jitter(self._rng, NOISE_SD)))  # fmt: skip
        if self._replay is not None:
            weight, value = self._replay.at(t)
            pm25 = weight * value + (1.0 - weight) * pm25
        return min(max(pm25, 0.0), PM_CEILING)
