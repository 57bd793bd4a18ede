"""Times on the HTTP edge: RFC 3339 in, RFC 3339 out (UTC for operators, WIB for GeoReport)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from siaga_core.errors import InputError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S: Final = 1_000_000_000
# The years a time may name: nanoseconds since 1970 in a signed 64-bit integer (the stores'
# BIGINT) reach 1677 to 2262; Siaga's data begins in 1970 and needs no far future.
YEARS: Final = (1970, 2200)
# GeoReport shows times with the city's offset, as its residents read them.
WIB: Final = timezone(timedelta(hours=7), "WIB")


def parse_time(text: str, name: str) -> int:
    """RFC 3339 with an offset (`Z` or `+07:00`) -> Unix ns; an InputError (400) naming
    `name` otherwise (a time without an offset is ambiguous, so it is refused)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in text.upper():
        raise InputError(f"{name} must be RFC 3339 with an offset, "
                         f"e.g. 2024-01-31T08:00:00+07:00, got {text!r}")
    if not YEARS[0] <= moment.year <= YEARS[1]:
        raise InputError(f"{name} must be a time from {YEARS[0]} to {YEARS[1]}, got {text!r}")
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def format_wib(ns: int) -> str:
    """GeoReport's datetime: ISO 8601 with the offset, to the second
    (`2020-01-01T06:00:00+07:00`)."""
    return datetime.fromtimestamp(ns // _NS_PER_S, WIB).isoformat()
