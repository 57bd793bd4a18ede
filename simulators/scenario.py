"""Scenarios: when a simulation starts, how long it runs, its devices, its events and faults.

A scenario is a YAML file (format: the commented header of `scenarios/normal-day.yaml`);
the bundled ones live in `simulators/scenarios/`. Event times are kept as offsets from the
start, so a scenario moved elsewhere in time (`starting_at`) keeps its story.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel

from devices.kinds import Kind
from devices.registry import Device, Registry
from siaga_core.configfile import validate_data
from siaga_core.errors import ConfigFileError, ConfigurationError, Problem
from siaga_core.yamlfile import read_yaml
from simulators.calendar import HOUR_S, MINUTE_S
from simulators.faults import FaultRates
from simulators.scenariofile import (
    EVENT_MODELS,
    EventModel,
    FreezeEvent,
    GlareEvent,
    HazeEvent,
    IncidentEvent,
    KeyframesEvent,
    RainEvent,
    RobEvent,
    ScenarioFile,
)

BUNDLED_DIR: Final = Path(__file__).with_name("scenarios")


class ScenarioError(ConfigurationError, ValueError):
    """A scenario that cannot run on the given catalog (it names devices the catalog lacks)."""


@dataclass(frozen=True, slots=True)
class DeviceSelection:
    """Which devices of a catalog a scenario runs: these ids and kinds; none: all of them."""

    ids: tuple[str, ...] = ()
    kinds: tuple[Kind, ...] = ()

    def select(self, registry: Registry) -> list[Device]:
        """The selected devices in catalog order; raises `ScenarioError` for an unknown id."""
        missing = [device_id for device_id in self.ids if device_id not in registry]
        if missing:
            raise ScenarioError(f"the scenario names devices the catalog lacks: {missing}")
        if not self.ids and not self.kinds:
            return list(registry)
        ids, kinds = frozenset(self.ids), frozenset(self.kinds)
        return [device for device in registry if device.id in ids or device.kind in kinds]


@dataclass(frozen=True, slots=True)
class Rain:
    """Rain: washes the air, slows the roads and raises the gauges in `rises` (peak cm)."""

    at_s: float  # seconds after the scenario's start (negative: before it)
    duration_s: float
    intensity_mm_h: float = 10.0
    rises: tuple[tuple[str, float], ...] = ()  # gauge id -> peak rise above its normal, cm
    rise_time_s: float = HOUR_S  # from the first rise to the peak at those gauges
    recession_s: float = 4 * HOUR_S  # time constant of the fall after the peak


@dataclass(frozen=True, slots=True)
class Keyframes:
    """A replay: `field` of `device` passes through `points` (seconds after start, value)."""

    device: str
    points: tuple[tuple[float, float], ...]  # sorted by time
    field: str | None = None  # None: the kind's main field (level_cm, pm25, speed_kmh)
    ease_s: float = HOUR_S  # blend from and back to the simulated value around the points


@dataclass(frozen=True, slots=True)
class Incident:
    """A crash or breakdown near a traffic detector: `severity` of the capacity lost."""

    device: str
    at_s: float
    duration_s: float
    severity: float = 0.7
    recovery_s: float = 15 * MINUTE_S  # the queue dissolving after the road is cleared


@dataclass(frozen=True, slots=True)
class Haze:
    """A haze episode multiplying particulate levels by up to `factor` (ids: all monitors)."""

    at_s: float
    duration_s: float
    factor: float = 2.0
    ramp_s: float = 6 * HOUR_S
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rob:
    """Coastal flooding ("rob"): the sea gauges (ids: every one) read up to `rise_cm` higher."""

    at_s: float
    duration_s: float
    rise_cm: float
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Freeze:
    """A camera frozen from `at_s` for `duration_s`: the same counts again, no detections."""

    device: str
    at_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Glare:
    """A glare-prone camera: at night it reports `water_score` where there is no water."""

    device: str
    at_s: float | None = None  # None: from the scenario's start
    duration_s: float | None = None  # None: to its end
    water_score: float = 0.9


Event = Rain | Keyframes | Incident | Haze | Rob | Freeze | Glare


@dataclass(frozen=True)
class Scenario:
    """A named story for the simulated devices. Frozen: derive variants with the `with_` methods."""

    name: str
    description: str
    start: datetime  # aware
    duration: timedelta
    devices: DeviceSelection = field(default_factory=DeviceSelection)
    events: tuple[Event, ...] = ()
    faults: FaultRates = field(default_factory=FaultRates)
    # Reporting interval overrides, s, by kind (`traffic`) or device id (`katulampa`).
    intervals: tuple[tuple[str, float], ...] = ()
    source: Path | None = None  # the file it was read from

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("a scenario's start must carry its offset (WIB is +07:00)")
        if self.duration <= timedelta(0):
            raise ValueError("a scenario's duration must be longer than zero")

    @property
    def start_s(self) -> float:
        return self.start.timestamp()

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration.total_seconds()

    def interval_for(self, kind: Kind) -> float | None:
        """The reporting interval this scenario imposes on `kind`, if any."""
        return dict(self.intervals).get(kind.value)

    def interval_of(self, device: Device) -> float:
        """How often `device` reports at normal status: the scenario's say, else the catalog's."""
        overrides = dict(self.intervals)
        return overrides.get(device.id) or overrides.get(device.kind.value) or device.interval_s

    def starting_at(self, start: datetime) -> Scenario:
        """The same story, moved to begin at `start` (events move along)."""
        return replace(self, start=start)

    def with_duration(self, duration: timedelta) -> Scenario:
        return replace(self, duration=duration)

    def with_intervals(self, seconds: float, kinds: Iterable[Kind] = tuple(Kind)) -> Scenario:
        """Devices of `kinds` reporting every `seconds` (gauges still tighten in Siaga);
        overrides the scenario gives single devices stay."""
        if not seconds > 0:
            raise ValueError(f"an interval must be > 0 s (got {seconds})")
        merged = dict(self.intervals) | {Kind(kind).value: float(seconds) for kind in kinds}
        return replace(self, intervals=tuple(sorted(merged.items())))

    def with_faults(self, faults: FaultRates) -> Scenario:
        return replace(self, faults=faults)


def list_scenarios() -> list[Scenario]:
    """The bundled scenarios, sorted by name."""
    scenarios = [_load_file(path) for path in BUNDLED_DIR.glob("*.yaml")]
    return sorted(scenarios, key=lambda scenario: scenario.name)


def bundled_names() -> list[str]:
    return sorted(path.stem for path in BUNDLED_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A bundled scenario by name, or a scenario file; raises `ConfigFileError` (file:line: ...)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        return _load_file(Path(name_or_path))
    path = BUNDLED_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(bundled_names())
        message = f"no bundled scenario {text!r} (bundled: {known}); or give a .yaml file"
        raise ConfigFileError(None, [Problem("scenario", message)])
    return _load_file(path)


def _load_file(path: Path) -> Scenario:
    document = read_yaml(path)
    top = validate_data(document.data, ScenarioFile, path, document.node)
    problems: list[Problem] = []
    events: list[Event] = []
    nodes = _event_nodes(document.node)
    for index, raw in enumerate(top.events):
        node = nodes[index] if index < len(nodes) else None
        model = _event_model(raw, index, path, node, problems)
        if model is not None:
            events.append(_event(model, top.start))
    if problems:
        raise ConfigFileError(path, problems)
    return Scenario(
        name=top.name or path.stem,
        description=" ".join(top.description.split()),
        start=top.start,
        duration=timedelta(seconds=top.duration),
        devices=DeviceSelection(top.devices.ids, top.devices.kinds),
        events=tuple(events),
        faults=_faults(top),
        intervals=tuple(sorted(top.intervals.items())),
        source=path,
    )


def _event_model(
    raw: dict[str, Any], index: int, path: Path, node: yaml.Node | None, problems: list[Problem]
) -> EventModel | None:
    """One event validated by the model of its `type`; problems placed at `events[i]`."""
    line = None if node is None else node.start_mark.line + 1
    model = EVENT_MODELS.get(str(raw.get("type")))
    if model is None:
        expected = f"must be one of {', '.join(EVENT_MODELS)}"
        got = f"(got {raw['type']!r})" if "type" in raw else "(missing)"
        problems.append(Problem(f"events[{index}].type", f"{expected} {got}", line))
        return None
    try:
        parsed: BaseModel = validate_data(raw, model, path, node)
    except ConfigFileError as exc:
        problems.extend(_within(f"events[{index}]", problem) for problem in exc.problems)
        return None
    assert isinstance(parsed, RainEvent | KeyframesEvent | IncidentEvent | HazeEvent | RobEvent
                      | FreezeEvent | GlareEvent)
    return parsed


def _within(prefix: str, problem: Problem) -> Problem:
    place = prefix if problem.place == "top level" else f"{prefix}.{problem.place}"
    return Problem(place, problem.message, problem.line)


def _event_nodes(root: yaml.Node | None) -> list[yaml.Node]:
    """The YAML nodes of `events:` items, for their line numbers."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "events":
            return list(value.value) if isinstance(value, yaml.SequenceNode) else []
    return []


def _event(model: EventModel, start: datetime) -> Event:
    if isinstance(model, RainEvent):
        rise = model.rise_time if model.rise_time is not None else min(model.duration, HOUR_S)
        return Rain(model.at.offset_from(start), model.duration, model.intensity_mm_h,
                    tuple(model.rises.items()), rise, model.recession)  # fmt: skip
    if isinstance(model, KeyframesEvent):
        points = sorted((when.offset_from(start), value) for when, value in model.points)
        return Keyframes(model.device, tuple(points), model.field, model.ease)
    if isinstance(model, IncidentEvent):
        return Incident(model.device, model.at.offset_from(start), model.duration,
                        model.severity, model.recovery)  # fmt: skip
    if isinstance(model, HazeEvent):
        return Haze(model.at.offset_from(start), model.duration, model.factor, model.ramp,
                    tuple(model.devices))  # fmt: skip
    if isinstance(model, FreezeEvent):
        return Freeze(model.device, model.at.offset_from(start), model.duration)
    if isinstance(model, GlareEvent):
        at_s = None if model.at is None else model.at.offset_from(start)
        return Glare(model.device, at_s, model.duration, model.water_score)
    return Rob(model.at.offset_from(start), model.duration, model.rise_cm, tuple(model.devices))


def _faults(top: ScenarioFile) -> FaultRates:
    faults = FaultRates()
    for name, (rate, duration_s) in top.faults.items():
        faults = faults.with_fault(name, rate, duration_s)
    return faults
