"""The fast path of reading validation (devices.structs) against the reference path.

The reference is what the decoder did before: `orjson.loads`, the pydantic model of the
kind, `to_reading`. For any payload the fast path gives either None (the caller takes the
reference path) or exactly the reference's readings: the same values, as floats, in the
same order, the same `ts_ns` and `seq`. And it gives None only when the reference refuses
something, counts an unknown field, or the JSON holds what `orjson` and msgspec may read
differently (a key sent twice): a valid message is never sent the slow way.

The JSON text is written here token by token (`render`), not by a serializer, so that the
two parsers meet number spellings, escapes, whitespace and duplicate keys that no
serializer writes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError, field_validator, model_validator

from devices.kinds import Kind
from devices.readings import (
    CAMERA_COUNTS,
    MAX_SEQ,
    NUMERIC_FIELDS,
    POLLUTANTS,
    READING_MODELS,
    Reading,
    WaterLevelReading,
    to_reading,
    validate_reading,
)
from devices.structs import FAST_MODELS, fast_readings, mirror

NOW_NS = 1_700_000_000 * 10**9
NOW_S = NOW_NS // 10**9
MAX_FUTURE_NS = 300 * 10**9
LATEST_NS = NOW_NS + MAX_FUTURE_NS
MAX_ITEMS = 1000  # as ingest.decode.MAX_BATCH (the decoder passes it)
DEVICE = "dev-1"
PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The keys each kind understands: `ts` is the alias of the models' `ts_ns`.
KEYS = {kind: sorted(info.alias or name for name, info in model.model_fields.items())
        for kind, model in READING_MODELS.items()}
# Keys that are not fields: internals, the field's own name behind the alias, near misses.
NOT_KEYS = ["ts_ns", "model_extra", "__class__", "values", "seq ", "Level_cm", "", "x",
            "level_cm\u0000", "PM25"]


# --- JSON text, token by token -----------------------------------------------------------

@dataclass(frozen=True)
class Obj:
    """A JSON object as its pairs, in order: a key may come twice, as no dict can say."""

    pairs: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: `1e400`, `NaN`, a lone surrogate escape, a big integer."""

    text: str


WHITESPACE = st.sampled_from(["", "", " ", "\n", "\t", "\r\n  "])
RAW_VALUES = [
    "1e400", "-1e400", "NaN", "Infinity", "-0", "-0.0", "0e0", "1E2", "1e-400", "5e-324",
    "18446744073709551616", "-9223372036854775809", "9223372036854775808", "1" + "0" * 30,
    '"\\ud800"', '"\\udc00x"', "01", "1.", ".5", "+1", "true", "null", "[]", "{}",
    '"2023-11-14T22:13:20Z"', '"2023-11-14T22:13:20"', '"1700000000"', "1700000000.0000001",
    "0.1000000000000000055511151231257827021181583404541015625",
]


@st.composite
def render(draw: st.DrawFn, value: Any) -> str:
    """`value` as JSON text, with spellings, escapes and whitespace drawn at random."""
    space = draw(WHITESPACE)
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj | dict):
        pairs = value.pairs if isinstance(value, Obj) else tuple(value.items())
        members = [f"{space}{draw(render_string(key))}{draw(WHITESPACE)}:"
                   f"{draw(WHITESPACE)}{draw(render(item))}" for key, item in pairs]
        return "{" + ",".join(members) + space + "}"
    if isinstance(value, list):
        return "[" + ",".join(space + draw(render(item)) for item in value) + space + "]"
    if isinstance(value, str):
        return draw(render_string(value))
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return draw(render_int(value))
    return draw(render_float(value))


@st.composite
def render_string(draw: st.DrawFn, text: str) -> str:
    how = draw(st.sampled_from(["ascii", "utf-8", "escaped"]))
    if how == "escaped":  # every character as \uXXXX (a pair above the BMP)
        units = text.encode("utf-16-le")
        return '"' + "".join(f"\\u{int.from_bytes(units[i:i + 2], 'little'):04x}"
                             for i in range(0, len(units), 2)) + '"'
    return json.dumps(text, ensure_ascii=how == "ascii")


@st.composite
def render_int(draw: st.DrawFn, number: int) -> str:
    if abs(number) >= 10**15:
        return str(number)
    return draw(st.sampled_from([str(number), f"{number}.0", f"{number}e0", f"{number}E+00"]))


@st.composite
def render_float(draw: st.DrawFn, number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return draw(st.sampled_from(["1e400", "Infinity"])) if number > 0 else "-1e400"
    return draw(st.sampled_from([
        repr(number), f"{number:.17e}", f"{number:.3g}", format(Decimal(number), "f"),
    ]))


# --- readings, valid and not -------------------------------------------------------------

def bounds(kind: Kind, name: str) -> tuple[float, float]:
    low, high = -math.inf, math.inf
    for constraint in READING_MODELS[kind].model_fields[name].metadata:
        low = float(getattr(constraint, "ge", low))
        high = float(getattr(constraint, "le", high))
    return low, high


def in_bounds(kind: Kind, name: str) -> st.SearchStrategy[float | int]:
    low, high = bounds(kind, name)
    return st.one_of(st.floats(low, high), st.integers(math.ceil(low), math.floor(high)),
                     st.sampled_from([low, high, int(low), int(high), -0.0]))


def any_value(kind: Kind, name: str) -> st.SearchStrategy[Any]:
    """In bounds, just out of them, the wrong JSON type, huge, or nested junk."""
    low, high = bounds(kind, name)
    junk = st.recursive(st.none() | st.booleans() | st.text(max_size=4) | st.integers(),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                        max_leaves=6)
    return st.one_of(
        in_bounds(kind, name),
        st.sampled_from([math.nextafter(low, -math.inf), math.nextafter(high, math.inf),
                         int(low) - 1, int(high) + 1, 2**63, 2**64, -(2**64), 10**400,
                         1e308, math.inf, math.nan, True, False, None, "1", "", [], {}]),
        st.floats(), st.integers(), st.sampled_from(RAW_VALUES).map(Raw), junk,
    )


valid_ts = st.one_of(
    st.integers(946_684_800, NOW_S + 300), st.floats(946_684_800.0, NOW_S + 300.0),
    st.datetimes(datetime(2000, 1, 2), datetime(2023, 11, 13)).map(
        lambda moment: moment.isoformat() + st_zone(moment)),
)
any_ts = st.one_of(valid_ts, st.integers(NOW_S + 290, NOW_S + 310),  # around the future limit
                   st.floats(NOW_S + 299.9, NOW_S + 300.1), st.integers(), st.floats(),
                   st.sampled_from([None, True, "", "2023-11-14T22:13:20", "1700000000",
                                    17e8, 1.7e18]),
                   st.sampled_from(RAW_VALUES).map(Raw))
any_seq = st.one_of(st.integers(0, MAX_SEQ), st.integers(),
                    st.sampled_from([MAX_SEQ, MAX_SEQ + 1, -1, 1.0, True, "1", None, 2**64]),
                    st.sampled_from(RAW_VALUES).map(Raw))


def st_zone(moment: datetime) -> str:
    """A zone that varies with the moment (Z or an offset): both spellings get drawn."""
    return ["Z", "+07:00", "-03:30", "z"][moment.second % 4]


def one_of_rule(kind: Kind) -> tuple[str, ...]:
    return {Kind.AIR_QUALITY: POLLUTANTS, Kind.CAMERA: CAMERA_COUNTS}.get(kind, ())


@st.composite
def valid_items(draw: st.DrawFn, kind: Kind) -> dict[str, Any]:
    """A reading the model accepts: required fields, some optional ones, in bounds."""
    model = READING_MODELS[kind]
    names = sorted(NUMERIC_FIELDS[kind])
    chosen = {name for name in names if model.model_fields[name].is_required()}
    if one_of_rule(kind):
        chosen.add(draw(st.sampled_from(one_of_rule(kind))))
    chosen |= set(draw(st.lists(st.sampled_from(names), max_size=5)))
    item: dict[str, Any] = {name: draw(in_bounds(kind, name))
                            for name in draw(st.permutations(sorted(chosen)))}
    if draw(st.booleans()):
        item["ts"] = draw(valid_ts)
    if draw(st.booleans()):
        item["seq"] = draw(st.integers(0, MAX_SEQ))
    return item


@st.composite
def any_items(draw: st.DrawFn, kind: Kind) -> Obj:
    """A reading mangled: a field missing, sent twice, unknown, or of any value."""
    pairs = list(draw(valid_items(kind)).items())
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["drop", "set", "twice", "unknown"]))
        key = draw(st.sampled_from(KEYS[kind]))
        if what == "drop":
            pairs = [pair for pair in pairs if pair[0] != key]
        elif what == "unknown":
            pairs.append((draw(st.sampled_from(NOT_KEYS) | st.text(max_size=6)), 1))
        else:
            value = draw(any_ts if key == "ts" else any_seq if key == "seq"
                         else any_value(kind, key))
            if what == "set":
                pairs = [pair for pair in pairs if pair[0] != key]
            pairs.insert(draw(st.integers(0, len(pairs))), (key, value))
    return Obj(tuple(pairs))


def kinds() -> st.SearchStrategy[Kind]:
    return st.sampled_from(list(Kind))


@st.composite
def payloads(draw: st.DrawFn, kind: Kind) -> bytes:
    """One reading or a batch, valid or not, as JSON text written token by token."""
    item = valid_items(kind) | any_items(kind)
    document = draw(st.one_of(
        item, item, st.lists(item, min_size=1, max_size=6),
        st.lists(item | st.sampled_from(RAW_VALUES).map(Raw), max_size=6),
    ))
    text = draw(render(document))
    return (draw(WHITESPACE) + text + draw(WHITESPACE)).encode()


# --- the reference, and the property ---------------------------------------------------

def reference(kind: Kind, payload: bytes) -> list[Reading] | None:
    """What the decoder's reference path stores, when it stores every reading and counts
    no unknown field; None otherwise."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    items = [document] if isinstance(document, dict) else document
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        return None
    readings = []
    for item in items:
        if not isinstance(item, dict):
            return None
        try:
            model = validate_reading(kind, item)
        except ValidationError:
            return None
        reading = to_reading(model, kind, DEVICE, NOW_NS)
        if model.model_extra or reading.ts_ns > LATEST_NS:
            return None
        readings.append(reading)
    return readings


def fast(kind: Kind, payload: bytes) -> list[Reading] | None:
    return fast_readings(kind, DEVICE, payload, NOW_NS, max_items=MAX_ITEMS, latest_ns=LATEST_NS)


def exactly(readings: list[Reading] | None) -> object:
    """Readings as the line protocol sees them: `==` takes -0.0 for 0.0, 1 for 1.0, and
    ignores the order of a dict."""
    if readings is None:
        return None
    return [(r.kind, r.device_id, type(r.ts_ns), r.ts_ns, type(r.seq), r.seq,
             [(name, type(value), repr(value)) for name, value in r.values.items()])
            for r in readings]


def has_duplicate_keys(payload: bytes) -> bool:
    def check(pairs: list[tuple[str, object]]) -> dict[str, object]:
        if len({key for key, _ in pairs}) < len(pairs):
            raise KeyError("duplicate")
        return dict(pairs)
    try:
        json.loads(payload, object_pairs_hook=check)
    except KeyError:
        return True
    except ValueError:
        return False
    return False


def check_same(kind: Kind, payload: bytes) -> None:
    """The fast path gives the reference's readings, or None (and then the reference takes
    the message; a valid one only when a key came twice, which the parsers read apart)."""
    expected, got = reference(kind, payload), fast(kind, payload)
    if got is not None:
        assert exactly(got) == exactly(expected)
    elif expected is not None:
        assert has_duplicate_keys(payload), "a valid message took the reference path"


@PROPERTY
@given(kinds().flatmap(lambda kind: st.tuples(st.just(kind), payloads(kind))))
@example((Kind.WATER_LEVEL, b'{"level_cm": -0}'))
@example((Kind.WATER_LEVEL, b'{"level_cm": -0.0, "level_cm": 3}'))
@example((Kind.WATER_LEVEL, b'{"level_cm": "x", "level_cm": 3}'))
@example((Kind.WATER_LEVEL, b'{"level_cm": 3, "seq": 1.0}'))
@example((Kind.WATER_LEVEL, b'{"level_cm": 3, "ts": 18446744073709551616}'))
@example((Kind.WATER_LEVEL, b'{"level_cm": 3, "ts": "\\ud800"}'))
@example((Kind.WATER_LEVEL, b'\xef\xbb\xbf{"level_cm": 3}'))
@example((Kind.TRAFFIC, b'{"\\u0073peed_kmh": 3}'))
@example((Kind.AIR_QUALITY, b'{"temp_c": 30}'))
@example((Kind.CAMERA, b'[{"people": 3}, {"battery_v": 3}]'))
def test_the_fast_path_gives_the_reference_readings_or_leaves_the_message_to_it(
    case: tuple[Kind, bytes],
) -> None:
    check_same(*case)
    # `pytest --hypothesis-show-statistics` shows how often each path was taken.
    event("fast path" if fast(*case) is not None else "reference path")


@PROPERTY
@given(kinds().flatmap(lambda kind: st.tuples(
    st.just(kind), st.lists(valid_items(kind), min_size=1, max_size=5), st.booleans())))
def test_every_valid_message_takes_the_fast_path(
    case: tuple[Kind, list[dict[str, Any]], bool],
) -> None:
    kind, items, single = case
    payload = orjson.dumps(items[0] if single else items)
    expected = reference(kind, payload)
    assert expected is not None
    assert exactly(fast(kind, payload)) == exactly(expected)


@settings(max_examples=40, deadline=None)
@given(kinds().flatmap(lambda kind: st.tuples(st.just(kind), valid_items(kind),
                                              any_items(kind))),
       st.sampled_from([0, 1, 2, 999, 1000, 1001]), st.integers(0, 1000), st.booleans())
def test_a_batch_of_up_to_1000_valid_readings_is_fast_and_one_bad_item_leaves_it_to_the_reference(
    case: tuple[Kind, dict[str, Any], Obj], size: int, at: int, spoil: bool,
) -> None:
    kind, good, bad = case
    items = [orjson.dumps(good).decode()] * size
    if spoil and size:
        items[at % size] = json_text(bad)
    payload = ("[" + ",".join(items) + "]").encode()
    check_same(kind, payload)
    if not spoil and 0 < size <= MAX_ITEMS and reference(kind, payload) is not None:
        assert fast(kind, payload) is not None
    if size == 0 or size > MAX_ITEMS:
        assert fast(kind, payload) is None


def json_text(item: Obj) -> str:
    """An `Obj` in plain spelling (inside a test that draws its own size)."""
    return "{" + ",".join(f"{json.dumps(key)}:{_plain(value)}" for key, value in item.pairs) + "}"


def _plain(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, float) and not math.isfinite(value):
        return "1e400" if value > 0 else "-1e400"  # NaN too: refused all the same
    return json.dumps(value)


# --- examples per kind -------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "payload", "values"), [
    (Kind.WATER_LEVEL, b'{"ts": 1700000000, "seq": 7, "level_cm": 920, "battery_v": 3.7}',
     {"battery_v": 3.7, "level_cm": 920.0}),
    (Kind.AIR_QUALITY, b'{"ts": "2023-11-14T22:13:20Z", "pm25": 35.5, "co": 800, "rh_pct": 70}',
     {"pm25": 35.5, "co": 800.0, "rh_pct": 70.0}),
    (Kind.TRAFFIC, b'{"ts": 1700000000.25, "speed_kmh": 42.5, "volume_vph": 1800}',
     {"speed_kmh": 42.5, "volume_vph": 1800.0}),
    (Kind.CAMERA, b'{"seq": 0, "water_score": 1, "people": 12}',
     {"water_score": 1.0, "people": 12.0}),
])
def test_a_valid_reading_of_each_kind_comes_out_as_the_reference_gives_it(
    kind: Kind, payload: bytes, values: dict[str, float],
) -> None:
    [reading] = fast(kind, payload) or []
    assert reading.values == values and all(type(v) is float for v in reading.values.values())
    assert exactly([reading]) == exactly(reference(kind, payload))


@pytest.mark.parametrize(("kind", "payload"), [
    (Kind.WATER_LEVEL, b'{"level_cm": 1201}'),  # out of bounds
    (Kind.WATER_LEVEL, b'{"level_cm": null}'),  # null is not a number
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "battery_v": null}'),  # nor for an optional field
    (Kind.WATER_LEVEL, b'{"level_cm": true}'),
    (Kind.WATER_LEVEL, b'{"level_cm": "1"}'),
    (Kind.WATER_LEVEL, b'{"battery_v": 3}'),  # the required field missing
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "depth": 2}'),  # unknown: the reference counts it
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "ts_ns": 2}'),  # the field's name is not its key
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "ts": 1900000000}'),  # too far ahead
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "ts": "2023-11-14T22:13:20"}'),  # no offset
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "seq": -1}'),
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "seq": 9223372036854775808}'),
    (Kind.WATER_LEVEL, b"[]"),
    (Kind.WATER_LEVEL, b'[{"level_cm": 1}, 3]'),
    (Kind.AIR_QUALITY, b'{"temp_c": 30, "rh_pct": 70}'),  # no pollutant
    (Kind.TRAFFIC, b'{"speed_kmh": 201}'),
    (Kind.CAMERA, b'{"battery_v": 3.7}'),  # no count
    (Kind.CAMERA, b'{"people": 1, "B 1234 XYZ": 1}'),
])
def test_a_message_the_reference_refuses_or_counts_is_left_to_it(
    kind: Kind, payload: bytes,
) -> None:
    assert fast(kind, payload) is None
    check_same(kind, payload)


# --- the Structs are the models' --------------------------------------------------------

def test_every_kind_has_a_fast_path() -> None:
    assert FAST_MODELS.keys() == set(Kind)


@pytest.mark.parametrize("kind", list(Kind))
def test_each_struct_field_has_the_model_fields_bounds_and_default(kind: Kind) -> None:
    struct = FAST_MODELS[kind].struct
    model = READING_MODELS[kind]
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    assert [field.name for field in info.fields] == KEYS_IN_ORDER[kind]
    defaults = {field.name: field.default for field in msgspec.structs.fields(struct)}
    for field in info.fields:
        if field.name == "ts":
            continue
        pydantic_field = model.model_fields[field.name]
        assert field.required == pydantic_field.is_required()
        numbers = msgspec.inspect.FloatType | msgspec.inspect.IntType
        number = field.type
        assert isinstance(number, numbers)  # inspect leaves `UnsetType` out of the type
        assert defaults[field.name] is (msgspec.NODEFAULT if field.required else msgspec.UNSET)
        constraints = pydantic_field.metadata
        assert [number.ge, number.le] == [getattr(c, bound) for bound in ("ge", "le")
                                          for c in constraints if hasattr(c, bound)]


KEYS_IN_ORDER = {kind: [info.alias or name for name, info in model.model_fields.items()]
                 for kind, model in READING_MODELS.items()}


def test_a_model_with_a_rule_the_fast_path_cannot_mirror_gets_no_struct() -> None:
    class Checked(WaterLevelReading):
        @field_validator("level_cm")
        @classmethod
        def _even(cls, value: float) -> float:
            return value

    class Ruled(WaterLevelReading):
        @model_validator(mode="after")
        def _another_rule(self) -> Ruled:
            return self

    assert mirror(Kind.WATER_LEVEL, WaterLevelReading) is not None
    assert mirror(Kind.WATER_LEVEL, Checked) is None
    assert mirror(Kind.WATER_LEVEL, Ruled) is None
