"""Bounded windows: exact up to MAX_SPANS readings, bounded and close above."""

import statistics

from hypothesis import given
from hypothesis import strategies as st

from rules.series import MAX_SPANS, WIDEN, Series

SECOND = 1_000_000_000
T0 = 1_600_682_400 * SECOND  # 2020-09-21T10:00:00Z

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(
    window=st.integers(min_value=1, max_value=MAX_SPANS - 1),
    readings=st.lists(st.tuples(st.integers(min_value=1, max_value=20), values), max_size=300),
)
def test_below_the_bound_every_aggregate_is_that_of_the_readings_inside(
    window: int, readings: list[tuple[int, float]]
) -> None:
    # Readings at least a second apart in a window under MAX_SPANS seconds: never merged.
    series, seen, ts = Series(), list[tuple[int, float]](), T0
    for gap, value in readings:
        ts += gap * SECOND
        series.add(ts, value, window * SECOND)
        seen.append((ts, value))
        cutoff = ts - window * SECOND
        inside = [v for t, v in seen if t > cutoff]
        assert series.full == any(t <= cutoff for t, _ in seen)
        assert series.count == len(inside)
        assert series.mean() == statistics.fmean(inside)
        assert (series.low(), series.high()) == (min(inside), max(inside))


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), values), max_size=400))
def test_spans_stay_bounded_even_when_event_times_go_back(
    readings: list[tuple[int, float]]
) -> None:
    series = Series()
    for ts, value in readings:
        series.add(ts, value, 10**6)
        assert len(series) <= MAX_SPANS


def test_a_hundred_thousand_readings_inside_one_window_keep_at_most_max_spans() -> None:
    series, longest = Series(), 0
    for i in range(100_000):
        series.add(T0 + i * 1_000_000, 1.0, 600 * SECOND)  # 1 kHz, 10-minute window
        longest = max(longest, len(series))
    assert longest <= MAX_SPANS
    assert series.count == 100_000 and series.mean() == 1.0


def test_above_the_bound_a_ramps_aggregates_are_off_by_at_most_the_edge_width() -> None:
    # 10 readings a second (6,000 a window) of a value rising 1 a second: an aggregate may
    # count readings up to window * WIDEN / MAX_SPANS (37.5 s) older than the window.
    window_s, step_s = 600, 0.1
    per_window = round(window_s / step_s)
    tolerance = window_s * WIDEN / MAX_SPANS
    series = Series()
    for i in range(3 * per_window):
        series.add(T0 + i * SECOND // 10, i * step_s, window_s * SECOND)
        if i < per_window:
            assert not series.full
            continue
        assert series.full
        oldest_inside = i - per_window + 1
        exact_mean = (oldest_inside + i) / 2 * step_s
        assert exact_mean - tolerance <= series.mean() <= exact_mean
        assert oldest_inside * step_s - tolerance <= series.low() <= oldest_inside * step_s
        assert series.high() == i * step_s
        assert len(series) <= MAX_SPANS


def test_a_pollutant_without_readings_in_the_window_counts_nothing() -> None:
    series = Series()
    series.add(T0, 40.0, 600 * SECOND)
    series.trim(T0 + 600 * SECOND)
    assert series.full and series.count == 0
