"""Parsing a reading's `ts`: an RFC 3339 string with offset, or Unix epoch seconds, to ns.

Precision: both forms are kept to the microsecond. Strings go through the C parser
`datetime.fromisoformat` (about 1 us per call, against about 2 us for a regex that keeps
nanoseconds); digits past the sixth are truncated. Floats near 1.7e9 s resolve only about
0.24 us anyway, so they are rounded to the microsecond. Sensor clocks are not better than
that, and a reading every microsecond per device is far beyond any device Siaga serves.

Strings must have the RFC 3339 layout (`YYYY-MM-DDTHH:MM:SS[.frac]` and `Z` or `+HH:MM`).
Leniencies inherited from the parser: a decimal comma, and `-00:00` read as UTC. Leap
seconds (`:60`) are refused.

Every error is a `ValueError` whose message starts with `ts: ` and says what is expected.
"""

import math
import re
from datetime import UTC, datetime
from typing import Final

NS_PER_S: Final = 1_000_000_000

# The range a device clock can plausibly be in. Below it is a clock that was never set
# (many boards boot at 1970-01-01); above it is almost always a unit mistake (ms or us).
MIN_EPOCH_S: Final = 946_684_800  # 2000-01-01T00:00:00Z
MAX_EPOCH_S: Final = 4_102_444_800  # 2100-01-01T00:00:00Z, exclusive
MIN_NS: Final = MIN_EPOCH_S * NS_PER_S
MAX_NS: Final = MAX_EPOCH_S * NS_PER_S

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Characters at offsets 4, 7, 10, 13, 16 of an RFC 3339 date-time. Checking them (one
# slice) keeps out the other ISO 8601 forms fromisoformat would take, such as week dates.
_SEPARATORS: Final = frozenset({"--T::", "--t::", "-- ::"})
# A local date-time without offset: the most common mistake, so it gets its own message.
_LOCAL: Final = re.compile(r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")
_EXAMPLE: Final = "2024-01-31T08:00:00+07:00"
# Every RFC 3339 zone: Z, or +HH:MM / -HH:MM up to 23:59. Checked before `fromisoformat`,
# which in Python 3.11 is laxer after the seconds: it skips one stray character there
# (`20x+07:00`), anything after a sixth fraction digit (`20.123456abcZ`), an empty fraction
# (`20.Z`), and takes offset minutes up to 99 (`+07:60`).
_ZONES: Final = frozenset(
    ["Z", "z"] + [f"{sign}{h:02d}:{m:02d}" for sign in "+-" for h in range(24) for m in range(60)]
)
# Units a too-large epoch number is probably in: (factor to seconds, name, advice).
_UNIT_MISTAKES: Final = (
    (1e3, "milliseconds", "divide by 1000"),
    (1e6, "microseconds", "divide by 1000000"),
    (1e9, "nanoseconds", "divide by 1000000000"),
)


def parse_ts(value: object) -> int:
    """Return `value` (RFC 3339 string with offset, or epoch seconds) as Unix nanoseconds."""
    # The common case first, by exact type: bool is an int subclass and must not pass here.
    if type(value) is int and MIN_EPOCH_S <= value < MAX_EPOCH_S:
        return value * NS_PER_S
    # NaN and infinities fail the range test and take the checked path below.
    if type(value) is float and MIN_EPOCH_S <= value < MAX_EPOCH_S:
        return round(value * 1_000_000) * 1000
    if isinstance(value, str):
        return _parse_rfc3339(value)
    # `true` is never a time.
    if isinstance(value, int) and not isinstance(value, bool):
        _check_epoch_range(value)
        return value * NS_PER_S
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"ts: must be a finite number (got {value})")
        _check_epoch_range(value)
        return round(value * 1_000_000) * 1000
    raise ValueError(
        "ts: must be an RFC 3339 string with offset or epoch seconds as a number, "
        f"not {_json_type(value)}"
    )


def _parse_rfc3339(text: str) -> int:
    # Most strings end in a zone right after the seconds: one set lookup checks that.
    zone_ok = text[19:] in _ZONES or _fraction_then_zone(text)
    if text[4:17:3] not in _SEPARATORS or not zone_ok:
        raise ValueError(_explain_bad_string(text))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = _parse_upper_case(text)
    delta = parsed - _EPOCH
    ns = (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000
    if not MIN_NS <= ns < MAX_NS:
        raise ValueError(f"ts: {_quote(text)} is not between 2000 and 2100 (clock not set?)")
    return ns


def _parse_upper_case(text: str) -> datetime:
    # RFC 3339 allows "t" and "z"; Python 3.11's parser takes capitals only. Off the hot path.
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError as exc:
        if str(exc).startswith("Invalid isoformat"):  # the layout, not a field's range
            raise ValueError(_explain_bad_string(text)) from None
        raise ValueError(f"ts: {exc} in {_quote(text)}") from None


def _fraction_then_zone(text: str) -> bool:
    """`.digits` (or `,digits`) after the seconds, then a zone, and nothing else."""
    zone_at = len(text) - 1 if text[-1:] in ("Z", "z") else len(text) - 6
    fraction = text[19:zone_at]
    return (
        len(fraction) > 1
        and fraction[0] in ".,"
        and fraction[1:].isdigit()
        and fraction.isascii()
        and text[zone_at:] in _ZONES
    )


def _explain_bad_string(text: str) -> str:
    if _LOCAL.fullmatch(text):
        return "ts: RFC 3339 timestamp needs an offset such as Z or +07:00"
    try:
        float(text)
    except ValueError:
        return f"ts: not an RFC 3339 timestamp like {_EXAMPLE} (got {_quote(text)})"
    return "ts: epoch seconds must be a JSON number, not a string"


def _check_epoch_range(seconds: float) -> None:
    if MIN_EPOCH_S <= seconds < MAX_EPOCH_S:
        return
    # str() of an int over 4300 digits raises, and a long number makes a long reason.
    shown = str(seconds) if abs(seconds) < 1e21 else "a number this large"
    if seconds < MIN_EPOCH_S:
        raise ValueError(f"ts: {shown} is before 2000-01-01 (device clock not set?)")
    for factor, unit, advice in _UNIT_MISTAKES:
        # The comparison first: a huge int divided by a float would overflow.
        if seconds < MAX_EPOCH_S * factor and seconds / factor >= MIN_EPOCH_S:
            raise ValueError(
                f"ts: {shown} looks like {unit} since the epoch; send seconds ({advice})"
            )
    raise ValueError(f"ts: {shown} is after 2100-01-01; send epoch seconds")


def _quote(text: str) -> str:
    # Payloads are untrusted: keep echoed input short so a reason stays one line.
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
