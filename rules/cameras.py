"""Cameras' analytics as alerts: FloodDetected, CameraCongestion, ViolationHotspot and
WatchlistVehicleSeen, and the cameras a gauge's flood alert names.

A camera (SPEC section 7) is judged on event time: its counts (`Reading`s of kind camera,
every 10 s) and its detections. `CameraRules` turns them into signals that
`rules.alerting.Alerting` feeds to the same engine and alert book as every other rule, so
routes, silences, acks, repeats and webhooks treat them alike. The rules hold their own
`for` (a signal is sent only once a condition held long enough): the engine's timings are
the rules file's `rules:`, and these live in its `cameras:` section.

- FloodDetected: `water_score` at or above `flood.water_score` for `flood.for`; it ends
  once the score stayed below `flood.clear_below` for `flood.clear_for` (hysteresis, so a
  score hovering at the limit does not flap). `warning` on the camera's word alone,
  `critical` when corroborated: the gauge it watches (or the nearest within
  `gauge_radius_m`) is at `gauge_at_level` or worse, or at least `reports_count` of the
  residents' banjir reports `rules.citizens` keeps lie within `reports_radius_m`. Night
  glare and a frozen picture are a camera's own errors; neither a gauge nor a resident
  makes them, so a camera alone never pages as critical. A frozen camera (the same counts
  for `frozen_after`) is not counted as corroborated at all: its picture is old news.
- A gauge's ladder alert names the cameras that see water near it (`cameras_seeing_water`).
- CameraCongestion: mean speed below and vehicles per minute above their limits for `for`.
- ViolationHotspot: `count` distinct detections (by event id: new, update and end of one
  event, or a redelivery, are one) of one violation label in one zone within `window`;
  with the residents' parkir-liar reports nearby.
- WatchlistVehicleSeen: a listed plate (the decoder keeps no other); one alert per plate
  per camera, ending after `quiet` without a sighting.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Final, Literal, Self

from pydantic import Field, model_validator

from devices.detections import Detection
from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import LABEL_KEY_PATTERN, Device, Registry
from rules.alert import Alert, Severity, Signal, ended, local_time
from rules.citizens import SIAGA_NUMBER, CitizenReport, Correlator, Lookup
from rules.offline import PositiveDuration
from rules.ruletypes import RESERVED_RULE_LABELS, LadderRule, Rule, RulesModel, SeverityField
from siaga_core.durations import Duration, format_duration, to_ns
from siaga_core.geo import distance_m

FLOOD_DETECTED: Final = "FloodDetected"
CAMERA_CONGESTION: Final = "CameraCongestion"
VIOLATION_HOTSPOT: Final = "ViolationHotspot"
WATCHLIST_VEHICLE_SEEN: Final = "WatchlistVehicleSeen"
# The camera alerts judged from its readings, on the camera itself: what an instance taking
# a camera over looks up in the shared book (`rules.alerting.Alerting._take_over`).
CAMERA_OWN_RULES: Final = frozenset({FLOOD_DETECTED, CAMERA_CONGESTION})
# A camera's detection rules: their alerts have subjects of their own, under the camera's
# (`detection_prefix`: camera, label and zone; camera and plate).
DETECTION_RULES: Final = frozenset({VIOLATION_HOTSPOT, WATCHLIST_VEHICLE_SEEN})
CAMERA_ALERTS: Final = (FLOOD_DETECTED, CAMERA_CONGESTION, VIOLATION_HOTSPOT,
                        WATCHLIST_VEHICLE_SEEN)
CAMERAS_NOTE: Final = "cameras_seeing_water"  # annotations of a gauge's ladder alert
CAMERAS_COUNT_NOTE: Final = "cameras_seeing_water_count"
PARKING: Final = "parkir-liar"  # the report book's code for illegal parking
WHOLE_VIEW: Final = "all"  # the zone of a detection its analytics placed in none
# A watch-list row's own columns become labels: keys as identifiers, values one short line.
LABEL_VALUE_MAX: Final = 120
PARKING_KEPT: Final = 10_000  # parkir-liar reports kept: a day of Jakarta's is ~40

Score = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Metres = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Violation = Literal["illegal-parking", "wrong-way"]  # what a hotspot counts
VIOLATIONS: Final[tuple[Violation, ...]] = ("illegal-parking", "wrong-way")
# A listed plate -> the labels of its watch-list row (agency, reason, ...), or None: the
# application passes ingest's `Watchlist.labels_of`, which the rules cannot import.
PlateLabels = Callable[[str], Mapping[str, str] | None]


class FloodConfig(RulesModel):
    """FloodDetected: water on a camera's road."""

    enabled: bool = True
    water_score: Score = 0.8
    clear_below: Score = 0.6
    for_: PositiveDuration = Field(default=timedelta(minutes=2), alias="for")
    clear_for: Duration = timedelta(minutes=2)
    severity: SeverityField = Severity.WARNING
    corroborated_severity: SeverityField = Severity.CRITICAL
    gauge_radius_m: Metres = 1000.0
    gauge_at_level: Literal["siaga-3", "siaga-2", "siaga-1"] = "siaga-2"
    reports_radius_m: Metres = 500.0
    # One report is one resident's pin, perhaps misplaced; two beside the camera are
    # three sources that agree.
    reports_count: int = Field(default=2, ge=1)
    frozen_after: PositiveDuration = timedelta(minutes=10)

    @model_validator(mode="after")
    def _clear_below_on(self) -> Self:
        if self.clear_below > self.water_score:
            raise ValueError("clear_below must not exceed water_score")
        return self


class CongestionConfig(RulesModel):
    """CameraCongestion: slow, dense traffic on a camera's road."""

    enabled: bool = True
    # Level of service F is 15 km/h or less (KM 14/2006, as the Congestion rule); it
    # clears at 25 km/h (LOS D).
    below_kmh: Rate = 15.0
    clear_above_kmh: Rate = 25.0
    above_per_min: Rate = 20.0
    clear_below_per_min: Rate = 10.0
    for_: PositiveDuration = Field(default=timedelta(minutes=10), alias="for")
    clear_for: Duration = timedelta(minutes=5)
    severity: SeverityField = Severity.WARNING

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if self.clear_above_kmh < self.below_kmh:
            raise ValueError("clear_above_kmh must not be below below_kmh")
        if self.clear_below_per_min > self.above_per_min:
            raise ValueError("clear_below_per_min must not exceed above_per_min")
        return self


class HotspotConfig(RulesModel):
    """ViolationHotspot: many violations in one zone of one camera within a window."""

    enabled: bool = True
    labels: list[Violation] = Field(default_factory=lambda: list(VIOLATIONS), min_length=1)
    count: int = Field(default=10, ge=2)
    clear_below: int | None = Field(default=None, ge=1)  # default: half of count
    window: PositiveDuration = timedelta(hours=1)
    severity: SeverityField = Severity.WARNING
    reports_radius_m: Metres = 300.0

    @model_validator(mode="after")
    def _clear_below_count(self) -> Self:
        if self.clear_below is not None and self.clear_below > self.count:
            raise ValueError("clear_below must not exceed count")
        return self

    @property
    def clear(self) -> int:
        return self.clear_below if self.clear_below is not None else max(1, self.count // 2)


class WatchlistConfig(RulesModel):
    """WatchlistVehicleSeen: a listed plate seen by a camera."""

    enabled: bool = True
    quiet: PositiveDuration = timedelta(minutes=30)
    severity: SeverityField = Severity.WARNING


class CamerasConfig(RulesModel):
    """The `cameras:` section of the rules file."""

    flood: FloodConfig = Field(default_factory=FloodConfig)
    congestion: CongestionConfig = Field(default_factory=CongestionConfig)
    hotspot: HotspotConfig = Field(default_factory=HotspotConfig)
    watchlist: WatchlistConfig = Field(default_factory=WatchlistConfig)


@dataclass(slots=True)
class Hold:
    """A condition held on event time before firing, and a clear one before ending."""

    since_ns: int | None = None  # when `on` began holding (not yet firing)
    clear_since_ns: int | None = None  # when `off` began holding (firing)
    firing: bool = False

    def judge(self, on: bool, off: bool, at_ns: int, for_ns: int, clear_ns: int) -> bool | None:
        """True: the alert fires (or still does); False: it ends; None: nothing to say."""
        if not self.firing:
            if not on:
                self.since_ns = None
                return None
            if self.since_ns is None:
                self.since_ns = at_ns
            if at_ns - self.since_ns < for_ns:
                return None
            self.firing, self.clear_since_ns = True, None
            return True
        if not off:
            self.clear_since_ns = None
            return True
        if self.clear_since_ns is None:
            self.clear_since_ns = at_ns
        if at_ns - self.clear_since_ns < clear_ns:
            return True
        self.firing, self.since_ns, self.clear_since_ns = False, None, None
        return False


@dataclass(slots=True)
class _Camera:
    """What the rules remember of one camera."""

    device: Device
    gauge: tuple[float, Device] | None  # the one it watches, or the nearest within the radius
    near_gauges: tuple[str, ...]  # gauges whose flood alert it is named in
    latest_ns: int | None = None  # event time of its newest reading judged
    clock_ns: int | None = None  # its newest event time (reading or detection)
    # The newest time its detection rules were judged here (a detection, or a count that
    # may end its hotspots and plates): their changes in the book are never later.
    events_ns: int | None = None
    flood: Hold = field(default_factory=Hold)
    jam: Hold = field(default_factory=Hold)
    counts: tuple[float | None, ...] = ()
    same_since_ns: int | None = None  # its counts have not changed since
    water: float = 0.0
    seen_ids: dict[str, int] = field(default_factory=dict)  # violation event id -> first ts
    hits: dict[tuple[str, str], deque[int]] = field(default_factory=dict)  # (label, zone)
    hotspots: dict[tuple[str, str], int] = field(default_factory=dict)  # open -> kept until ns
    plates: dict[str, int] = field(default_factory=dict)  # open plate alert -> last seen ns


class CameraRules:
    """Camera readings and detections -> signals. Event-loop only, as the engine."""

    def __init__(self, config: CamerasConfig, registry: Registry, rules: Sequence[Rule],
                 citizens: Correlator, utc_offset: str = "+07:00",
                 plate_labels: PlateLabels | None = None) -> None:
        self.config = config
        self._citizens = citizens
        self._offset = utc_offset
        self._plate_labels = plate_labels
        self.ladders = tuple(rule.name for rule in rules if isinstance(rule, LadderRule))
        self._flood_for = to_ns(config.flood.for_)
        self._flood_clear = to_ns(config.flood.clear_for)
        self._frozen_ns = to_ns(config.flood.frozen_after)
        self._jam_for, self._jam_clear = to_ns(config.congestion.for_), to_ns(
            config.congestion.clear_for)
        self._window_ns = to_ns(config.hotspot.window)
        self._quiet_ns = to_ns(config.watchlist.quiet)
        gauges = registry.by_kind(Kind.WATER_LEVEL)
        self._cameras = {cam.id: self._camera(cam, registry, gauges)
                         for cam in registry.by_kind(Kind.CAMERA)}
        self.gauge_cameras: dict[str, tuple[str, ...]] = {}  # gauge -> cameras near it
        for camera in self._cameras.values():
            for gauge_id in camera.near_gauges:
                self.gauge_cameras[gauge_id] = (*self.gauge_cameras.get(gauge_id, ()),
                                                camera.device.id)
        self.seeing: set[str] = set()  # cameras seeing water (firing, not frozen)
        self.touched: set[str] = set()  # gauges whose cameras_seeing_water changed
        self._parking: deque[CitizenReport] = deque(maxlen=PARKING_KEPT)

    def _camera(self, device: Device, registry: Registry, gauges: Sequence[Device]) -> _Camera:
        radius = self.config.flood.gauge_radius_m
        near = sorted(((distance_m(device.lat, device.lon, g.lat, g.lon), g) for g in gauges),
                      key=lambda pair: (pair[0], pair[1].id))
        watched = registry.get(device.watches) if device.watches is not None else None
        gauge: tuple[float, Device] | None = None
        if watched is not None and watched.kind is Kind.WATER_LEVEL:
            gauge = (distance_m(device.lat, device.lon, watched.lat, watched.lon), watched)
        elif near and near[0][0] <= radius:
            gauge = near[0]
        named = {g.id for away, g in near if away <= radius}
        if gauge is not None:
            named.add(gauge[1].id)
        return _Camera(device, gauge, tuple(sorted(named)))

    @property
    def active(self) -> bool:
        """Whether the catalog has cameras: without them every method is a no-op."""
        return bool(self._cameras)

    # --- readings ------------------------------------------------------------------------

    def reading(self, reading: Reading, lookup: Lookup, latest: Mapping[str, Reading],
                detections_here: bool = True) -> list[Signal]:
        """The signals of one camera reading (late ones, as the engine's, judge nothing).
        Its time ends the hotspots and plates held here only if `detections_here`: in a
        cluster, another instance may read the camera's detections and keep them alive."""
        camera = self._cameras.get(reading.device_id)
        if camera is None or (camera.latest_ns is not None and reading.ts_ns <= camera.latest_ns):
            return []
        at = camera.latest_ns = reading.ts_ns
        camera.clock_ns = max(at, camera.clock_ns or at)
        values = reading.values
        counts = tuple(values.get(name) for name in _COUNTS)
        if counts != camera.counts or camera.same_since_ns is None:
            camera.counts, camera.same_since_ns = counts, at
        signals = []
        water = values.get("water_score")
        if water is not None and self.config.flood.enabled:
            signals += self._judge_flood(camera, water, at, lookup, latest)
        speed, flow = values.get("mean_speed_kmh"), values.get("vehicles_per_min")
        if speed is not None and flow is not None and self.config.congestion.enabled:
            signals += self._judge_jam(camera, speed, flow, at)
        if detections_here:
            signals += self._expire(camera, at)
            camera.events_ns = max(at, camera.events_ns or at)
        return signals

    def _judge_flood(self, camera: _Camera, water: float, at_ns: int, lookup: Lookup,
                     latest: Mapping[str, Reading]) -> list[Signal]:
        config = self.config.flood
        camera.water = water
        verdict = camera.flood.judge(water >= config.water_score, water < config.clear_below,
                                     at_ns, self._flood_for, self._flood_clear)
        self._seeing(camera, verdict is True and not self._frozen(camera, at_ns))
        if verdict is None:
            return []
        if not verdict:
            return [Signal(FLOOD_DETECTED, camera.device.id, False, at_ns, config.severity,
                           {}, {})]
        return [self.flood_signal(camera.device.id, at_ns, lookup, latest)]

    def _frozen(self, camera: _Camera, at_ns: int) -> bool:
        # Two counts at least, and something moving in them: one saturated score
        # (water_score 1.0 in a real flood) may hold still for an hour, and so may a flooded
        # underpass's empty road (no vehicle, no speed, nobody); a live picture with traffic
        # in it does not.
        present = sum(value is not None for value in camera.counts)
        scene = [value for name, value in zip(_COUNTS, camera.counts, strict=False)
                 if name != "water_score" and value is not None]
        empty_scene = all(value == 0 for value in scene)
        return (present >= 2 and not empty_scene and camera.same_since_ns is not None
                and at_ns - camera.same_since_ns >= self._frozen_ns)

    def _seeing(self, camera: _Camera, seeing: bool) -> None:
        camera_id = camera.device.id
        if seeing == (camera_id in self.seeing):
            return
        if seeing:
            self.seeing.add(camera_id)
        else:
            self.seeing.discard(camera_id)
        self.touched.update(camera.near_gauges)

    def flood_signal(self, camera_id: str, at_ns: int, lookup: Lookup,
                     latest: Mapping[str, Reading]) -> Signal:
        """FloodDetected of a camera seeing water, with what corroborates it as of now."""
        config, camera = self.config.flood, self._cameras[camera_id]
        device = camera.device
        notes: dict[str, str] = {"water_score": f"{camera.water:g}"}
        support: list[str] = []
        if camera.gauge is not None:
            away, gauge = camera.gauge
            level, level_text = self._citizens.gauge_level(gauge, lookup, latest)
            notes |= {"gauge": gauge.id, "gauge_name": gauge.name,
                      "gauge_distance_m": f"{away:.0f}", "gauge_level": level_text}
            if level is not None:
                notes["gauge_siaga"] = str(level)
                if level <= SIAGA_NUMBER[config.gauge_at_level]:
                    support.append(f"{gauge.name} at Siaga {level}")
        reports = self._citizens.flood_reports_near(device.lat, device.lon,
                                                    config.reports_radius_m)
        if reports:
            notes |= {"flood_reports": str(len(reports)), "flood_report_ids": ",".join(reports)}
            if len(reports) >= config.reports_count:
                support.append(f"{len(reports)} residents' banjir reports within "
                               f"{config.reports_radius_m:g} m")
        frozen = self._frozen(camera, at_ns)
        severity = (config.corroborated_severity if support and not frozen
                    else config.severity)
        where = _where(device)
        summary = f"Camera {device.name} sees water on {where} (score {camera.water:g})"
        if support and not frozen:
            summary += f", corroborated: {'; '.join(support)}"
        notes["corroborated_by"] = "; ".join(support) if support else "none"
        description = (f"{summary}. The score has been at least {config.water_score:g} since "
                       f"{local_time(camera.flood.since_ns or at_ns, self._offset)}.")
        if frozen:
            since = local_time(camera.same_since_ns or at_ns, self._offset)
            notes["camera_frozen"] = f"its counts have not changed since {since}"
            description += (f" Its counts have not changed since {since}: the picture may be "
                            "frozen, so nothing is counted as corroborating it.")
        elif not support:
            description += (" Neither a gauge nor residents' reports confirm it yet: it may "
                            "be glare or a puddle; look at the camera.")
        notes |= {"summary": summary, "description": description}
        return Signal(FLOOD_DETECTED, device.id, True, at_ns, severity,
                      _labels(device, FLOOD_DETECTED, severity), _camera_notes(device, notes))

    def rejudge(self, camera_ids: Iterable[str], lookup: Lookup,
                latest: Mapping[str, Reading]) -> list[Signal]:
        """FloodDetected of the firing cameras again: a gauge or a report changed what
        corroborates them. At each alert's own latest event time, so none is late."""
        signals = []
        for camera_id in camera_ids:
            alert = lookup(FLOOD_DETECTED, camera_id)
            camera = self._cameras.get(camera_id)
            if alert is not None and camera is not None and camera.flood.firing:
                signals.append(self.flood_signal(camera_id, alert.evaluated_at_ns, lookup,
                                                 latest))
        return signals

    def rejudges(self, camera_ids: Iterable[str], lookup: Lookup) -> bool:
        """Whether `rejudge` of these cameras gives a signal: one of them is firing with its
        FloodDetected open. A gauge's own readings change neither, so while this is false
        a run of them may be judged without `rejudge` after each reading."""
        cameras = self._cameras
        for camera_id in camera_ids:
            camera = cameras.get(camera_id)
            if (camera is not None and camera.flood.firing
                    and lookup(FLOOD_DETECTED, camera_id) is not None):
                return True
        return False

    def cameras_near(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """The cameras within `radius_m` of a place."""
        return [camera_id for camera_id, camera in self._cameras.items()
                if distance_m(lat, lon, camera.device.lat, camera.device.lon) <= radius_m]

    def gauge_notes(self, gauge_id: str,
                    sees: Callable[[str], bool] | None = None) -> dict[str, str]:
        """The `cameras_seeing_water` annotations of a gauge's ladder alert. `sees`: whether
        a camera sees water, when not all are judged here (a cluster's other instances)."""
        sees = sees or self.seeing.__contains__
        seeing = [c for c in self.gauge_cameras.get(gauge_id, ()) if sees(c)]
        return {CAMERAS_NOTE: ",".join(seeing), CAMERAS_COUNT_NOTE: str(len(seeing))}

    def _judge_jam(self, camera: _Camera, speed: float, flow: float,
                   at_ns: int) -> list[Signal]:
        config, device = self.config.congestion, camera.device
        on = speed < config.below_kmh and flow > config.above_per_min
        off = speed >= config.clear_above_kmh or flow < config.clear_below_per_min
        verdict = camera.jam.judge(on, off, at_ns, self._jam_for, self._jam_clear)
        if verdict is None:
            return []
        if not verdict:
            return [Signal(CAMERA_CONGESTION, device.id, False, at_ns, config.severity, {}, {})]
        since = local_time(camera.jam.since_ns or at_ns, self._offset)
        summary = (f"Congestion on {_where(device)} seen by camera {device.name}: "
                   f"{speed:g} km/h, {flow:g} vehicles a minute")
        notes = {"summary": summary, "mean_speed_kmh": f"{speed:g}",
                 "vehicles_per_min": f"{flow:g}",
                 "description": f"{summary}; slower than {config.below_kmh:g} km/h with more "
                                f"than {config.above_per_min:g} vehicles a minute since {since}."}
        if device.watches is not None:
            notes["watches"] = device.watches
        return [Signal(CAMERA_CONGESTION, device.id, True, at_ns, config.severity,
                       _labels(device, CAMERA_CONGESTION, config.severity),
                       _camera_notes(device, notes))]

    # --- detections ----------------------------------------------------------------------

    def detection(self, detection: Detection) -> list[Signal]:
        """The signals of one detection: a violation counted, a listed plate seen."""
        camera = self._cameras.get(detection.device_id)
        if camera is None:
            return []
        at = detection.ts_ns
        camera.clock_ns = max(at, camera.clock_ns or at)
        camera.events_ns = camera.clock_ns  # what its signals below are stamped with
        signals: list[Signal] = []
        if detection.plate is not None and self.config.watchlist.enabled:
            signals.append(self._plate(camera, detection.plate, at))
        elif detection.label in self.config.hotspot.labels and self.config.hotspot.enabled:
            signals += self._violation(camera, detection)
        signals += self._expire(camera, camera.clock_ns)
        return signals

    def _violation(self, camera: _Camera, detection: Detection) -> list[Signal]:
        # One detection is one event id, whichever of new, update or end arrives first
        # (QoS 1 may reorder or redeliver them); it counts at its first event time.
        if detection.event_id in camera.seen_ids:
            return []
        camera.seen_ids[detection.event_id] = detection.ts_ns
        key = (detection.label, detection.zone or WHOLE_VIEW)
        hits = camera.hits.setdefault(key, deque())
        hits.append(detection.ts_ns)
        if len(hits) > 1 and hits[-1] < hits[-2]:  # a late one: keep them in time order
            hits = camera.hits[key] = deque(sorted(hits))
        return self._hotspot(camera, key, camera.clock_ns or detection.ts_ns)

    def _hotspot(self, camera: _Camera, key: tuple[str, str], now_ns: int) -> list[Signal]:
        config, device = self.config.hotspot, camera.device
        hits = camera.hits.get(key, deque())
        while hits and hits[0] <= now_ns - self._window_ns:
            hits.popleft()
        subject = _hotspot_subject(device.id, *key)
        count, kept_until = len(hits), camera.hotspots.get(key)
        if kept_until is None:
            if count < config.count:
                return []
        elif count < config.clear and now_ns >= kept_until:
            del camera.hotspots[key]
            return [Signal(VIOLATION_HOTSPOT, subject, False, now_ns, config.severity, {}, {})]
        if kept_until is None or count >= config.count:
            camera.hotspots[key] = 0
        label, zone = key
        window = format_duration(config.window)
        summary = f"{count} {label} detections in zone {zone} of camera {device.name} " \
                  f"within {window}"
        notes = {"summary": summary, "count": str(count), "zone": zone,
                 "description": f"{summary} ({_where(device)}): a hotspot to patrol."}
        notes |= self.parking_notes(device)
        labels = {**_labels(device, VIOLATION_HOTSPOT, config.severity), "zone": zone,
                  "violation": label}
        return [Signal(VIOLATION_HOTSPOT, subject, True, now_ns, config.severity, labels,
                       _camera_notes(device, notes))]

    def parking_notes(self, device: Device) -> dict[str, str]:
        """The residents' parkir-liar reports kept within the radius of a camera."""
        radius = self.config.hotspot.reports_radius_m
        ids = [r.id for r in self._parking
               if distance_m(device.lat, device.lon, r.lat, r.lon) <= radius]
        if not ids:
            return {}
        return {"parking_reports": str(len(ids)), "parking_report_ids": ",".join(ids)}

    def _plate(self, camera: _Camera, plate: str, at_ns: int) -> Signal:
        config, device = self.config.watchlist, camera.device
        camera.plates[plate] = max(at_ns, camera.plates.get(plate, at_ns))
        listed = (self._plate_labels(plate) if self._plate_labels is not None else None) or {}
        labels = {**_row_labels(listed), **_labels(device, WATCHLIST_VEHICLE_SEEN,
                                                   config.severity), "plate": plate}
        reason = f" ({listed['reason']})" if listed.get("reason") else ""
        summary = f"Listed vehicle {plate}{reason} seen by camera {device.name} on " \
                  f"{_where(device)}"
        seen = local_time(camera.plates[plate], self._offset)
        notes = {"summary": summary, "last_seen": seen,
                 "description": f"{summary}, last at {seen}."}
        return Signal(WATCHLIST_VEHICLE_SEEN, _plate_subject(device.id, plate), True,
                      camera.plates[plate], config.severity, labels,
                      _camera_notes(device, notes))

    def _expire(self, camera: _Camera, now_ns: int) -> list[Signal]:
        """Hotspots whose window emptied and plates not seen for `quiet`, on the camera's
        own event time (its counts come every 10 s, so a replay ends them in its time)."""
        signals = []
        for key in list(camera.hotspots):
            signals += [s for s in self._hotspot(camera, key, now_ns) if not s.active]
        for plate, last_ns in list(camera.plates.items()):
            if now_ns - last_ns >= self._quiet_ns:
                del camera.plates[plate]
                signals.append(Signal(WATCHLIST_VEHICLE_SEEN, _plate_subject(camera.device.id,
                                      plate), False, last_ns + self._quiet_ns,
                                      self.config.watchlist.severity, {}, {}))
        if camera.seen_ids and len(camera.seen_ids) > 64:  # bounded: forget old event ids
            oldest = now_ns - 2 * self._window_ns
            camera.seen_ids = {k: v for k, v in camera.seen_ids.items() if v > oldest}
        return signals

    # --- residents' reports, restarts and resolutions ------------------------------------

    def report(self, report: CitizenReport, now_ns: int) -> list[str]:
        """Keep a parkir-liar report; the cameras with an open hotspot near it."""
        while self._parking and self._parking[0].at_ns < now_ns - 2 * self._window_ns:
            self._parking.popleft()
        if report.category != PARKING or any(r.id == report.id for r in self._parking):
            return []
        self._parking.append(report)
        radius = self.config.hotspot.reports_radius_m
        return [camera_id for camera_id in self.cameras_near(report.lat, report.lon, radius)
                if self._cameras[camera_id].hotspots]

    def hotspot_subjects(self, camera_id: str) -> list[str]:
        """The subjects of the camera's open ViolationHotspot alerts."""
        camera = self._cameras.get(camera_id)
        return [] if camera is None else [_hotspot_subject(camera_id, *key)
                                          for key in camera.hotspots]

    def forget(self, camera_id: str, judged_ns: int | None) -> None:
        """Drop what this instance judged of a camera another instance has judged since
        (`judged_ns`, its newest change in the shared book): its flood and jam holds, its
        water and counts. The camera's open alerts are then taken up again (`resume`), and
        readings no newer than that change are late, as they were for the other instance.
        Hotspots and plates have subjects of their own: `forget_detections` drops them."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return
        self._seeing(camera, False)
        camera.flood, camera.jam = Hold(), Hold()
        camera.water, camera.counts, camera.same_since_ns = 0.0, (), None
        if judged_ns is not None:
            camera.latest_ns = max(camera.latest_ns or judged_ns, judged_ns)

    def events_ns(self, camera_id: str) -> int | None:
        """The newest time the camera's hotspots and plates were judged here, if ever: any
        change of theirs in the book made later was another instance's."""
        camera = self._cameras.get(camera_id)
        return None if camera is None else camera.events_ns

    def is_camera(self, device_id: str) -> bool:
        return device_id in self._cameras

    def forget_detections(self, camera_id: str) -> None:
        """Drop what this instance counted of a camera's detections, its hotspots and plates
        held: another instance judged them since (a partition moved). The book's open ones
        are then taken up again (`resume`), as after a restart."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return
        camera.seen_ids, camera.hits, camera.hotspots, camera.plates = {}, {}, {}, {}

    def resume(self, alert: Alert) -> None:
        """Take up an open camera alert restored from the alert book after a restart."""
        camera = self._cameras.get(alert.labels.get("device_id", ""))
        if camera is None:
            return
        # Held since the alert fired at the latest, as the summaries say ("since ..."),
        # not since the next reading (when it began holding is not in the record).
        if alert.rule == FLOOD_DETECTED:
            camera.flood.firing, camera.water = True, float(
                alert.annotations.get("water_score", "0") or 0)
            camera.flood.since_ns = alert.starts_at_ns
            self._seeing(camera, True)
        elif alert.rule == CAMERA_CONGESTION:
            camera.jam.firing, camera.jam.since_ns = True, alert.starts_at_ns
        elif alert.rule == VIOLATION_HOTSPOT:
            # Its detections are gone with the last run: it holds for a window after its
            # latest, then ends unless new ones keep it.
            key = (alert.labels.get("violation", ""), alert.labels.get("zone", WHOLE_VIEW))
            camera.hotspots[key] = alert.active_at_ns + self._window_ns
        elif alert.rule == WATCHLIST_VEHICLE_SEEN and "plate" in alert.labels:
            camera.plates[alert.labels["plate"]] = alert.active_at_ns

    def resolution(self, alert: Alert) -> Mapping[str, str]:
        """What ended a camera alert (`RuleEngine.signal` asks)."""
        at_ns = alert.ends_at_ns if alert.ends_at_ns is not None else alert.evaluated_at_ns
        at = local_time(at_ns, self._offset)
        camera = alert.labels.get("device_id", alert.subject)
        texts = {
            FLOOD_DETECTED: (f"Camera {camera} no longer sees water (at {at})",
                             f"its water score stayed below {self.config.flood.clear_below:g} "
                             f"for {format_duration(self.config.flood.clear_for)}"),
            CAMERA_CONGESTION: (f"Traffic moves again at camera {camera} (at {at})",
                                "its mean speed or flow is past the clear limits"),
            VIOLATION_HOTSPOT: (f"Zone {alert.labels.get('zone', '?')} of camera {camera} is "
                                f"quiet again (at {at})",
                                f"fewer than {self.config.hotspot.clear} "
                                f"{alert.labels.get('violation', 'violation')} detections "
                                f"within {format_duration(self.config.hotspot.window)}"),
            WATCHLIST_VEHICLE_SEEN: (f"Listed vehicle {alert.labels.get('plate', '?')} not "
                                     f"seen at camera {camera} since "
                                     f"{local_time(alert.active_at_ns, self._offset)}",
                                     f"quiet for {format_duration(self.config.watchlist.quiet)}"),
        }
        summary, why = texts.get(alert.rule, (f"{alert.rule} ended at {at}", "it ended"))
        return ended(summary, f"{summary}: {why}.", at_ns, self._offset)


_LABEL_KEY: Final = re.compile(LABEL_KEY_PATTERN)
_COUNTS: Final = ("vehicles_per_min", "mean_speed_kmh", "water_score", "people")


def _where(device: Device) -> str:
    return device.spot if device.spot is not None else device.name


def _labels(device: Device, rule: str, severity: Severity) -> dict[str, str]:
    labels = {**device.labels, "alertname": rule, "severity": severity.value,
              "device_id": device.id, "kind": device.kind.value}
    if device.spot is not None:
        labels["spot"] = device.spot
    return labels


def _camera_notes(device: Device, notes: Mapping[str, str]) -> dict[str, str]:
    extra = {"camera": device.id, "camera_name": device.name}
    if device.spot is not None:
        extra["spot"] = device.spot
    return {**extra, **notes}


def _row_labels(row: Mapping[str, str]) -> dict[str, str]:
    """A watch-list row's columns as labels: identifiers as keys, one printable line each;
    never one Siaga sets itself."""
    labels = {}
    for key, value in row.items():
        if key in RESERVED_RULE_LABELS or key == "plate" or not _LABEL_KEY.match(key):
            continue
        text = "".join(char for char in value if char.isprintable())[:LABEL_VALUE_MAX].strip()
        if text:
            labels[key] = text
    return labels


def detection_prefix(camera_id: str) -> str:
    """What the subjects of a camera's DETECTION_RULES alerts start with."""
    return f"{camera_id}/"


def _hotspot_subject(camera_id: str, label: str, zone: str) -> str:
    return f"{detection_prefix(camera_id)}{label}/{zone}"


def _plate_subject(camera_id: str, plate: str) -> str:
    return f"{detection_prefix(camera_id)}plate={plate}"

