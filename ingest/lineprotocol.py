"""InfluxDB line protocol, byte for byte as influxdb-client's `Point` writes it, only faster."""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, cast

import orjson

# The escape tables of influxdb_client/client/write/point.py. Point is the reference: the
# property test compares our lines with its, so a change there fails a test, not a write.
# Backslashes are not escaped in names, exactly as Point does.
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)

# str.translate costs several times a regex search, and most names need no escape at all.
_NEEDS_ESCAPE_MEASUREMENT = re.compile("[, \n\t\r]")
_NEEDS_ESCAPE_KEY = re.compile("[,= \n\t\r]")

SEQ_FIELD = "seq"  # the integer field carrying a reading's sequence number (SPEC 1)

# Distinct field-name sets seen by one process: one per kind and firmware variant, so a few
# dozen in practice; the bound only keeps a buggy caller from growing the memo forever.
_LAYOUT_CACHE_SIZE = 1024


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """Return the escaped `measurement,tag=value,...` prefix of a line (tags sorted by key).

    Tags of a device are fixed, so callers compute this once per device and pass it to
    `encode_with_key`. Like Point, tags whose key or value is empty are left out, and a
    value ending in a backslash gets a trailing space so it cannot escape the separator.

    Raises ValueError for a measurement InfluxDB would not read as one: empty, or starting
    with `#` (a comment line; Point only warns, and the points would be lost silently).
    """
    name = _escape(measurement, _NEEDS_ESCAPE_MEASUREMENT, _ESCAPE_MEASUREMENT)
    if not name or name.startswith("#"):
        raise ValueError(f"measurement {measurement!r} cannot be written as line protocol")
    parts = [name]
    for key, value in sorted(tags.items()):
        escaped_key = _escape(key, _NEEDS_ESCAPE_KEY, _ESCAPE_KEY)
        escaped_value = _escape(value, _NEEDS_ESCAPE_KEY, _ESCAPE_KEY)
        if escaped_value.endswith("\\"):
            escaped_value += " "
        if escaped_key and escaped_value:
            parts.append(f"{escaped_key}={escaped_value}")
    return ",".join(parts)


def _escape(text: str, needs_escape: re.Pattern[str], table: dict[int, str]) -> str:
    return text.translate(table) if needs_escape.search(text) else text


class Encodable(Protocol):
    """What `encode_many` reads of a point (a `devices.readings.Reading` is one)."""

    @property
    def values(self) -> Mapping[str, float]: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def ts_ns(self) -> int: ...


# A point's line, or None when its values' names or its seq are not the encoder's layout.
_LineEncoder = Callable[[str, Mapping[str, float], "int | None", int], "str | None"]


def encode_with_key(key: str, values: Mapping[str, float], seq: int | None, ts_ns: int) -> str:
    """Return one line (no newline) for a point whose `series_key` is `key`.

    Values are written as floats (an int is converted, so a field never changes type in
    InfluxDB); NaN and infinities are left out as Point does, and a `seq` overrides a value
    of the same name. A point left with no field is an empty string, as with Point.
    """
    line = _line_encoder(tuple(values), seq is not None)(key, values, seq, ts_ns)
    # Never None: the encoder is the one of this point's layout.
    return line if line is not None else _encode_reference(key, values, seq, ts_ns)


def encode_many(key: str, points: Iterable[Encodable]) -> list[str]:
    """Return the line of each point, as `encode_with_key` would, all with one series key.

    Consecutive points of a message mostly have the same field names, so each point is
    first tried with the previous point's encoder, which checks the layout itself (a size
    and the lookups it needs anyway) for less than building and hashing a names tuple.
    """
    lines: list[str] = []
    append = lines.append
    encode: _LineEncoder = _no_layout
    for point in points:
        values, seq, ts_ns = point.values, point.seq, point.ts_ns
        line = encode(key, values, seq, ts_ns)
        if line is None:
            encode = _line_encoder(tuple(values), seq is not None)
            line = encode(key, values, seq, ts_ns)
            if line is None:  # cannot happen: the encoder of this very layout
                line = _encode_reference(key, values, seq, ts_ns)
        append(line)
    return lines


def _no_layout(key: str, values: Mapping[str, float], seq: int | None, ts_ns: int) -> None:
    return None


# A name `encode_plain` may write as orjson does: nothing to escape in line protocol or JSON.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# In orjson's output, a value that is not a number: true, false, null, a string, an array or
# an object (names are plain, so `":` only ever opens a value).
_NOT_A_NUMBER = re.compile(r'":[^-0-9]')


def plain_names(names: Iterable[str]) -> bool:
    """Whether `encode_plain` may take points with these value names (a kind's fields)."""
    return all(_PLAIN_NAME.fullmatch(name) and name != SEQ_FIELD for name in names)


def encode_plain(key: str, points: Sequence[Encodable]) -> list[str]:
    """The lines of `points`, as points equal to `encode_many`'s, not byte for byte.

    For points whose value names are `plain_names` (the caller knows: a kind's model
    fields). A batch's values become text in one C call (orjson), not one `repr` per
    value: for batches of 100 readings of 1 to 3 fields, 440 to 610 ns a reading against
    `encode_many`'s 770 to 1,430 (timeit, 2 cores shared, at the commit that added it).
    The numbers are orjson's shortest round-trip text, as `repr`'s but for the form:
    `700.0` for 700, `1e-7` for 1e-07, ints as they are; InfluxDB parses each to the same
    float (tests/ingest/test_lineprotocol_plain.py holds the two encoders to the same
    points, and tests/integration/test_lineprotocol_influx.py the server). Fields keep
    the values' order, `seq` last; InfluxDB sorts them. A batch with anything else (a
    value that is not a finite number: NaN, a bool, a huge int; or a point with no field)
    is `encode_many`'s.
    """
    return encode_plain_keyed([key] * len(points), points)


def encode_plain_keyed(keys: Sequence[str], points: Sequence[Encodable]) -> list[str]:
    """`encode_plain` for points of several series, `keys[i]` the series key of
    `points[i]`: many devices' single readings take one orjson call, not one each (that
    call and its text's handling were a seventh of a single-reading drain's event loop).
    A batch orjson cannot write wholly is `encode_many`'s, point by point."""
    try:
        text = orjson.dumps([point.values for point in points]).decode()
    except TypeError:  # an int beyond 64 bits, a float subclass, a name not a str
        text = None
    if text is None or _NOT_A_NUMBER.search(text) or "{}" in text:  # NaN, infinities: null
        return [line for key, point in zip(keys, points, strict=True)
                for line in encode_many(key, (point,))]
    fields = text[2:-2].replace('"', "").replace(":", "=").split("},{")
    return [f"{key} {part} {point.ts_ns}" if point.seq is None
            else f"{key} {part},{SEQ_FIELD}={point.seq}i {point.ts_ns}"
            for key, part, point in zip(keys, fields, points, strict=True)]


@functools.lru_cache(maxsize=_LAYOUT_CACHE_SIZE)
def _line_encoder(names: tuple[str, ...], with_seq: bool) -> _LineEncoder:
    """Return the encoder of points with exactly these value names, with or without seq.

    Its fast path, taken when every value is a finite float (the decoder makes them so),
    is one f-string with the escaped names and Point's order built in. Through
    `encode_many`, a reading with seq and 1, 2 or 3 float fields took 600, 790 and 1,070
    ns against the reference loop's 1,100, 1,330 and 1,660 (timeit, 100 readings a call,
    CPython 3.11, 2 cores shared). A point with an int, a bool or a non-finite value goes
    to `_encode_reference`, so on that path the output is the reference's by construction.

    The function is generated, as dataclasses generates `__init__`: no Python loop can
    build a string of a variable number of parts as cheaply. Only indexes and fixed text
    enter the source; names and their escaped forms are passed in as objects, so no
    device input is ever compiled.
    """
    objects: dict[str, object] = {"_reference": _encode_reference, "_repr": repr,
                                 "_zero": ".0"}
    exec(_encoder_source(names, with_seq, objects), objects)  # no input is compiled: above
    return cast(_LineEncoder, objects["encode"])


def _encoder_source(names: tuple[str, ...], with_seq: bool, objects: dict[str, object]) -> str:
    """The source of `_line_encoder`'s function; the names it refers to go in `objects`."""
    ordered = sorted(set(names) | {SEQ_FIELD}) if with_seq else sorted(names)
    lookups, checks, finite, parts = [], [], [], []
    for index, name in enumerate(names):
        objects[f"_n{index}"] = name
        lookups.append(f"v{index} = values[_n{index}]")
    position = {name: index for index, name in enumerate(names)}
    for order, name in enumerate(ordered):
        objects[f"_p{order}"] = ("," if order else "") + name.translate(_ESCAPE_KEY) + "="
        if with_seq and name == SEQ_FIELD:  # a value named seq is overridden, still looked up
            parts.append(f"{{_p{order}}}{{seq}}i")
            continue
        value = f"v{position[name]}"
        checks.append(f"type({value}) is float")
        finite.append(f"({value} - {value})")  # 0.0 for a finite float, else NaN
        parts.append(f"{{_p{order}}}{{_repr({value}).removesuffix(_zero)}}")
    fast = " and ".join([*checks, f"{' + '.join(finite)} == 0.0"]) if finite else "True"
    line = f"{{key}} {''.join(parts)} {{ts_ns}}" if parts else ""
    return "\n".join([
        "def encode(key, values, seq, ts_ns):",
        # The same size and every name found: exactly this layout's names, in any order.
        f"    if len(values) != {len(names)} or seq is {'' if with_seq else 'not '}None:",
        "        return None",
        "    try:",
        *(f"        {lookup}" for lookup in lookups),
        "        pass",
        "    except KeyError:",
        "        return None",
        f"    if {fast}:",
        f"        return f{line!r}",
        "    return _reference(key, values, seq, ts_ns)",
    ])


@functools.lru_cache(maxsize=_LAYOUT_CACHE_SIZE)
def _field_layout(names: tuple[str, ...], with_seq: bool) -> tuple[tuple[str | None, str], ...]:
    """Return (name, escaped `name=`) per field in Point's order; name None marks `seq`."""
    ordered = sorted(set(names) | {SEQ_FIELD}) if with_seq else sorted(names)
    return tuple(
        (None if with_seq and name == SEQ_FIELD else name, name.translate(_ESCAPE_KEY) + "=")
        for name in ordered
    )


def _encode_reference(key: str, values: Mapping[str, float], seq: int | None,
                      ts_ns: int) -> str:
    """The line of `encode_with_key`, one field at a time: the generated encoders' slow
    path and the reference the property tests hold them to."""
    fields = []
    for name, prefix in _field_layout(tuple(values), seq is not None):
        if name is None:
            fields.append(f"{prefix}{seq}i")
            continue
        value = values[name]
        if type(value) is not float:
            value = float(value)
        if value - value != 0.0:  # true only for NaN and infinities, cheaper than isfinite
            continue
        # Point trims a trailing ".0": 700.0 is written `700`, 1e+16 and 1e-07 stay as repr.
        fields.append(prefix + repr(value).removesuffix(".0"))
    if not fields:
        return ""
    return f"{key} {','.join(fields)} {ts_ns}"


def encode(
    measurement: str,
    tags: Mapping[str, str],
    values: Mapping[str, float],
    seq: int | None,
    ts_ns: int,
) -> str:
    """Return the line of one point; equal to `Point(...).to_line_protocol()` at ns precision."""
    return encode_with_key(series_key(measurement, tags), values, seq, ts_ns)


# --- cameras' events (measurement `camera_event`, SPEC section 7) ------------------------

# Point's escapes inside a string field value: a quote and a backslash.
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})
_NS_PER_MS = 1_000_000
_NS_PER_US = 1_000


def event_series_key(measurement: str, device_tags: Mapping[str, str], label: str,
                     event_type: str, zone: str | None) -> str:
    """The series key of a detection: the device's tags plus `label`, `type` and `zone`.

    The event's own tags win over a registry label of the same name (the catalog should
    not use these names for cameras).
    """
    tags = {**device_tags, "label": label, "type": event_type}
    if zone is not None:
        tags["zone"] = zone
    return series_key(measurement, tags)


def encode_event(key: str, event_id: str, score: float, plate: str | None, ts_ns: int) -> str:
    """One detection's line: string fields `event_id` and `plate` (a listed plate only;
    the caller decides), float `score`, at `event_time_ns`. Equal to Point's line."""
    fields = f'event_id="{event_id.translate(_ESCAPE_STRING)}"'
    if plate is not None:
        fields += f',plate="{plate.translate(_ESCAPE_STRING)}"'
    value = score if type(score) is float else float(score)
    fields += ",score=" + repr(value).removesuffix(".0")
    return f"{key} {fields} {event_time_ns(ts_ns, event_id)}"


def event_time_ns(ts_ns: int, event_id: str) -> int:
    """The time a detection is stored at: its `ts`, made distinct per event.

    Two events of one camera with the same label, zone and type at the same time are one
    series and one timestamp, so InfluxDB would keep only the last: cameras often stamp
    whole seconds or milliseconds, two objects of one Frigate frame share its time, and a
    batch of events without `ts` shares its time of receipt. The time gets an offset from
    the event id (CRC-32, the same in every process) in the digits below what it carries:
    below the millisecond for a whole millisecond, else in the nanoseconds, which `ts`
    never carries (`parse_ts` keeps microseconds). Distinct events stay distinct (one
    chance in a thousand, or a million, of two colliding), and a redelivered event is the
    same point again (idempotent).
    """
    crc = zlib.crc32(event_id.encode())
    if ts_ns % _NS_PER_MS:
        return ts_ns - ts_ns % _NS_PER_US + crc % _NS_PER_US
    return ts_ns + crc % _NS_PER_MS
