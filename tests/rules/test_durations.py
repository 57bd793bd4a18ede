"""Durations as configuration and messages write them: exact, including below one second."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siaga_core.durations import format_duration, parse_duration


@pytest.mark.parametrize(("value", "text"), [
    (timedelta(0), "0s"),
    (timedelta(milliseconds=500), "500ms"),  # the max_age once reported as "0s"
    (timedelta(microseconds=500), "0.5ms"),
    (timedelta(microseconds=1), "0.001ms"),
    (timedelta(seconds=1, milliseconds=250), "1s250ms"),
    (timedelta(milliseconds=1, microseconds=250), "1.25ms"),
    (timedelta(seconds=90), "1m30s"),
    (timedelta(hours=1, minutes=30), "1h30m"),
    (timedelta(days=7), "7d"),
    (timedelta(days=1, seconds=1, microseconds=100_000), "1d1s100ms"),
    (timedelta(milliseconds=-500), "-500ms"),
])
def test_a_duration_is_written_exactly(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
def test_what_is_written_parses_back_to_the_same_duration(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value
