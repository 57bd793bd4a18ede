"""The scenario's city through time: rain, haze, incidents, replays, rivers and the sea.

Everything here is a pure function of simulated time (no randomness): the behaviours add
each device's own noise on top, and one device can ask about another (a road about the
gauge next to it) without either being simulated in a particular order.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from devices.kinds import Kind
from devices.registry import Device, Registry
from simulators.calendar import HOUR_S, DailyProfile
from simulators.malformed import PRIMARY
from simulators.rivers import GRID_S, LONGEST_TRAVEL_S, REACHES, Routing, hydrograph, tide_cm
from simulators.scenario import (
    Event,
    Freeze,
    Glare,
    Haze,
    Incident,
    Keyframes,
    Rain,
    Scenario,
    ScenarioError,
)

FALLBACK_NORMAL_CM: Final = (0.0, 100.0)  # a gauge whose catalog entry has no normal range
HEAVY_RAIN_MM_H = 20.0  # from this intensity on, rain has its full effect on air and roads
WASHOUT_SHARE = 0.6  # share of particulates heavy rain removes while it falls
WASHOUT_RECOVERY_S = 6 * HOUR_S  # particulates build back up over hours once it stops
RECESSION_TAILS = 8  # a rain's rise is followed for this many recession time constants
ROUTING_MARGIN_S = 6 * HOUR_S  # past the last wave's arrival, so it drains off the grid
LINK_RADIUS_KM = 5.0  # a road within this distance of a gauge floods when the gauge does
KM_PER_DEGREE = 111.32  # at the equator; Jakarta lies at 6 degrees south
# A low road (an underpass) ponds when rain outruns its drains and pumps: the excess
# collects, and the pumps empty it once the rain stops. Illustrative figures: a downpour
# of 25 mm/h for an hour and a half leaves puddles, a day of 15 mm/h (1 January 2020)
# floods it.
DRAIN_MM_H = 10.0  # rain the drains take away as it falls
PUMP_MM_H = 15.0  # how fast the pond empties after the rain
POND_FULL_MM = 50.0  # excess rain at which the underpass is under water
# Darkness for headlight glare (Jakarta, near the equator: dusk ~18:00, dawn ~05:45 all year).
NIGHT: Final = DailyProfile(((0, 1.0), (5.5, 1.0), (6.25, 0.0), (18.0, 0.0), (18.75, 1.0),
                             (24, 1.0)))  # fmt: skip


def normal_range(device: Device) -> tuple[float, float]:
    """The gauge's normal band from its thresholds, or a fallback when it has none."""
    low = device.thresholds.get("normal_low_cm")
    high = device.thresholds.get("normal_high_cm")
    if low is None or high is None or not low < high:
        return FALLBACK_NORMAL_CM
    return low, high


def is_sea_gauge(device: Device) -> bool:
    """A tidal gauge (Pasar Ikan): the catalog labels its river as the sea (Laut)."""
    river = device.labels.get("river", "").lower()
    return "sea" in river or "laut" in river


def distance_km(a: Device, b: Device) -> float:
    """Flat-earth distance: accurate enough across a city."""
    dx = (a.lon - b.lon) * math.cos(math.radians((a.lat + b.lat) / 2))
    return KM_PER_DEGREE * math.hypot(a.lat - b.lat, dx)


class Replay:
    """Keyframes through time: linear between points, eased in and out over `ease_s`."""

    __slots__ = ("_ease_s", "_times", "_values")

    def __init__(self, points: Sequence[tuple[float, float]], ease_s: float) -> None:
        self._times = [t for t, _ in points]
        self._values = [v for _, v in points]
        self._ease_s = ease_s

    @property
    def span(self) -> tuple[float, float]:
        return self._times[0] - self._ease_s, self._times[-1] + self._ease_s

    def at(self, t: float) -> tuple[float, float]:
        """(weight, value): how much the replay counts at `t` (0..1) and what it says."""
        times, values = self._times, self._values
        if t <= times[0]:
            return self._eased(times[0] - t), values[0]
        if t >= times[-1]:
            return self._eased(t - times[-1]), values[-1]
        i = bisect.bisect_right(times, t)
        t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
        return 1.0, v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def _eased(self, away_s: float) -> float:
        if self._ease_s <= 0:
            return 1.0 if away_s == 0 else 0.0
        return max(0.0, 1.0 - away_s / self._ease_s)


@dataclass(frozen=True, slots=True)
class Spell:
    """A spell of something: ramps up from `start_s`, holds until `end_s`, ramps down."""

    start_s: float
    end_s: float
    ramp_s: float = 0.0
    tail_s: float = 0.0

    def weight(self, t: float) -> float:
        if t < self.start_s or t >= self.end_s + self.tail_s:
            return 0.0
        if t < self.end_s:
            return min(1.0, (t - self.start_s) / self.ramp_s) if self.ramp_s > 0 else 1.0
        return 1.0 - (t - self.end_s) / self.tail_s


class World:
    """The events of a scenario, placed in time, and what they do to each device."""

    def __init__(self, scenario: Scenario, registry: Registry) -> None:
        self.warnings: list[str] = []
        self._registry = registry
        origin = scenario.start_s
        self._rains: list[tuple[float, float, float]] = []  # start, end, strength 0..1
        self._rain_mm: list[tuple[float, float, float]] = []  # start, end, mm/h
        self._freezes: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._glares: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        self._rises: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        self._replays: dict[tuple[str, str], Replay] = {}
        self._incidents: dict[str, list[tuple[Spell, float]]] = defaultdict(list)
        self._hazes: list[tuple[Spell, float, frozenset[str]]] = []
        self._robs: list[tuple[Spell, float, frozenset[str]]] = []
        for event in scenario.events:
            self._place(event, origin)
        self._routing = self._route()
        self._middles = {gauge.id: sum(normal_range(gauge)) / 2
                         for gauge in registry.by_kind(Kind.WATER_LEVEL)}  # fmt: skip
        self._seas = frozenset(g.id for g in registry.by_kind(Kind.WATER_LEVEL) if is_sea_gauge(g))
        self._links = {
            device.id: self._gauges_near(device) for device in registry.by_kind(Kind.TRAFFIC)
        }

    # --- placing the events -----------------------------------------------------------

    def _place(self, event: Event, origin: float) -> None:
        if isinstance(event, Freeze | Glare):
            self._place_camera_fault(event, origin)
        elif isinstance(event, Rain):
            self._place_rain(event, origin + event.at_s)
        elif isinstance(event, Keyframes):
            self._place_keyframes(event, origin)
        elif isinstance(event, Incident):
            if self._check(event.device, Kind.TRAFFIC, "an incident") is not None:
                start = origin + event.at_s
                spell = Spell(start, start + event.duration_s, 0.0, event.recovery_s)
                self._incidents[event.device].append((spell, event.severity))
        elif isinstance(event, Haze):
            start = origin + event.at_s
            spell = Spell(start, start + event.duration_s, event.ramp_s, event.ramp_s)
            self._hazes.append((spell, event.factor - 1.0, frozenset(event.devices)))
        else:
            start, half = origin + event.at_s, event.duration_s / 2
            spell = Spell(start, start + half, half, half)  # rises and falls with the tides
            self._robs.append((spell, event.rise_cm, frozenset(event.devices)))

    def _place_camera_fault(self, event: Freeze | Glare, origin: float) -> None:
        if self._check(event.device, Kind.CAMERA, f"a {type(event).__name__.lower()}") is None:
            return
        if isinstance(event, Freeze):
            start = origin + event.at_s
            self._freezes[event.device].append((start, start + event.duration_s))
            return
        start = origin + event.at_s if event.at_s is not None else -math.inf
        end = start + event.duration_s if event.duration_s is not None else math.inf
        self._glares[event.device].append((start, end, event.water_score))

    def _place_rain(self, rain: Rain, start: float) -> None:
        strength = min(1.0, rain.intensity_mm_h / HEAVY_RAIN_MM_H)
        self._rains.append((start, start + rain.duration_s, strength))
        self._rain_mm.append((start, start + rain.duration_s, rain.intensity_mm_h))
        for gauge, peak in rain.rises:
            self._check(gauge, Kind.WATER_LEVEL, "a rain's rises", allow_reach=True)
            self._rises[gauge].append((start, peak, rain.rise_time_s, rain.recession_s))

    def _place_keyframes(self, keyframes: Keyframes, origin: float) -> None:
        device = self._check(keyframes.device, None, "keyframes")
        if device is None:
            return
        main = PRIMARY[device.kind]
        if keyframes.field not in (None, main):
            raise ScenarioError(f"keyframes of {device.id}: a {device.kind} device has no "
                                f"{keyframes.field} to replay (use {main})")  # fmt: skip
        points = [(origin + at_s, value) for at_s, value in keyframes.points]
        self._replays[(device.id, main)] = Replay(points, keyframes.ease_s)

    def _check(
        self, device_id: str, kind: Kind | None, what: str, allow_reach: bool = False
    ) -> Device | None:
        """The named device, None (with a warning) if the catalog lacks it; wrong kind raises."""
        device = self._registry.get(device_id)
        if device is None:
            on_reach = any(device_id in (r.upstream, r.downstream) for r in REACHES)
            if not (allow_reach and on_reach):
                self.warnings.append(f"{what} names {device_id!r}, not in the catalog: ignored")
            return None
        if kind is not None and device.kind is not kind:
            raise ScenarioError(f"{what} names {device_id!r}, a {device.kind} device, "
                                f"where a {kind} device is expected")  # fmt: skip
        return device

    def _route(self) -> Routing | None:
        spans = [(start, start + rise + RECESSION_TAILS * recession)
                 for rises in self._rises.values()
                 for start, _, rise, recession in rises]  # fmt: skip
        spans += [replay.span for (_, f), replay in self._replays.items() if f == "level_cm"]
        if not spans:
            return None
        t0 = min(start for start, _ in spans) - GRID_S
        t1 = max(end for _, end in spans) + LONGEST_TRAVEL_S + ROUTING_MARGIN_S
        return Routing(REACHES, self._own_excess, t0, t1)

    def _gauges_near(self, road: Device) -> tuple[tuple[str, float, float], ...]:
        """(gauge id, Siaga 3 level, cm from Siaga 3 to Siaga 1) of the gauges near a road
        that this scenario can flood (any gauge, once its water has somewhere to come from).
        """
        if self._routing is None and not self._rises and not self._robs:
            return ()
        return tuple(
            (gauge.id, gauge.thresholds["siaga3_cm"],
             gauge.thresholds["siaga1_cm"] - gauge.thresholds["siaga3_cm"])
            for gauge in self._registry.by_kind(Kind.WATER_LEVEL)
            if "siaga3_cm" in gauge.thresholds and "siaga1_cm" in gauge.thresholds
            and distance_km(road, gauge) <= LINK_RADIUS_KM
        )  # fmt: skip

    # --- rivers and sea ---------------------------------------------------------------

    def _own_excess(self, gauge: str, t: float, inflow: float) -> float:
        """A gauge's level above its normal middle, from its rain, inflow and replay."""
        own = self.rain_rise(gauge, t) + inflow
        replay = self._replays.get((gauge, "level_cm"))
        device = self._registry.get(gauge)
        if replay is None or device is None:
            return own
        weight, value = replay.at(t)
        low, high = normal_range(device)
        return weight * (value - (low + high) / 2) + (1.0 - weight) * own

    def rain_rise(self, gauge: str, t: float) -> float:
        """How far the scenario's rain has raised `gauge` itself at `t`, cm."""
        rises = self._rises.get(gauge)
        if not rises:
            return 0.0
        return sum(hydrograph(t - start, peak, rise, rec) for start, peak, rise, rec in rises)

    def flood_excess(self, gauge: str, t: float) -> float:
        """Rain on the gauge's own catchment plus the waves arriving from upstream, cm."""
        inflow = 0.0 if self._routing is None else self._routing.inflow(gauge, t)
        return self.rain_rise(gauge, t) + inflow

    def surge(self, gauge: str, t: float) -> float:
        """The extra height of coastal flooding (rob) at a sea gauge, cm."""
        return sum(rise * spell.weight(t) for spell, rise, ids in self._robs
                   if not ids or gauge in ids)  # fmt: skip

    def expected_level(self, gauge: str, t: float) -> float:
        """The gauge's level without noise: what the water does, as the scenario tells it."""
        middle = self._middles.get(gauge, sum(FALLBACK_NORMAL_CM) / 2)
        if gauge in self._seas:
            level = middle + tide_cm(t) + self.surge(gauge, t)
        else:
            level = middle + self.flood_excess(gauge, t)
        replay = self._replays.get((gauge, "level_cm"))
        if replay is not None:
            weight, value = replay.at(t)
            level = weight * value + (1.0 - weight) * level
        return level

    def flood_severity(self, road_id: str, t: float) -> float:
        """How flooded the gauges near a road are: 0 below Siaga 3, 1 at Siaga 1 and above."""
        worst = 0.0
        for gauge, siaga3, span in self._links.get(road_id, ()):
            worst = max(worst, min(1.0, (self.expected_level(gauge, t) - siaga3) / span))
        return worst

    def linked_gauges(self, road_id: str) -> list[str]:
        """The gauges whose flooding slows this road (none if the scenario floods nothing)."""
        return [gauge for gauge, _, _ in self._links.get(road_id, ())]

    # --- weather, haze, incidents, replays --------------------------------------------

    def rain(self, t: float) -> float:
        """How hard it rains at `t`: 0 dry, 1 heavy."""
        if not self._rains:
            return 0.0
        return max((s for start, end, s in self._rains if start <= t < end), default=0.0)

    def washout(self, t: float) -> float:
        """The share of particulates left by recent rain (1: no rain lately)."""
        if not self._rains:
            return 1.0
        removed = 0.0
        for start, end, strength in self._rains:
            if start <= t < end:
                removed = max(removed, WASHOUT_SHARE * strength)
            elif t >= end:
                fading = math.exp(-(t - end) / WASHOUT_RECOVERY_S)
                removed = max(removed, WASHOUT_SHARE * strength * fading)
        return 1.0 - removed

    def haze(self, monitor: str, t: float) -> float:
        """The factor a haze episode multiplies particulates by at `monitor` (1: none)."""
        if not self._hazes:
            return 1.0
        return 1.0 + sum(extra * spell.weight(t) for spell, extra, ids in self._hazes
                         if not ids or monitor in ids)  # fmt: skip

    def ponding(self, t: float) -> float:
        """How far rain has flooded a low road (an underpass) at `t`: 0 dry, 1 under water."""
        pond = 0.0
        for start, end, mm_h in self._rain_mm:
            excess = mm_h - DRAIN_MM_H
            if excess <= 0 or t < start:
                continue
            filled = min(POND_FULL_MM, excess * (min(t, end) - start) / HOUR_S)
            if t > end:
                filled = max(0.0, filled - PUMP_MM_H * (t - end) / HOUR_S)
            pond = max(pond, filled / POND_FULL_MM)
        return pond

    def frozen(self, camera: str, t: float) -> bool:
        """Whether the camera's analytics are hung at `t` (a freeze event)."""
        spells = self._freezes.get(camera)
        return spells is not None and any(start <= t < end for start, end in spells)

    def glare(self, camera: str, t: float) -> float:
        """The water score headlight glare makes the camera report at `t` (0: none)."""
        spells = self._glares.get(camera)
        if not spells:
            return 0.0
        night = NIGHT.at(t)
        if night <= 0.0:
            return 0.0
        return max((score * night for start, end, score in spells if start <= t < end),
                   default=0.0)

    def incident(self, road: str, t: float) -> float:
        """The share of the road's capacity an incident takes at `t` (0: none)."""
        spells = self._incidents.get(road)
        if not spells:
            return 0.0
        return max(severity * spell.weight(t) for spell, severity in spells)

    def device(self, device_id: str | None) -> Device | None:
        """A device of the catalog (a camera asks for the gauge or road it watches over)."""
        return None if device_id is None else self._registry.get(device_id)

    def replay(self, device_id: str, field: str) -> Replay | None:
        """The keyframes the scenario gives for a device's field, if any."""
        return self._replays.get((device_id, field))
