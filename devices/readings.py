"""Reading payloads per device kind: strict pydantic models, their bounds, and `Reading`.

The models take what `orjson.loads` returns (python mode) and accept exactly the fields of
SPEC section 1. Numbers must be JSON numbers: bool, strings, null, NaN and infinities are
refused, ints are accepted where floats are expected and stored as floats, so an InfluxDB
field never changes type. A field the SPEC does not name is allowed by the model
(`extra="allow"`) only so the decoder can count it through `model_extra`; it is ignored,
never stored.

Bounds are hard plausibility limits: a value outside them cannot be a measurement of the
thing the field names. Softer, per-device checks belong to the registry and the rules.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Final, NamedTuple, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from devices.kinds import Kind
from devices.timestamps import parse_ts

MAX_SEQ: Final = 2**63 - 1  # InfluxDB stores integers as int64
# The fields every kind shares that are not measurements: the time and the loss counter.
_NOT_STORED: Final = frozenset({"ts_ns", "seq"})
POLLUTANTS: Final = ("pm25", "pm10", "o3", "no2", "so2", "co", "hc")


def _bounded(low: float, high: float) -> Any:  # Any: Field() is typed as its default
    """A finite number field in [low, high]."""
    return Field(ge=low, le=high, allow_inf_nan=False)


# Optional fields may be absent, but `null` is not a JSON number (SPEC section 1). These
# validate as the bare type, so a null fails like a string would; absence still yields the
# `None` default, which pydantic does not validate. No Python runs per field.
OptionalFloat = Annotated[float | None, GetPydanticSchema(lambda _tp, handler: handler(float))]
OptionalInt = Annotated[int | None, GetPydanticSchema(lambda _tp, handler: handler(int))]


def validate_timestamp(value: object) -> int:
    try:
        return parse_ts(value)
    except ValueError as exc:
        # The reason goes in the context, not the template: it echoes device input.
        raise PydanticCustomError("timestamp", "{reason}", {"reason": str(exc)}) from None


class ReadingModel(BaseModel):
    """The fields every kind shares (SPEC section 1, "all")."""

    model_config = ConfigDict(strict=True, frozen=True, extra="allow")

    # `ts` in the payload; absent means "stamp with the time of receipt" (see `to_reading`).
    ts_ns: Annotated[int | None, PlainValidator(validate_timestamp)] = Field(
        default=None, alias="ts")
    seq: Annotated[OptionalInt, Field(ge=0, le=MAX_SEQ)] = None
    # 0..16 V covers a 1-cell Li-ion (2.5..4.3 V) and a 12 V pack (9..15.5 V) of
    # jakarta.md section 5; a flat battery (below those) is still worth storing.
    battery_v: Annotated[OptionalFloat, _bounded(0, 16)] = None
    # Received signal strength: LoRa sensitivity ends near -150 dBm; 0 dBm is the ceiling.
    rssi_dbm: Annotated[OptionalFloat, _bounded(-150, 0)] = None
    # Signal-to-noise ratio of the last hop, as LoRaWAN network servers report it: LoRa
    # demodulates down to about -20 dB (SF12) and gateways report at most about +15 dB.
    snr_db: Annotated[OptionalFloat, _bounded(-30, 30)] = None


class WaterLevelReading(ReadingModel):
    """A river, sea or reservoir gauge (`water-level`)."""

    # cm on the gauge staff. jakarta.md section 5: Waduk Pluit (a pumped reservoir whose
    # normal level is -190..-110) rejects below -400, PA Manggarai above 1,200.
    level_cm: Annotated[float, _bounded(-400, 1200)]


class AirQualityReading(ReadingModel):
    """An air-quality monitor (`air-quality`); at least one pollutant is required."""

    # ug/m3. jakarta.md section 5: PM sensors saturate at 1,000; CO, NO2, SO2 and O3 from
    # the ISPU table's top row with margin.
    pm25: Annotated[OptionalFloat, _bounded(0, 1000)] = None
    pm10: Annotated[OptionalFloat, _bounded(0, 1000)] = None
    o3: Annotated[OptionalFloat, _bounded(0, 1000)] = None
    no2: Annotated[OptionalFloat, _bounded(0, 3000)] = None
    so2: Annotated[OptionalFloat, _bounded(0, 1200)] = None
    co: Annotated[OptionalFloat, _bounded(0, 50000)] = None
    # HC has no row in section 5; about three times the ISPU top row (648) of section 3.
    hc: Annotated[OptionalFloat, _bounded(0, 2000)] = None
    # The monitor's own sensors: Jakarta air is 22..36 degC, a box in the sun is hotter.
    temp_c: Annotated[OptionalFloat, _bounded(-10, 60)] = None
    rh_pct: Annotated[OptionalFloat, _bounded(0, 100)] = None

    @model_validator(mode="after")
    def _require_pollutant(self) -> Self:
        # A set operation in C: cheaper than testing seven attributes for None.
        if self.model_fields_set.isdisjoint(POLLUTANTS):
            raise PydanticCustomError(
                "pollutant_missing",
                "at least one of {fields} is required",
                {"fields": ", ".join(POLLUTANTS)},
            )
        return self


class TrafficReading(ReadingModel):
    """A road traffic detector (`traffic`), covering one or more lanes."""

    # km/h, mean over the interval. jakarta.md section 5: above 200 is no road vehicle here.
    speed_kmh: Annotated[float, _bounded(0, 200)]
    # veh/h. Section 5 rejects above 8,000 per lane; a detector may span 3 to 4 lanes.
    volume_vph: Annotated[OptionalFloat, _bounded(0, 30000)] = None
    occupancy_pct: Annotated[OptionalFloat, _bounded(0, 100)] = None  # share of time occupied


CAMERA_COUNTS: Final = ("vehicles_per_min", "mean_speed_kmh", "water_score", "people")


class CameraReading(ReadingModel):
    """A camera's periodic counts from its video analytics (`camera`, SPEC section 7); at
    least one is required."""

    # A multi-lane arterial carries at most about 8,000 vehicles an hour per lane (jakarta.md
    # section 5): 2,000 a minute is no road a camera sees.
    vehicles_per_min: Annotated[OptionalFloat, _bounded(0, 2000)] = None
    mean_speed_kmh: Annotated[OptionalFloat, _bounded(0, 200)] = None
    water_score: Annotated[OptionalFloat, _bounded(0, 1)] = None  # water on the road, 0..1
    people: Annotated[OptionalFloat, _bounded(0, 100_000)] = None

    @model_validator(mode="after")
    def _require_count(self) -> Self:
        if self.model_fields_set.isdisjoint(CAMERA_COUNTS):
            raise PydanticCustomError(
                "count_missing", "at least one of {fields} is required",
                {"fields": ", ".join(CAMERA_COUNTS)},
            )
        return self


READING_MODELS: Mapping[Kind, type[ReadingModel]] = MappingProxyType(
    {
        Kind.WATER_LEVEL: WaterLevelReading,
        Kind.AIR_QUALITY: AirQualityReading,
        Kind.TRAFFIC: TrafficReading,
        Kind.CAMERA: CameraReading,
    }
)

# Each model's schema validator: what `model_validate` calls, minus that method's Python
# argument handling (about 0.4 us of the 2 us a reading takes). The decoder's hot path.
READING_VALIDATORS: Mapping[Kind, Callable[[object], ReadingModel]] = MappingProxyType(
    {kind: model.__pydantic_validator__.validate_python for kind, model in READING_MODELS.items()}
)

# The fields of each kind that become InfluxDB fields: every number but `ts` and `seq`.
NUMERIC_FIELDS: Mapping[Kind, frozenset[str]] = MappingProxyType(
    {kind: frozenset(model.model_fields) - _NOT_STORED for kind, model in READING_MODELS.items()}
)


class Reading(NamedTuple):
    """One validated reading, as the rest of Siaga sees it.

    A NamedTuple, not a frozen dataclass: it is made once per reading on the hot path, and
    a frozen dataclass's `__init__` (one `object.__setattr__` per field) costs twice as
    much. Immutable all the same.
    """

    kind: Kind
    device_id: str
    ts_ns: int
    values: dict[str, float]  # the measurements present; floats only (see module docstring)
    seq: int | None


def validate_reading(kind: Kind, data: object) -> ReadingModel:
    """Validate one decoded JSON value as a reading of `kind`; raises `ValidationError`.

    The same as `READING_MODELS[kind].model_validate(data)` (see READING_VALIDATORS).
    """
    return READING_VALIDATORS[kind](data)


def to_reading(model: ReadingModel, kind: Kind, device_id: str, default_ts_ns: int) -> Reading:
    """Turn a validated model into a `Reading`; `default_ts_ns` is used when `ts` was absent."""
    stored = NUMERIC_FIELDS[kind]
    # The model's __dict__ holds declared fields only (extras live in model_extra), and
    # strict float fields have already turned ints into floats.
    values = {k: v for k, v in model.__dict__.items() if v is not None and k in stored}
    ts_ns = model.ts_ns if model.ts_ns is not None else default_ts_ns
    # Positional: a keyword call costs a quarter more on the hot path.
    return Reading(kind, device_id, ts_ns, values, model.seq)


# Errors shown per reason: enough to fix a firmware, short enough for a dead-letter list.
_MAX_ERRORS_SHOWN: Final = 3
# Custom errors whose message already names the field(s).
_SELF_NAMED: Final = frozenset({"timestamp", "pollutant_missing", "count_missing"})


def explain(exc: ValidationError) -> str:
    """One short reason for a failed reading, naming the field(s): `level_cm: required`."""
    errors = exc.errors(include_url=False)
    reasons = [_describe(error) for error in errors[:_MAX_ERRORS_SHOWN]]
    if len(errors) > _MAX_ERRORS_SHOWN:
        reasons.append(f"and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "; ".join(reasons)


def _describe(error: ErrorDetails) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind in _SELF_NAMED:
        return error["msg"]
    field = ".".join(str(part) for part in error["loc"]) or "reading"
    if kind == "missing":
        return f"{field}: required"
    if kind == "model_type":
        return f"reading: must be a JSON object, not {_json_type(value)}"
    if kind == "float_type":
        if isinstance(value, int) and not isinstance(value, bool):  # beyond a double's range
            return f"{field}: must be a number a double can hold (got {_shown(value)})"
        return f"{field}: must be a number, not {_json_type(value)}"
    if kind == "int_type":
        if isinstance(value, float):
            return f"{field}: must be an integer (got {_shown(value)})"
        return f"{field}: must be an integer, not {_json_type(value)}"
    if kind == "finite_number":
        return f"{field}: must be a finite number (got {_shown(value)})"
    if kind == "greater_than_equal":
        return f"{field}: must be >= {_number(ctx['ge'])} (got {_shown(value)})"
    if kind == "less_than_equal":
        return f"{field}: must be <= {_number(ctx['le'])} (got {_shown(value)})"
    message = error["msg"]
    return f"{field}: {message[:1].lower()}{message[1:]}"


def _number(bound: float) -> str:
    # Bounds are stored as floats; 1200 reads better than 1200.0.
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _shown(value: object) -> str:
    # A reason is one short line; an int past 4300 digits cannot even be printed.
    try:
        text = repr(value)
    except ValueError:
        return "a number too long to show"
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A device's retained `online`/`offline` status message."""

    kind: Kind
    device_id: str
    online: bool
    received_ns: int
