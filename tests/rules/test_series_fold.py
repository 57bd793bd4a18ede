"""`Series.add` keeps exactly the spans it kept before its fold path was made shorter: the
same numbers in the same arrays after every reading, bursts and late readings included."""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from rules.series import (
    _FLOATS,
    _HI,
    _INTS,
    _LO,
    _NEWEST,
    _OLDEST,
    _TOTAL,
    _WIDTH,
    MAX_SPANS,
    WIDEN,
    Series,
)

SECOND = 1_000_000_000
T0 = 1_600_682_400 * SECOND


class Before(Series):
    """The reference: `add` as it was, with `min`, `max` and an index sum per number."""

    __slots__ = ()

    def add(self, ts_ns: int, value: float, window_ns: int) -> None:
        ints, n = self._ints, len(self._ints)
        newest = n - _WIDTH
        if (n >= MAX_SPANS * _WIDTH and ints[newest + _NEWEST] <= ts_ns
                and ts_ns - ints[newest + _OLDEST] < window_ns * WIDEN // MAX_SPANS):
            floats = self._floats
            ints[newest + _NEWEST] = ts_ns
            floats[newest + _TOTAL] += value
            floats[newest + _LO] = min(floats[newest + _LO], value)
            floats[newest + _HI] = max(floats[newest + _HI], value)
        else:
            ints.frombytes(_INTS.pack(ts_ns, ts_ns, self._added))
            self._floats.frombytes(_FLOATS.pack(value, value, value))
        self._added += 1
        self._cutoff_ns = cutoff_ns = ts_ns - window_ns
        if len(ints) >= 2 * _WIDTH and ints[_WIDTH + _NEWEST] <= cutoff_ns:
            self._trim()
        if len(ints) > MAX_SPANS * _WIDTH:
            self._merge(window_ns * WIDEN // MAX_SPANS)


def numbers(series: Series) -> tuple[array[int], bytes, int, int]:
    # The floats as bytes: 0.0 == -0.0, but a low of -0 would print as "-0" in an alert.
    return series._ints, series._floats.tobytes(), series._added, series._cutoff_ns


# Messages as a batched load sends them: a burst of readings a microsecond apart (now and
# then the same time again, or an earlier one), seconds to minutes after the previous one.
steps = st.sampled_from([1_000] * 6 + [0, -SECOND])
between = st.sampled_from([SECOND, 20 * SECOND, 300 * SECOND, -60 * SECOND])
# Few distinct values, zeros of both signs among them: ties decide what `min` keeps.
values = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5]) | st.floats(
    min_value=-1e3, max_value=1e3, allow_nan=False)
messages = st.lists(st.tuples(between, st.lists(st.tuples(steps, values), min_size=1,
                                                max_size=150)), max_size=12)


@given(window_s=st.sampled_from([60, 600, 3600]), drawn=messages)
def test_every_reading_leaves_the_spans_the_reference_leaves(
    window_s: int, drawn: list[tuple[int, list[tuple[int, float]]]],
) -> None:
    before, series, ts = Before(), Series(), T0
    for gap, burst in drawn:
        ts += gap
        for step, value in burst:
            ts += step
            before.add(ts, value, window_s * SECOND)
            series.add(ts, value, window_s * SECOND)
            assert numbers(series) == numbers(before)


def test_a_burst_past_max_spans_takes_the_fold_path() -> None:
    # What the property above must reach: a full series folding microsecond readings in.
    series = Series()
    for i in range(3 * MAX_SPANS):
        series.add(T0 + i * 1_000, float(i), 600 * SECOND)
    assert len(series) == MAX_SPANS
    assert series.count == 3 * MAX_SPANS
    assert (series.low(), series.high()) == (0.0, 3 * MAX_SPANS - 1.0)
