"""A field's readings over a sliding event-time window, kept in at most MAX_SPANS spans.

A span sums neighbouring readings: (newest ts, oldest ts, readings before it, total, lo,
hi); a single reading is a span of one, and the readings between two spans a subtraction.
The window is (ts - window, ts] of the newest reading, and, as `trim` says, the newest span
before it is kept to show the window is full. Up to MAX_SPANS spans (MAX_SPANS - 1
readings inside a full window) nothing is merged and the mean, min and max are exact:
`fmean`, `min` and `max` of the readings inside.

Above that (a fast or misconfigured device, a load test), neighbouring spans are merged,
two at a time, but never into one longer than window * WIDEN / MAX_SPANS (window / 16)
of event time. So memory and the work per reading stay bounded whatever the rate; a span
reaching across the window's old edge counts as inside, so the edge is approximate to
window / 16 (the readings counted are at most that much older than the window). Counts,
min and max stay those of real readings, and "window full" stays exact.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from itertools import islice
from operator import itemgetter
from typing import Final, TypeVar

MAX_SPANS: Final = 64  # per window: 1-minute readings over an hour stay exact; ~15 kB at most
# A merged span is at most window * WIDEN / MAX_SPANS wide. At 4, a pass over 65 spans
# (all within window + window/16) merges at least 15 pairs, so merging costs O(1) a reading;
# at 2 a pass could merge none.
WIDEN: Final = 4

# (newest ts_ns, oldest ts_ns, readings added before its oldest, total, lo, hi): the
# newest ts first, as `trim` expects. Counting "before" makes a count O(1) after any trim.
Span = tuple[int, int, int, float, float, float]
Stamped = TypeVar("Stamped", bound=tuple[int, *tuple[object, ...]])

_TOTAL: Callable[[Span], float] = itemgetter(3)
_LO: Callable[[Span], float] = itemgetter(4)
_HI: Callable[[Span], float] = itemgetter(5)


def trim(history: deque[Stamped], cutoff_ns: int) -> None:
    """Drop entries before `cutoff_ns` but the newest of them: it shows the window is full."""
    while len(history) >= 2 and history[1][0] <= cutoff_ns:
        history.popleft()


class Series:
    """One field of one device over a window; the caller passes the window with each reading.

    Event times must not decrease (the engine skips late readings); if they do, the spans
    stay bounded but the window is no longer meaningful.
    """

    __slots__ = ("_added", "_cutoff_ns", "_spans")

    def __init__(self) -> None:
        self._spans: deque[Span] = deque()
        self._cutoff_ns = 0
        self._added = 0  # readings ever added

    def __len__(self) -> int:
        """The spans kept (at most MAX_SPANS), not the readings."""
        return len(self._spans)

    def add(self, ts_ns: int, value: float, window_ns: int) -> None:
        """Take a reading; the window becomes (ts_ns - window_ns, ts_ns]."""
        self._spans.append((ts_ns, ts_ns, self._added, value, value, value))
        self._added += 1
        self._cutoff_ns = ts_ns - window_ns
        trim(self._spans, self._cutoff_ns)
        if len(self._spans) > MAX_SPANS:
            self._merge(window_ns * WIDEN // MAX_SPANS)

    def trim(self, cutoff_ns: int) -> None:
        """Move the window's old edge to `cutoff_ns` (exclusive) without a reading."""
        trim(self._spans, cutoff_ns)
        self._cutoff_ns = cutoff_ns

    @property
    def full(self) -> bool:
        """Whether the readings span the window: one is at or before its old edge."""
        return bool(self._spans) and self._spans[0][1] <= self._cutoff_ns

    @property
    def recent(self) -> bool:
        """Whether a reading is inside the window."""
        return bool(self._spans) and self._spans[-1][0] > self._cutoff_ns

    @property
    def count(self) -> int:
        """The readings inside the window."""
        start = self._start()
        return self._added - self._spans[start][2] if start < len(self._spans) else 0

    def mean(self) -> float:
        """The mean inside the window (at least one reading), as `statistics.fmean`."""
        spans, start = self._spans, self._start()
        return math.fsum(map(_TOTAL, islice(spans, start, None))) / (self._added - spans[start][2])

    def low(self) -> float:
        """The lowest reading inside the window (at least one)."""
        return min(map(_LO, islice(self._spans, self._start(), None)))

    def high(self) -> float:
        """The highest reading inside the window (at least one)."""
        return max(map(_HI, islice(self._spans, self._start(), None)))

    def _start(self) -> int:
        # The first span inside: after a trim only the first can lie before the edge.
        return 1 if self._spans and self._spans[0][0] <= self._cutoff_ns else 0

    def _merge(self, width_ns: int) -> None:
        """Merge neighbours, left to right, where the pair spans at most `width_ns`."""
        spans, merged = list(self._spans), deque[Span]()
        i, n = 0, len(spans)
        while i < n:
            if i + 1 < n and spans[i + 1][0] - spans[i][1] <= width_ns:
                merged.append(_join(spans[i], spans[i + 1]))
                i += 2
            else:
                merged.append(spans[i])
                i += 1
        if len(merged) == n:  # only with event times out of order: keep the bound anyway
            merged = deque(_join(spans[j], spans[j + 1]) if j + 1 < n else spans[j]
                           for j in range(0, n, 2))
        self._spans = merged


def _join(older: Span, newer: Span) -> Span:
    return (newer[0], older[1], older[2], older[3] + newer[3],
            min(older[4], newer[4]), max(older[5], newer[5]))
