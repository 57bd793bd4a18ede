"""InfluxDB line protocol, byte for byte as influxdb-client's `Point` writes it, only faster."""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Mapping

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


@functools.lru_cache(maxsize=_LAYOUT_CACHE_SIZE)
def _field_layout(names: tuple[str, ...], with_seq: bool) -> tuple[tuple[str | None, str], ...]:
    """Return (name, escaped `name=`) per field in Point's order; name None marks `seq`.

    Escaping and sorting cost more than the rest of a line together, and the same few
    field-name sets come back for every reading, so they are done once per set.
    """
    ordered = sorted(set(names) | {SEQ_FIELD}) if with_seq else sorted(names)
    return tuple(
        (None if with_seq and name == SEQ_FIELD else name, name.translate(_ESCAPE_KEY) + "=")
        for name in ordered
    )


def encode_with_key(key: str, values: Mapping[str, float], seq: int | None, ts_ns: int) -> str:
    """Return one line (no newline) for a point whose `series_key` is `key`.

    Values are written as floats (an int is converted, so a field never changes type in
    InfluxDB); NaN and infinities are left out as Point does, and a `seq` overrides a value
    of the same name. A point left with no field is an empty string, as with Point.
    """
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
    series and one timestamp, so InfluxDB would keep only the last; cameras often stamp
    whole seconds or milliseconds. A time with nothing below the millisecond gets an offset
    below it, from the event id (CRC-32, the same in every process): distinct events stay
    distinct, and a redelivered event is the same point again (idempotent).
    """
    if ts_ns % _NS_PER_MS:
        return ts_ns
    return ts_ns + zlib.crc32(event_id.encode()) % _NS_PER_MS
