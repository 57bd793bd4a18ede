"""The hot path's latency histogram: Prometheus' bucket rule (`value <= le`), cumulative
snapshots, ages from start times, and merging."""

from __future__ import annotations

import math

import pytest

from siaga_core.histogram import LATENCY_BOUNDS, Histogram

S = 1_000_000_000


def test_a_value_equal_to_a_bound_counts_in_that_bound_s_bucket() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 1.5):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.buckets == ((0.1, 1), (1.0, 3), (math.inf, 4))
    assert snapshot.count == 4
    assert snapshot.total == pytest.approx(3.1)


def test_ages_are_measured_from_each_start_and_a_start_in_the_future_counts_as_zero() -> None:
    histogram = Histogram((0.01, 1.0, 10.0))
    histogram.observe_ages(100 * S, [99 * S, 95 * S, 100 * S + S // 2])
    assert histogram.snapshot().buckets == ((0.01, 1), (1.0, 2), (10.0, 3), (math.inf, 3))
    assert histogram.total == pytest.approx(6.0)


def test_an_empty_histogram_has_every_bucket_at_zero() -> None:
    snapshot = Histogram().snapshot()
    assert [bound for bound, _ in snapshot.buckets] == [*LATENCY_BOUNDS, math.inf]
    assert snapshot.count == 0 and snapshot.total == 0


def test_merged_histograms_add_their_counts_and_sums() -> None:
    first, second = Histogram((1.0,)), Histogram((1.0,))
    first.observe(0.5)
    second.observe(2.0)
    second.observe(0.2)
    first.merge(second)
    assert first.snapshot().buckets == ((1.0, 2), (math.inf, 3))
    assert first.total == pytest.approx(2.7)


def test_bounds_must_increase_and_merges_must_share_them() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 0.5))
    with pytest.raises(ValueError, match="same bounds"):
        Histogram((1.0,)).merge(Histogram((2.0,)))
