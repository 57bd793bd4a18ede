"""Durations in configuration files, written as operators know them: 90s, 10m, 1h30m, 7d."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: object) -> timedelta:
    """Parse `1h30m`-style text (Prometheus style) or a number of seconds."""
    if isinstance(text, bool):
        raise ValueError("a duration such as 30s, 10m, 1h30m or 7d")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("must not be negative")
        return timedelta(seconds=text)
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a duration such as 30s, 10m, 1h30m or 7d")
    compact = text.strip().replace(" ", "")
    position, seconds = 0, 0.0
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS_S[match.group(2)]
        position = match.end()
    if position != len(compact) or position == 0:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30s, 10m, 1h30m or 7d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest `1h30m` form of a duration, exact to the microsecond: `500ms`, `1s250ms`.

    Sub-second parts are written in milliseconds (fractional below one: `0.5ms`), never
    dropped: a max_age of 500 ms reported as "0s" sends a reader looking for a bug that is
    not there. The text parses back to the same duration with `parse_duration`.
    """
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    if micros == 0:
        return "0s"
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    seconds, micros = divmod(micros, 1_000_000)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        whole, fraction = divmod(micros, 1000)
        parts.append(f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "ms" if fraction
                     else f"{whole}ms")
    return sign + "".join(parts)


def to_ns(value: timedelta) -> int:
    return int(value.total_seconds() * 1_000_000_000)


# A pydantic field type: accepts "10m", "1h30m", 600 (seconds); serializes back to "10m".
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
