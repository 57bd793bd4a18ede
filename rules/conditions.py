"""One condition per rule type: a reading and the rule's memory of a device -> signals.

A condition is pure given its `Memory`: it reads only the reading (event time, `ts_ns`),
the device's catalog entry and what it remembered from that device's earlier readings.
The engine keeps one memory per (rule, device) and feeds the signals to `alert.step`.
Windows (window, rate of change, ISPU) are `series.Series`: bounded whatever the device's
rate, exact up to MAX_SPANS - 1 readings a window, approximate at the old edge above.

Why one module of some 500 lines: the six conditions share `_Base` (pending, firing and
resolution texts) and the hysteresis of `holds` and `ladder_band`, and a reviewer checks that
every rule type fires, holds and resolves alike by reading them side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Generic, Protocol, TypeVar, assert_never

from devices.readings import Reading
from devices.registry import Device, Registry
from rules.alert import Alert, AlertStatus, Severity, Signal, Timing, ended, local_time, zone
from rules.ispu import BREAKPOINTS, Category, IspuResult, ispu
from rules.ruletypes import (
    BoundedRule,
    FloodWaveRule,
    IspuRule,
    LadderRule,
    RateOfChangeRule,
    Rule,
    RuleBase,
    SelectingRule,
    ThresholdRule,
    WindowRule,
)
from rules.series import Series
from siaga_core.durations import format_duration, to_ns

R = TypeVar("R", bound=RuleBase)

# The severity of each ISPU category (SPEC section 3 carries the category as `level`).
ISPU_SEVERITY: Mapping[Category, Severity] = MappingProxyType({
    Category.BAIK: Severity.INFO,
    Category.SEDANG: Severity.INFO,
    Category.TIDAK_SEHAT: Severity.WARNING,
    Category.SANGAT_TIDAK_SEHAT: Severity.MAJOR,
    Category.BERBAHAYA: Severity.CRITICAL,
})
AGGREGATES: Mapping[str, Callable[[Series], float]] = MappingProxyType(
    {"mean": Series.mean, "max": Series.high, "min": Series.low}
)
_OPEN: Final = frozenset({AlertStatus.PENDING, AlertStatus.FIRING})
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class Memory:
    """What one rule remembers about one device between its readings (event time only)."""

    # Window and rate of change: the field (see `series`). Made on first use: there is one
    # memory per (rule, device), and ladders and thresholds never use one.
    window: Series | None = None
    pollutants: dict[str, Series] = field(default_factory=dict)  # ISPU: one per pollutant
    band: int = 0  # ladder: 0 below every step, n once steps[n - 1] is reached
    active: bool = False  # the condition held at the previous reading (for hysteresis)
    since_ns: int | None = None  # flood wave: when the upstream gauge reached the level

    @property
    def series(self) -> Series:
        if self.window is None:
            self.window = Series()
        return self.window


class Condition(Protocol):
    """What the engine needs of a rule."""

    @property
    def name(self) -> str: ...

    @property
    def timing(self) -> Timing: ...

    def selects(self, device: Device) -> bool:
        """Whether readings of this device go to this condition."""
        ...

    def subjects(self, device_id: str) -> tuple[str, ...]:
        """The alert subjects a reading of this device speaks about."""
        ...

    def memory(self, alerts: Sequence[Alert]) -> Memory:
        """A fresh memory, seeded from the subjects' current alerts (after a restart)."""
        ...

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        """Signals for the reading; none when the rule cannot judge yet (window not full)."""
        ...

    def resolution(self, alert: Alert, reading: Reading, device: Device,
                   memory: Memory) -> Mapping[str, str]:
        """What ended `alert` at `reading` (which made its condition stop): the annotations
        of the resolution. Asked only when an alert resolves, never per reading."""
        ...


def build(rule: Rule, registry: Registry, utc_offset: str = "+07:00") -> Condition:
    """The condition of a checked rule (`config.load_rules`); `utc_offset`: the operators'
    clock in resolution texts (`alerting.utc_offset`)."""
    # One case per rule type, and mypy proves the match exhaustive (assert_never): a new type
    # without a condition fails the type check, and an unknown object raises here.
    match rule:
        case LadderRule():
            return Ladder(rule, utc_offset)
        case ThresholdRule():
            return Threshold(rule, utc_offset)
        case RateOfChangeRule():
            return RateOfChange(rule, utc_offset)
        case WindowRule():
            return Window(rule, utc_offset)
        case IspuRule():
            return Ispu(rule, utc_offset)
        case FloodWaveRule():
            return FloodWave(rule, registry)
        case _:
            assert_never(rule)


def render(template: str, context: Mapping[str, object]) -> str:
    """A template filled from `context`; a placeholder without a value becomes ""."""
    try:
        return template.format_map(_Lenient(context))
    except (ValueError, IndexError, AttributeError, TypeError):
        return template  # checked at load; only a device label of another type gets here


class _Lenient(dict[str, object]):
    # A device without label `river` renders `{river}` as "", not as an error mid-alert.
    def __missing__(self, key: str) -> str:
        return ""


class _Base(Generic[R]):
    """Identity, timing, selection and signal building shared by every condition."""

    def __init__(self, rule: R, utc_offset: str) -> None:
        self.rule = rule
        self.name = rule.name
        self.timing = Timing(to_ns(rule.for_), to_ns(rule.keep_firing_for))
        self.utc_offset = utc_offset

    def _ended(self, reading: Reading, summary: str, description: str,
               value: float) -> dict[str, str]:
        """A resolution's annotations; `summary` and `description` may use `{at}`."""
        at = local_time(reading.ts_ns, self.utc_offset)
        return ended(summary.format(at=at), description.format(at=at), reading.ts_ns,
                     self.utc_offset, value=f"{value:g}")

    def selects(self, device: Device) -> bool:
        return isinstance(self.rule, SelectingRule) and self.rule.selects(device)

    def subjects(self, device_id: str) -> tuple[str, ...]:
        return (device_id,)

    def memory(self, alerts: Sequence[Alert]) -> Memory:
        return Memory(active=any(alert.status in _OPEN for alert in alerts))

    def _inactive(self, subject: str, at_ns: int) -> Signal:
        # `step` keeps the alert's own labels when a condition stops: none are needed here.
        return Signal(self.name, subject, False, at_ns, Severity.INFO, {}, {})

    def _active(
        self,
        device: Device,
        at_ns: int,
        severity: Severity,
        value: float,
        text: tuple[str, str],
        extra: Mapping[str, object] = _EMPTY,
        labels: Mapping[str, str] = _EMPTY,
        notes: Mapping[str, str] = _EMPTY,
    ) -> Signal:
        """A firing signal for `device`.

        `text`: the default summary and description; `extra`: placeholders of the rule type;
        `labels` and `notes` (annotations): the rule type's own, before the rule's templates.
        """
        context = {
            **device.labels, "alertname": self.name, "device_id": device.id, "name": device.name,
            "kind": device.kind.value, "severity": severity.value, "value": value,
            "field": getattr(self.rule, "field", ""), **extra,
        }
        all_labels = {
            **device.labels, "alertname": self.name, "severity": severity.value,
            "device_id": device.id, "kind": device.kind.value, **labels,
        }
        all_labels.update({key: render(t, context) for key, t in self.rule.labels.items()})
        summary, description = text
        annotations = {
            "summary": render(summary, context), "description": render(description, context),
            "value": f"{value:g}", **notes,
        }
        annotations.update({key: render(t, context) for key, t in self.rule.annotations.items()})
        return Signal(self.name, device.id, True, at_ns, severity, all_labels, annotations)


def holds(rule: BoundedRule, value: float, was_active: bool) -> bool:
    """Past the limit, or (hysteresis) still within the clear limit after being past it."""
    if rule.above is not None:
        if value > rule.above:
            return True
        return was_active and rule.clear_below is not None and value >= rule.clear_below
    if value < rule.limit:
        return True
    return was_active and rule.clear_above is not None and value <= rule.clear_above


def ladder_band(value: float, limits: Sequence[float], band: int, margin: float) -> int:
    """The ladder band after `value`: 0 below every limit, n at or above limits[n - 1].

    Up: at or above a limit enters its band at once. Down: a band is left only when the
    value falls below its limit minus `margin`, so a level hovering at a limit stays put.
    """
    reached = sum(1 for limit in limits if value >= limit)
    if reached >= band:
        return reached
    while band > 0 and value < limits[band - 1] - margin:
        band -= 1
    return band


class Ladder(_Base[LadderRule]):
    """Per-device thresholds (siaga3_cm, ...): one alert whose level follows the value."""

    def selects(self, device: Device) -> bool:
        names = (step.threshold for step in self.rule.steps)
        return self.rule.selects(device) and all(name in device.thresholds for name in names)

    def memory(self, alerts: Sequence[Alert]) -> Memory:
        # After a restart, resume in the band the alert is in, so hysteresis still holds.
        levels = [step.level for step in self.rule.steps]
        open_levels = [a.labels.get("level") for a in alerts if a.status in _OPEN]
        band = max((levels.index(lv) + 1 for lv in open_levels if lv in levels), default=0)
        return Memory(band=band, active=band > 0)

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        value = reading.values.get(self.rule.field)
        if value is None:
            return []
        limits = [device.thresholds[step.threshold] for step in self.rule.steps]
        memory.band = ladder_band(value, limits, memory.band, self.rule.clear_margin)
        if memory.band == 0:
            return [self._inactive(device.id, reading.ts_ns)]
        step = self.rule.steps[memory.band - 1]
        text = ("{name} is at {level}: {field} {value:g}",
                "{name} reads {field} {value:g}; the {level} threshold is {threshold:g}.")
        extra = {"level": step.level, "threshold": limits[memory.band - 1]}
        return [self._active(device, reading.ts_ns, step.severity, value, text, extra,
                             {"level": step.level})]

    def resolution(self, alert: Alert, reading: Reading, device: Device,
                   memory: Memory) -> Mapping[str, str]:
        value, field = reading.values.get(self.rule.field, 0.0), self.rule.field
        first = self.rule.steps[0]
        limit = device.thresholds[first.threshold]
        return self._ended(
            reading, f"{device.name} is back below {first.level}: {field} {value:g} at {{at}}",
            f"{device.name} reads {field} {value:g} at {{at}}, below the {first.level} "
            f"threshold of {limit:g} (less the {self.rule.clear_margin:g} margin): the alert "
            f"(last at {alert.labels.get('level', first.level)}) has ended.", value)


def _back(rule: BoundedRule) -> tuple[str, float]:
    """Which way a bounded rule's value went to end it, and the limit it crossed."""
    if rule.above is not None:
        return "below", rule.clear_below if rule.clear_below is not None else rule.above
    return "above", rule.clear_above if rule.clear_above is not None else rule.limit


class Threshold(_Base[ThresholdRule]):
    """A field past a fixed limit, with an optional clear limit."""

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        value = reading.values.get(self.rule.field)
        if value is None:
            return []
        memory.active = holds(self.rule, value, memory.active)
        if not memory.active:
            return [self._inactive(device.id, reading.ts_ns)]
        text = ("{name}: {field} {value:g}", "{name} reads {field} {value:g}, past {limit:g}.")
        return [self._active(device, reading.ts_ns, self.rule.severity, value, text,
                             {"limit": self.rule.limit})]

    def resolution(self, alert: Alert, reading: Reading, device: Device,
                   memory: Memory) -> Mapping[str, str]:
        value, field = reading.values.get(self.rule.field, 0.0), self.rule.field
        way, limit = _back(self.rule)
        return self._ended(
            reading, f"{device.name}: {field} back {way} {limit:g}: {value:g} at {{at}}",
            f"{device.name} reads {field} {value:g} at {{at}}, back {way} {limit:g}: the "
            f"alert has ended.", value)


class RateOfChange(_Base[RateOfChangeRule]):
    """A rise (fall) within `within`: the value now against the lowest (highest) in the span.

    The span is [ts - within, ts], both ends included: 5-minute readings over 30 minutes
    compare seven readings. It clears once the change within the span is under the limit.
    """

    def __init__(self, rule: RateOfChangeRule, utc_offset: str) -> None:
        super().__init__(rule, utc_offset)
        # [ts - within, ts] on integer nanoseconds is the series' (ts - within - 1, ts].
        self._span_ns = to_ns(rule.within) + 1

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        value = reading.values.get(self.rule.field)
        if value is None:
            return []
        memory.series.add(reading.ts_ns, value, self._span_ns)
        rise = self.rule.rise
        change = value - memory.series.low() if rise is not None else memory.series.high() - value
        limit = rise if rise is not None else self.rule.fall or 0.0
        if change < limit:
            return [self._inactive(device.id, reading.ts_ns)]
        text = ("{name}: {field} changed {change:g} within {within}",
                "{name} reads {field} {value:g}, {change:g} from {within} ago or less "
                "(limit {limit:g}).")
        extra = {"change": change, "limit": limit, "within": format_duration(self.rule.within)}
        return [self._active(device, reading.ts_ns, self.rule.severity, value, text, extra)]

    def resolution(self, alert: Alert, reading: Reading, device: Device,
                   memory: Memory) -> Mapping[str, str]:
        value, field = reading.values.get(self.rule.field, 0.0), self.rule.field
        rise = self.rule.rise
        change = value - memory.series.low() if rise is not None else memory.series.high() - value
        way, limit = ("rising", rise) if rise is not None else ("falling", self.rule.fall or 0.0)
        within = format_duration(self.rule.within)
        return self._ended(
            reading, f"{device.name}: {field} no longer {way} fast: {value:g} at {{at}}",
            f"{device.name} reads {field} {value:g} at {{at}}: {change:g} within {within}, "
            f"under the limit of {limit:g}: the alert has ended.", value)


class Window(_Base[WindowRule]):
    """An aggregate over (ts - window, ts]; silent until the readings span the window."""

    def __init__(self, rule: WindowRule, utc_offset: str) -> None:
        super().__init__(rule, utc_offset)
        self._window_ns = to_ns(rule.window)

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        value = reading.values.get(self.rule.field)
        if value is None:
            return []
        series = memory.series
        series.add(reading.ts_ns, value, self._window_ns)
        if not series.full:
            return []  # a few readings are not a 10-minute mean: no judgement yet
        aggregate = AGGREGATES[self.rule.aggregate](series)
        memory.active = holds(self.rule, aggregate, memory.active)
        if not memory.active:
            return [self._inactive(device.id, reading.ts_ns)]
        text = ("{name}: {aggregate} {field} over {window} is {value:.1f}",
                "{name}: the {aggregate} {field} over {window} is {value:.1f} (limit {limit:g}).")
        extra = {"aggregate": self.rule.aggregate, "window": format_duration(self.rule.window),
                 "limit": self.rule.limit}
        return [self._active(device, reading.ts_ns, self.rule.severity, aggregate, text, extra)]

    def resolution(self, alert: Alert, reading: Reading, device: Device,
                   memory: Memory) -> Mapping[str, str]:
        value = AGGREGATES[self.rule.aggregate](memory.series)
        way, limit = _back(self.rule)
        what = f"{self.rule.aggregate} {self.rule.field} over {format_duration(self.rule.window)}"
        return self._ended(
            reading, f"{device.name}: {what} back {way} {limit:g}: {value:.1f} at {{at}}",
            f"{device.name}: the {what} is {value:.1f} at {{at}}, back {way} {limit:g}: the "
            f"alert has ended.", value)


class Ispu(_Base[IspuRule]):
    """The ISPU of the pollutant means over `window`; `level` follows the category.

    P.14/2020 computes ISPU from 24-hour averages; an instantaneous sub-index would page
    on every passing truck, and 24 hours would page a day late, so the rule averages each
    pollutant over a configurable window (default 1 h). Silent until readings span it.
    """

    def __init__(self, rule: IspuRule, utc_offset: str) -> None:
        super().__init__(rule, utc_offset)
        self._window_ns = to_ns(rule.window)
        self._min_rank = Category(rule.min_category).rank

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        window, ts_ns, values = self._window_ns, reading.ts_ns, reading.values
        series = memory.pollutants
        found = 0
        for pollutant, value in values.items():
            if pollutant in BREAKPOINTS:
                one = series.get(pollutant)
                if one is None:
                    one = series[pollutant] = Series()
                one.add(ts_ns, value, window)
                found += 1
        if not found:
            return []
        if len(series) > found:  # some are not in this reading: their edges move
            for pollutant, one in series.items():
                if pollutant not in values:
                    one.trim(ts_ns - window)
        # Full once any pollutant's readings span the window: a reading of any of them is one.
        for one in series.values():
            if one.full:
                break
        else:
            return []
        result = _index(memory)
        if result.category.rank < self._min_rank:
            return [self._inactive(device.id, reading.ts_ns)]
        text = ("{name}: ISPU {index} ({category})",
                "Air at {name} is {category}: ISPU {index}, dominant pollutant {dominant} "
                "({window} means; the regulation's ISPU uses 24-hour means).")
        extra = {"index": result.index, "category": result.category.display_name,
                 "level": result.category.value, "dominant": result.dominant,
                 "window": format_duration(self.rule.window)}
        notes = {"index": str(result.index), "category": result.category.display_name,
                 "dominant": result.dominant}
        severity = ISPU_SEVERITY[result.category]
        return [self._active(device, reading.ts_ns, severity, result.index, text, extra,
                             {"level": result.category.value}, notes)]

    def resolution(self, alert: Alert, reading: Reading, device: Device,
                   memory: Memory) -> Mapping[str, str]:
        result = _index(memory)
        category = result.category.display_name
        annotations = self._ended(
            reading, f"Air at {device.name} is back to {category}: ISPU {result.index} at {{at}}",
            f"Air at {device.name} is {category} at {{at}}: ISPU {result.index}, dominant "
            f"pollutant {result.dominant} ({format_duration(self.rule.window)} means): the "
            f"alert has ended.", result.index)
        return {**annotations, "index": str(result.index), "category": category,
                "dominant": result.dominant}


def _index(memory: Memory) -> IspuResult:
    """The ISPU of the recent pollutant means a monitor's memory holds."""
    return ispu({pollutant: one.mean() for pollutant, one in memory.pollutants.items()
                 if one.recent})


class FloodWave(_Base[FloodWaveRule]):
    """The upstream gauge at `at_level` or worse warns each downstream gauge of the wave.

    The expected arrival is the event time the upstream reached the level plus the travel
    time; it stays put while the upstream stays up, and the alerts resolve when it falls
    back below the level (minus `clear_margin`).
    """

    def __init__(self, rule: FloodWaveRule, registry: Registry) -> None:
        super().__init__(rule, rule.utc_offset)  # the rule's own clock, as its arrival times
        found = ((registry.get(entry.device), entry.travel) for entry in rule.downstream)
        self._downstream = [(device, travel) for device, travel in found if device is not None]
        self._zone = zone(rule.utc_offset)

    def selects(self, device: Device) -> bool:
        return device.id == self.rule.upstream

    def subjects(self, device_id: str) -> tuple[str, ...]:
        return tuple(device.id for device, _ in self._downstream)

    def memory(self, alerts: Sequence[Alert]) -> Memory:
        # The alerts began at the upstream reading that reached the level: the wave's start.
        starts = [alert.starts_at_ns for alert in alerts if alert.status in _OPEN]
        return Memory(active=bool(starts), since_ns=min(starts, default=None))

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        value = reading.values.get(self.rule.field)
        limit = device.thresholds.get(self.rule.threshold)
        if value is None or limit is None:
            return []
        margin = self.rule.clear_margin if memory.active else 0.0
        if value < limit - margin:
            memory.active, memory.since_ns = False, None
            return [self._inactive(down.id, reading.ts_ns) for down, _ in self._downstream]
        since = memory.since_ns if memory.active and memory.since_ns is not None else reading.ts_ns
        memory.active, memory.since_ns = True, since
        return [self._wave(reading, device, down, travel, value, limit, since)
                for down, travel in self._downstream]

    def _wave(self, reading: Reading, upstream: Device, down: Device, travel: timedelta,
              value: float, limit: float, since_ns: int) -> Signal:
        arrival_ns = since_ns + to_ns(travel)
        arrival = datetime.fromtimestamp(arrival_ns / 1e9, self._zone).isoformat("T", "seconds")
        extra = {"upstream": upstream.id, "upstream_name": upstream.name,
                 "level": self.rule.at_level, "threshold": limit,
                 "expected_arrival": arrival, "travel_time": format_duration(travel)}
        text = ("Flood wave expected at {name} around {expected_arrival}",
                "{upstream_name} reads {value:g} cm, at or past {level} ({threshold:g} cm); "
                "the wave takes about {travel_time} to reach {name}.")
        notes = {"expected_arrival": arrival, "travel_time": format_duration(travel)}
        return self._active(down, reading.ts_ns, self.rule.severity, value, text, extra,
                            {"upstream": upstream.id}, notes)

    def resolution(self, alert: Alert, reading: Reading, device: Device,
                   memory: Memory) -> Mapping[str, str]:
        # `device` is the upstream gauge (its reading ended the wave); the alert is downstream.
        value, field = reading.values.get(self.rule.field, 0.0), self.rule.field
        names = {down.id: down.name for down, _ in self._downstream}
        down = names.get(alert.subject, alert.subject)
        level = self.rule.at_level
        return self._ended(
            reading, f"Flood wave at {down} called off: {device.name} is back below {level}: "
                     f"{field} {value:g} at {{at}}",
            f"{device.name} reads {field} {value:g} at {{at}}, back below {level} (less the "
            f"{self.rule.clear_margin:g} margin): no flood wave is on its way to {down} from "
            f"it now.", value)
