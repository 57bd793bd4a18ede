"""The fast path of reading validation: msgspec Structs built from the pydantic models.

`fast_readings` decodes a telemetry payload (one reading or a batch) straight from its bytes
into typed Structs and then `Reading`s, without `orjson.loads`, a pydantic model and
`to_reading` per reading (through `Decoder.decode`, batches of 100: 0.8 to 1.3 us a reading
against 3.6 to 4.9 us; a single reading, 2.4 to 2.9 us a message against 4.1 to 5.2 us;
at 7995c78 on the 2-core development machine, loaded). It answers only for messages every reading of
which the models accept, and then exactly as they do; anything else (a refusal, an unknown
field to count, a reading too far ahead) is `None`: the caller takes the reference path
(`devices.readings`), which gives the reason. So the fast path never has to explain.

The Structs are generated from `READING_MODELS`, never written by hand: each field's type,
default and bounds come from the model's `model_fields`. A model with anything this module
does not know how to mirror exactly (a new kind of constraint, validator or configuration)
gets no Struct, and its kind always takes the reference path: slower, never different.

What the two paths agree on, by construction and by the property tests
(tests/devices/test_structs.py, tests/ingest/test_decode_fast.py):
- numbers: ints accepted for float fields and stored as floats; bool, strings and `null`
  refused (an optional field is `UNSET` when absent, and `null` is not a number);
- unknown fields: refused here (`forbid_unknown_fields`), so the reference path counts them;
- `ts`: the JSON value as `orjson` would give it (int, float or string) through `parse_ts`;
- the models' cross-field rules (at least one pollutant, at least one camera count);
- `values`: the numeric fields present, in the models' field order, as `to_reading` gives.
JSON that orjson refuses msgspec refuses too (invalid UTF-8, lone surrogates, NaN, a BOM,
trailing data). Where the parsers differ on valid JSON, the fast path declines: orjson
reads an integer beyond 64 bits as a float and msgspec as an int, but no model accepts
either; a key sent twice is the last value's in both, yet msgspec refuses an earlier value
of the wrong type that orjson drops, so such a message takes the reference path.
"""

import types
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final, Union, get_args, get_origin

import msgspec
from annotated_types import Ge, Le
from pydantic import BaseModel, GetPydanticSchema, PlainValidator
from pydantic.fields import FieldInfo

from devices.kinds import Kind
from devices.readings import (
    CAMERA_COUNTS,
    NUMERIC_FIELDS,
    POLLUTANTS,
    READING_MODELS,
    Reading,
    validate_timestamp,
)
from devices.timestamps import MAX_EPOCH_S, MIN_EPOCH_S, parse_ts

# The models' cross-field rules, by the name of the model validator that enforces each: at
# least one of these fields must be present. A validator not named here is one this module
# cannot mirror, so its model gets no Struct.
ONE_OF_RULES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "_require_pollutant": POLLUTANTS,
    "_require_count": CAMERA_COUNTS,
})
# What the models' configuration must be for a Struct to mirror it: strict types, unknown
# fields allowed (counted by the decoder: here they send the message to the reference path).
_MIRRORED_CONFIG: Final = {"strict": True, "extra": "allow"}


class FastModel:
    """One kind's Struct decoder and what turning a Struct into a `Reading` needs."""

    __slots__ = ("decoder", "kind", "one_of", "struct")

    def __init__(self, kind: Kind, struct: type[msgspec.Struct],
                 one_of: tuple[tuple[str, ...], ...]) -> None:
        self.kind = kind
        self.struct = struct
        # One object or an array of them: msgspec tells them apart by the first byte.
        shapes = struct | list[struct]  # type: ignore[valid-type]  # a type made at run time
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(shapes)
        self.one_of = one_of


def mirror(kind: Kind, model: type[BaseModel]) -> FastModel | None:
    """The model's Struct, or None when it has a rule this module cannot mirror."""
    config = model.model_config
    if any(config.get(key) != value for key, value in _MIRRORED_CONFIG.items()):
        return None
    decorators = model.__pydantic_decorators__
    if (decorators.validators or decorators.field_validators or decorators.root_validators
            or not ONE_OF_RULES.keys() >= decorators.model_validators.keys()):
        return None
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        mirrored = _mirror_field(name, info)
        if mirrored is None:
            return None
        fields.append(mirrored)
    struct = msgspec.defstruct(
        f"{model.__name__}Struct", fields, forbid_unknown_fields=True, frozen=True, kw_only=True,
        # Fields hold numbers and strings only: no reference cycle to collect.
        gc=False,
    )
    one_of = tuple(ONE_OF_RULES[name] for name in decorators.model_validators)
    # `_to_readings` takes `ts` and `seq` out by name, keeps the rest as the stored values,
    # and checks the rules on those.
    if set(struct.__struct_fields__) != NUMERIC_FIELDS[kind] | {"ts", "seq"} or not all(
            NUMERIC_FIELDS[kind].issuperset(names) for names in one_of):
        return None
    return FastModel(kind, struct, one_of)


def _mirror_field(name: str, info: FieldInfo) -> tuple[str, Any] | tuple[str, Any, Any] | None:
    """A Struct field (name, type[, default]) accepting exactly what `info` does, or None."""
    key = info.alias or name
    if info.metadata == [PlainValidator(validate_timestamp)]:
        # `ts`: any JSON value `parse_ts` may take; `fast_readings` calls it.
        return key, int | float | str | msgspec.UnsetType, msgspec.UNSET
    base = _number_type(info.annotation)
    if base is None:
        return None
    low = high = None
    for constraint in info.metadata:
        if isinstance(constraint, Ge):
            low = constraint.ge
        elif isinstance(constraint, Le):
            high = constraint.le
        elif isinstance(constraint, GetPydanticSchema):
            # The OptionalFloat/OptionalInt trick of readings.py: validated as the bare
            # type, so `null` is refused; absence is the default, as `UNSET` is here.
            if not isinstance(None, _union_members(info.annotation)):
                return None
        elif getattr(constraint, "allow_inf_nan", True) is not False:
            return None  # a constraint not mirrored: this model takes the reference path
    if low is None or high is None:
        return None  # every number is bounded in readings.py; an unbounded one is new
    typed = Annotated[base, msgspec.Meta(ge=low, le=high)]  # type: ignore[valid-type]  # as above
    if info.is_required():
        return key, typed
    if info.default is not None:
        return None
    return key, typed | msgspec.UnsetType, msgspec.UNSET


def _union_members(annotation: Any) -> tuple[type, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(type(None) if arg is None else arg for arg in get_args(annotation))
    return (annotation,)


def _number_type(annotation: Any) -> type[float] | type[int] | None:
    """float or int, for `float`, `float | None`, `int | None`; None for anything else."""
    members = set(_union_members(annotation)) - {type(None)}
    if members == {float}:
        return float
    if members == {int}:
        return int
    return None


def _mirror_all() -> Mapping[Kind, FastModel]:
    mirrored = {kind: mirror(kind, model) for kind, model in READING_MODELS.items()}
    return MappingProxyType({kind: fast for kind, fast in mirrored.items() if fast is not None})


# The kinds with a fast path (all of them today; tests/devices/test_structs.py checks).
FAST_MODELS: Final[Mapping[Kind, FastModel]] = _mirror_all()


def fast_readings(kind: Kind, device_id: str, payload: bytes, received_ns: int, *,
                  max_items: int, latest_ns: int) -> list[Reading] | None:
    """The payload's readings, when it is one reading or a batch of 1..`max_items` that the
    models accept whole, each stamped no later than `latest_ns`; else None. Never raises."""
    fast = FAST_MODELS.get(kind)
    if fast is None:
        return None
    try:
        decoded = fast.decoder.decode(payload)
    except msgspec.DecodeError:  # ValidationError included: the reference path says why
        return None
    items = decoded if type(decoded) is list else [decoded]
    if not 0 < len(items) <= max_items:
        return None
    return _to_readings(fast, device_id, items, received_ns, latest_ns)



def _to_readings(fast: FastModel, device_id: str, items: list[Any], received_ns: int,
                 latest_ns: int) -> list[Reading] | None:
    kind, one_of, new_tuple = fast.kind, fast.one_of, tuple.__new__
    earliest, after = MIN_EPOCH_S, MAX_EPOCH_S
    readings: list[Reading] = []
    append = readings.append
    # One C call makes every Struct a dict of the fields present (`UNSET` ones are left out),
    # in field order; without `ts` and `seq` that is `to_reading`'s `values`, floats only.
    for values in msgspec.to_builtins(items):
        ts = values.pop("ts", None)
        seq = values.pop("seq", None)
        for names in one_of:
            if values.keys().isdisjoint(names):
                return None
        if type(ts) is float and earliest <= ts < after:
            # `parse_ts`'s first question for a float, asked here: epoch seconds with a
            # fraction are what most devices send, and a call a reading is a twentieth of
            # this loop's time. Any other `ts` goes to `parse_ts`.
            ts_ns = round(ts * 1_000_000) * 1000
        elif ts is None:
            ts_ns = received_ns
        else:
            try:
                ts_ns = parse_ts(ts)
            except ValueError:
                return None
        if ts_ns > latest_ns:
            return None
        # `Reading(...)` would pass through the NamedTuple's Python `__new__`, which only
        # packs its arguments: a tenth of the fast path's time per reading.
        append(new_tuple(Reading, (kind, device_id, ts_ns, values, seq)))
    return readings
