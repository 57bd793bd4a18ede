"""Latency histograms counted on the hot path, shown on /metrics as Prometheus histograms.

`prometheus_client.Histogram.observe` takes a lock and walks its buckets in Python (714 ns
against 142 ns here: `python -m bench.histogram`); the ingest path observes twice per MQTT
message, tens of thousands a second. Here an observation is one `bisect` in C and one list
increment, without a lock: every observer runs on the service's event loop. `/metrics`
renders a `Snapshot` through `prometheus_client`'s `HistogramMetricFamily`, so the text
format stays the library's.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Final

# Seconds, from 1 ms (a reading stored or a rule run on a quiet machine) to 10 minutes (a
# webhook retried through backoffs of up to a minute each); Prometheus' own defaults stop at
# 10 s. A p99 past the last bound reads as that bound, so an alert on "p99 over a minute"
# needs bounds well above a minute.
LATENCY_BOUNDS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                         5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A histogram at one moment: cumulative counts per upper bound, as Prometheus wants
    them (`+Inf` last), and the sum of the values observed."""

    buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count); inf last
    total: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


@dataclass(slots=True)
class Histogram:
    """Counts of values per bucket `value <= bound`, plus their sum. Event-loop only."""

    bounds: tuple[float, ...] = LATENCY_BOUNDS
    counts: list[int] = field(init=False)  # per bucket, not cumulative; the last is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be distinct and increasing")
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (`le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_ages(self, now_ns: int, since_ns: Iterable[int]) -> None:
        """Observe `now - since` in seconds for each start time (e.g. each message's
        receipt); a start after `now` (a clock step back) counts as 0."""
        counts, bounds, total = self.counts, self.bounds, 0.0
        for start in since_ns:
            age = max(0, now_ns - start) / 1e9
            counts[bisect_left(bounds, age)] += 1
            total += age
        self.total += total

    def merge(self, other: Histogram) -> None:
        """Add `other`'s counts to these (one channel's histogram from several senders)."""
        if other.bounds != self.bounds:
            raise ValueError("only histograms with the same bounds can be merged")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def snapshot(self) -> Snapshot:
        bounds = [*self.bounds, math.inf]
        return Snapshot(tuple(zip(bounds, accumulate(self.counts), strict=True)), self.total)
