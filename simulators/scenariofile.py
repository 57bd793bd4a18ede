"""The scenario YAML format: strict models and the readers of its durations, times and devices."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated, Any, Final, Literal

from pydantic import Field, PlainValidator

from devices.kinds import Kind
from devices.topics import DEVICE_ID_PATTERN, DEVICE_ID_RE
from siaga_core.configfile import StrictModel
from simulators.calendar import HOUR_S, MINUTE_S, WIB

_NUMBER: Final = r"(\d+(?:\.\d+)?)"
_DURATION_RE: Final = re.compile(rf"(?:{_NUMBER}d)?(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")
_UNIT_S: Final = (86_400.0, HOUR_S, MINUTE_S, 1.0)
_CLOCK_RE: Final = re.compile(r"(\d{1,2}):(\d{2})")
MAX_CLOCK_HOURS: Final = 48  # "28:00" is 04:00 on the second day of a replay; later: use a date
KIND_NAMES: Final = tuple(kind.value for kind in Kind)
DURATION_HINT: Final = "a duration such as 90s, 10m, 1h30m or 2d"
WHEN_HINT: Final = (
    'a time: "17:49" (WIB, on the start day), an offset from the start such as +3h, '
    "or a date-time such as 2020-01-01T02:00:00+07:00"
)


def parse_duration(value: object) -> float:
    """Seconds from `90s`, `10m`, `1h30m`, `2d` or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION_RE.fullmatch(text)
        if text and match is not None:
            parts = zip(match.groups(), _UNIT_S, strict=True)
            return sum(float(number) * unit for number, unit in parts if number)
    raise ValueError(f"must be {DURATION_HINT} (got {value!r})")


def parse_positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than zero (got {value!r})")
    return seconds


def aware(moment: datetime) -> datetime:
    """`moment` with its offset, or in WIB when it has none (scenarios are Jakarta's)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=WIB)


def parse_start(value: object) -> datetime:
    """A scenario's start: a date-time (WIB unless it says otherwise) or a date (midnight)."""
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, date):
        return datetime.combine(value, time(), WIB)
    if isinstance(value, str):
        try:
            return aware(datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise ValueError(f"must be a date-time such as 2020-01-01T00:00:00+07:00 (got {value!r})")


@dataclass(frozen=True, slots=True)
class Moment:
    """A time as written: after the start, a clock time on the start day, or absolute."""

    after_start_s: float | None = None
    clock_s: float | None = None  # seconds after midnight (WIB) of the start day
    absolute: datetime | None = None

    def offset_from(self, start: datetime) -> float:
        """Seconds from `start` to this moment (negative: before the start)."""
        if self.after_start_s is not None:
            return self.after_start_s
        if self.clock_s is not None:
            midnight = datetime.combine(start.astimezone(WIB).date(), time(), WIB)
            return (midnight - start).total_seconds() + self.clock_s
        assert self.absolute is not None
        return (self.absolute - start).total_seconds()


def parse_moment(value: object) -> Moment:
    if isinstance(value, datetime):
        return Moment(absolute=aware(value))
    if isinstance(value, date):
        return Moment(absolute=datetime.combine(value, time(), WIB))
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"put times in quotes: YAML reads 17:00 as the number 1020 (got {value})")
    if isinstance(value, str):
        moment = _moment_from_text(value.strip())
        if moment is not None:
            return moment
    raise ValueError(f"must be {WHEN_HINT} (got {value!r})")


def _moment_from_text(text: str) -> Moment | None:
    clock = _CLOCK_RE.fullmatch(text)
    if clock is not None:
        hours, minutes = int(clock[1]), int(clock[2])
        if hours > MAX_CLOCK_HOURS or minutes >= 60:
            return None
        return Moment(clock_s=hours * HOUR_S + minutes * MINUTE_S)
    offset = text.removeprefix("+")
    if offset and _DURATION_RE.fullmatch(offset):
        return Moment(after_start_s=parse_duration(offset))
    try:
        return Moment(absolute=aware(datetime.fromisoformat(text)))
    except ValueError:
        return None


def parse_point(value: object) -> tuple[Moment, float]:
    """A keyframe: `[when, value]`."""
    if isinstance(value, list) and len(value) == 2:
        when, number = value
        numeric = isinstance(number, int | float) and not isinstance(number, bool)
        if numeric and math.isfinite(number):
            return parse_moment(when), float(number)
    raise ValueError(f'must be a pair [when, value] such as ["02:00", 700] (got {value!r})')


@dataclass(frozen=True, slots=True)
class Selection:
    """`devices:` as written: ids and kinds (both empty: every device of the catalog)."""

    ids: tuple[str, ...] = ()
    kinds: tuple[Kind, ...] = ()


def parse_devices(value: object) -> Selection:
    if value == "all":
        return Selection()
    if isinstance(value, list):
        return Selection(ids=_ids(value))
    if isinstance(value, dict) and value and set(value) <= {"ids", "kinds"}:
        kinds = value.get("kinds", [])
        if not isinstance(kinds, list) or not all(k in KIND_NAMES for k in kinds):
            raise ValueError(f"kinds: must be a list of {', '.join(KIND_NAMES)} (got {kinds!r})")
        return Selection(ids=_ids(value.get("ids", [])), kinds=tuple(Kind(k) for k in kinds))
    raise ValueError(
        "must be all, a list of device ids, or a mapping with kinds: [...] and/or ids: [...] "
        f"(got {value!r})"
    )


def _ids(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"ids: must be a list of device ids (got {value!r})")
    for item in value:
        if not isinstance(item, str) or DEVICE_ID_RE.fullmatch(item) is None:
            raise ValueError(f"{item!r} is not a device id ({DEVICE_ID_PATTERN})")
    return tuple(value)


FaultSetting = tuple[float, float | None]  # rate, and the episode's duration if given


def parse_fault(value: object) -> FaultSetting:
    """`0.01`, or `{rate: 0.01, duration: 30m}`."""
    rate: object = value
    duration: float | None = None
    if isinstance(value, dict) and "rate" in value and set(value) <= {"rate", "duration"}:
        rate = value["rate"]
        if "duration" in value:
            try:
                duration = parse_positive_duration(value["duration"])
            except ValueError as exc:
                raise ValueError(f"duration: {exc}") from None
    if isinstance(rate, int | float) and not isinstance(rate, bool) and 0 <= rate <= 1:
        return float(rate), duration
    expected = "a chance per reading from 0 to 1, or {rate: 0.01, duration: 30m}"
    raise ValueError(f"must be {expected} (got {value!r})")


Duration = Annotated[float, PlainValidator(parse_duration)]
PositiveDuration = Annotated[float, PlainValidator(parse_positive_duration)]
When = Annotated[Moment, PlainValidator(parse_moment)]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
FaultName = Literal[
    "stuck", "spike", "dropout", "battery", "skew",
    "duplicate", "out-of-order", "store-and-forward", "malformed", "unknown-device",
]  # fmt: skip
Ratio = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class ScenarioFile(StrictModel):
    """The top level of a scenario file; `events` are validated one by one by their type."""

    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    start: Annotated[datetime, PlainValidator(parse_start)]
    duration: PositiveDuration
    devices: Annotated[Selection, PlainValidator(parse_devices)] = Selection()
    intervals: dict[DeviceId, PositiveDuration] = Field(default_factory=dict)  # kind or id
    faults: dict[FaultName, Annotated[FaultSetting, PlainValidator(parse_fault)]] = Field(
        default_factory=dict
    )
    events: list[dict[str, Any]] = Field(default_factory=list)


class RainEvent(StrictModel):
    type: Literal["rain"]
    at: When
    duration: PositiveDuration
    intensity_mm_h: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)
    rises: dict[DeviceId, Annotated[float, Field(gt=0, le=1000)]] = Field(default_factory=dict)
    rise_time: PositiveDuration | None = None
    recession: PositiveDuration = 4 * HOUR_S


class KeyframesEvent(StrictModel):
    type: Literal["keyframes"]
    device: DeviceId
    field: Literal["level_cm", "pm25", "speed_kmh", "water_score"] | None = None
    ease: Duration = HOUR_S
    points: list[Annotated[tuple[Moment, float], PlainValidator(parse_point)]] = Field(
        min_length=1
    )


class IncidentEvent(StrictModel):
    type: Literal["incident"]
    device: DeviceId
    at: When
    duration: PositiveDuration
    severity: Ratio = 0.7
    recovery: Duration = 15 * MINUTE_S


class HazeEvent(StrictModel):
    type: Literal["haze"]
    at: When
    duration: PositiveDuration
    factor: float = Field(default=2.0, gt=1, le=10, allow_inf_nan=False)
    ramp: Duration = 6 * HOUR_S
    devices: list[DeviceId] = Field(default_factory=list)


class RobEvent(StrictModel):
    type: Literal["rob"]
    at: When
    duration: PositiveDuration
    rise_cm: float = Field(gt=0, le=200, allow_inf_nan=False)
    devices: list[DeviceId] = Field(default_factory=list)


class FreezeEvent(StrictModel):
    """A camera whose analytics hang: it repeats its last counts and detects nothing."""

    type: Literal["freeze"]
    device: DeviceId
    at: When
    duration: PositiveDuration


class GlareEvent(StrictModel):
    """A camera that reads headlight glare on the wet road as water, every night.

    Without `at`, from the scenario's start; without `duration`, to its end.
    """

    type: Literal["glare"]
    device: DeviceId
    at: When | None = None
    duration: PositiveDuration | None = None
    water_score: float = Field(default=0.9, gt=0, le=1, allow_inf_nan=False)


EventModel = (RainEvent | KeyframesEvent | IncidentEvent | HazeEvent | RobEvent | FreezeEvent
              | GlareEvent)
EVENT_MODELS: Final[dict[str, type[EventModel]]] = {
    "rain": RainEvent,
    "keyframes": KeyframesEvent,
    "incident": IncidentEvent,
    "haze": HazeEvent,
    "rob": RobEvent,
    "freeze": FreezeEvent,
    "glare": GlareEvent,
}
