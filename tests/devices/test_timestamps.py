"""parse_ts: RFC 3339 with offset or epoch seconds to Unix nanoseconds, and its reasons."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.timestamps import parse_ts

JAN_31_01H_UTC_NS = 1_706_662_800 * 10**9  # 2024-01-31T01:00:00Z


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-31T01:00:00Z",
        "2024-01-31T08:00:00+07:00",
        "2024-01-30T20:00:00-05:00",
        "2024-01-31t01:00:00z",
        "2024-01-31 01:00:00Z",
        "2024-01-31T01:00:00.000Z",
    ],
)
def test_rfc3339_strings_with_any_offset_give_the_same_instant(text: str) -> None:
    assert parse_ts(text) == JAN_31_01H_UTC_NS


def test_fractional_seconds_are_kept_to_the_microsecond() -> None:
    assert parse_ts("2024-01-31T01:00:00.123456Z") == JAN_31_01H_UTC_NS + 123_456_000


def test_fractional_digits_past_the_microsecond_are_truncated() -> None:
    assert parse_ts("2024-01-31T01:00:00.123456789Z") == JAN_31_01H_UTC_NS + 123_456_000


def test_integer_epoch_seconds_are_exact() -> None:
    assert parse_ts(1_706_662_800) == JAN_31_01H_UTC_NS


def test_float_epoch_seconds_are_rounded_to_the_microsecond() -> None:
    assert parse_ts(1_706_662_800.123) == JAN_31_01H_UTC_NS + 123_000_000


@given(
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_any_isoformat_with_offset_parses_back_to_its_instant(
    moment: datetime, offset_min: int
) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    expected = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    assert parse_ts(aware.isoformat()) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2024-01-31T08:00:00", "needs an offset such as Z or +07:00"),
        ("2024-01-31", "needs an offset"),
        ("2024-01-31T08:00:00+0700", "not an RFC 3339 timestamp"),
        ("2024-W05-3T08:00:00Z", "not an RFC 3339 timestamp"),
        ("yesterday", "not an RFC 3339 timestamp"),
        ("", "not an RFC 3339 timestamp"),
        ("1706662800", "must be a JSON number, not a string"),
        ("2024-02-30T00:00:00Z", "day is out of range"),
        ("2024-01-31T25:00:00Z", "hour must be in 0..23"),
        ("1970-01-01T00:00:00Z", "not between 2000 and 2100"),
        (1_706_662_800_123, "looks like milliseconds"),
        (1_706_662_800_123.5, "looks like milliseconds"),
        (1_706_662_800_123_456, "looks like microseconds"),
        (1_706_662_800_123_456_789, "looks like nanoseconds"),
        (10**30, "after 2100"),
        (0, "before 2000-01-01"),
        (-1.5, "before 2000-01-01"),
        (True, "not bool"),
        (None, "not null"),
        ([1_706_662_800], "not array"),
        ({"s": 1}, "not object"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
    ],
)
def test_bad_timestamps_raise_value_error_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^ts: ") as caught:
        parse_ts(value)
    assert reason in str(caught.value)


def test_a_number_too_long_to_print_is_still_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="after 2100"):
        parse_ts(10**5000)


def test_long_bad_strings_are_shortened_in_the_reason() -> None:
    with pytest.raises(ValueError) as caught:
        parse_ts("x" * 10_000)
    assert len(str(caught.value)) < 120
