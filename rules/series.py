"""A field's readings over a sliding event-time window, kept in at most MAX_SPANS spans.

A span sums neighbouring readings: (newest ts, oldest ts, readings before it, total, lo,
hi); a single reading is a span of one, and the readings between two spans a subtraction.
The window is (ts - window, ts] of the newest reading, and, as `trim` says, the newest span
before it is kept to show the window is full. Up to MAX_SPANS spans (MAX_SPANS - 1
readings inside a full window) nothing is merged and the mean, min and max are exact:
`fmean`, `min` and `max` of the readings inside.

Above that (a fast or misconfigured device, a load test), neighbouring spans are merged,
two at a time, and a reading close enough to the newest span joins it, but no span grows
as long as window * WIDEN / MAX_SPANS (window / 16) of event time. So memory and the work
per reading stay bounded whatever the rate; a span reaching across the window's old edge
counts as inside, so the edge is approximate to window / 16 (the readings counted are
less than that much older than the window). Counts, min and max stay those of real
readings, and "window full" stays exact.

The spans live in two flat arrays of machine numbers, three per span, not in a deque of
tuples: a full window costs about 3 kB instead of 10 kB, and a city has tens of
thousands of them (every device, every window rule, every ISPU pollutant).
"""

from __future__ import annotations

import math
from array import array
from struct import Struct
from typing import Final

MAX_SPANS: Final = 64  # per window: 1-minute readings over an hour stay exact; ~3 kB at most
# A merged span is narrower than window * WIDEN / MAX_SPANS. At 4, a pass over 65 spans
# (all within window + window/16) merges at least 15 pairs, so merging costs O(1) a reading;
# at 2 a pass could merge none.
WIDEN: Final = 4
# Per span: in `_ints` (newest ts_ns, oldest ts_ns, readings added before its oldest), in
# `_floats` (total, lo, hi); the oldest span first. Counting "before" makes a count O(1)
# after any trim. ts_ns fits an int64 until 2262, and floats are stored as they came.
_NEWEST, _OLDEST, _BEFORE = 0, 1, 2
_TOTAL, _LO, _HI = 0, 1, 2
_WIDTH: Final = 3  # numbers per span in each array
_FULL: Final = MAX_SPANS * _WIDTH  # numbers in each array when MAX_SPANS spans are kept
# One span's numbers in the arrays' own layout: appending packed bytes is the cheapest way
# to grow an array by three items (about half the time of `extend` with a tuple).
_INTS: Final = Struct(f"={_WIDTH}q")
_FLOATS: Final = Struct(f"={_WIDTH}d")


class Series:
    """One field of one device over a window; the caller passes the window with each reading.

    Event times must not decrease (the engine skips late readings); if they do, the spans
    stay bounded but the window is no longer meaningful.
    """

    __slots__ = ("_added", "_cutoff_ns", "_floats", "_ints")

    def __init__(self) -> None:
        self._ints = array("q")
        self._floats = array("d")
        self._cutoff_ns = 0
        self._added = 0  # readings ever added

    def __len__(self) -> int:
        """The spans kept (at most MAX_SPANS), not the readings."""
        return len(self._ints) // _WIDTH

    def add(self, ts_ns: int, value: float, window_ns: int) -> None:
        """Take a reading; the window becomes (ts_ns - window_ns, ts_ns]."""
        ints = self._ints
        n = len(ints)
        newest = n - _WIDTH
        if n >= _FULL and ints[newest + _NEWEST] <= ts_ns and (
                ts_ns - ints[newest + _OLDEST] < window_ns * WIDEN // MAX_SPANS):
            # Full, and the reading fits the newest span: fold it in. A burst (a batch of
            # readings microseconds apart) then costs no merge pass per reading. The most
            # frequent path of a batched load, so in as few steps as it takes: `min` and
            # `max` of two numbers are these comparisons.
            floats = self._floats
            ints[newest + _NEWEST] = ts_ns
            floats[newest + _TOTAL] += value
            if value < floats[newest + _LO]:
                floats[newest + _LO] = value
            if value > floats[newest + _HI]:
                floats[newest + _HI] = value
        else:
            ints.frombytes(_INTS.pack(ts_ns, ts_ns, self._added))
            self._floats.frombytes(_FLOATS.pack(value, value, value))
            n += _WIDTH
        self._added += 1
        self._cutoff_ns = cutoff_ns = ts_ns - window_ns
        if n >= 2 * _WIDTH and ints[_WIDTH + _NEWEST] <= cutoff_ns:
            self._trim()
            n = len(ints)
        if n > _FULL:
            self._merge(window_ns * WIDEN // MAX_SPANS)

    def trim(self, cutoff_ns: int) -> None:
        """Move the window's old edge to `cutoff_ns` (exclusive) without a reading."""
        self._cutoff_ns = cutoff_ns
        self._trim()

    def _trim(self) -> None:
        """Drop spans before the edge but the newest of them: it shows the window is full."""
        ints, cutoff = self._ints, self._cutoff_ns
        drop = 0
        while len(ints) - drop >= 2 * _WIDTH and ints[drop + _WIDTH + _NEWEST] <= cutoff:
            drop += _WIDTH
        if drop:
            del ints[:drop]
            del self._floats[:drop]

    @property
    def full(self) -> bool:
        """Whether the readings span the window: one is at or before its old edge."""
        return bool(self._ints) and self._ints[_OLDEST] <= self._cutoff_ns

    @property
    def recent(self) -> bool:
        """Whether a reading is inside the window."""
        return bool(self._ints) and self._ints[-_WIDTH + _NEWEST] > self._cutoff_ns

    @property
    def count(self) -> int:
        """The readings inside the window."""
        start = self._start()
        return self._added - self._ints[start + _BEFORE] if start < len(self._ints) else 0

    def mean(self) -> float:
        """The mean inside the window (at least one reading), as `statistics.fmean`."""
        start = self._start()
        total = math.fsum(self._floats[start + _TOTAL::_WIDTH])
        return total / (self._added - self._ints[start + _BEFORE])

    def low(self) -> float:
        """The lowest reading inside the window (at least one)."""
        return min(self._floats[self._start() + _LO::_WIDTH])

    def high(self) -> float:
        """The highest reading inside the window (at least one)."""
        return max(self._floats[self._start() + _HI::_WIDTH])

    def _start(self) -> int:
        """Where the first span inside starts: after a trim only the first can lie before."""
        ints = self._ints
        return _WIDTH if ints and ints[_NEWEST] <= self._cutoff_ns else 0

    def _merge(self, width_ns: int) -> None:
        """Merge neighbours, left to right, where the pair spans less than `width_ns`."""
        # Plain lists while merging: indexing an array makes a Python number each time.
        ints, floats = self._ints.tolist(), self._floats.tolist()
        n = len(ints)
        merged_ints: list[int] = []
        merged_floats: list[float] = []
        i = 0
        while i < n:
            j = i + _WIDTH
            if j < n and ints[j + _NEWEST] - ints[i + _OLDEST] < width_ns:
                _join(ints, floats, i, j, merged_ints, merged_floats)
                i = j + _WIDTH
            else:
                merged_ints += ints[i:j]
                merged_floats += floats[i:j]
                i = j
        if len(merged_ints) == n:  # only with event times out of order: keep the bound anyway
            merged_ints, merged_floats = [], []
            for i in range(0, n, 2 * _WIDTH):
                j = i + _WIDTH
                if j < n:
                    _join(ints, floats, i, j, merged_ints, merged_floats)
                else:
                    merged_ints += ints[i:j]
                    merged_floats += floats[i:j]
        self._ints, self._floats = array("q", merged_ints), array("d", merged_floats)


def _join(ints: list[int], floats: list[float], older: int, newer: int,
          into_ints: list[int], into_floats: list[float]) -> None:
    """Append the span covering the spans at `older` and `newer` (list offsets)."""
    into_ints += (ints[newer + _NEWEST], ints[older + _OLDEST], ints[older + _BEFORE])
    into_floats += (floats[older + _TOTAL] + floats[newer + _TOTAL],
                    min(floats[older + _LO], floats[newer + _LO]),
                    max(floats[older + _HI], floats[newer + _HI]))
