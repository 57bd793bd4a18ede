"""The cost of one latency observation: prometheus_client's Histogram against Siaga's own.

Siaga observes two latencies per MQTT message on its hot path (siaga_core/histogram.py
says why it counts them itself). This prints both costs, on the same bounds, with the
commit and the machine:

    .venv/bin/python -m bench.histogram
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client import Histogram as LibraryHistogram

from bench.provenance import git, machine, short
from siaga_core.histogram import LATENCY_BOUNDS, Histogram

CALLS = 1_000_000
REPEATS = 5  # the best of these: the least disturbed by the rest of the machine
MESSAGES = 1000  # messages per observe_ages call, as a flush of a busy batch


def best_ns(call: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=REPEATS)) / number * 1e9


def main() -> None:
    library = LibraryHistogram("siaga_bench_seconds", "bench", buckets=LATENCY_BOUNDS,
                               registry=CollectorRegistry())
    ours = Histogram()
    starts = list(range(MESSAGES))
    print(short(git(), machine()))
    theirs_ns = best_ns(lambda: library.observe(0.0042), CALLS)
    ours_ns = best_ns(lambda: ours.observe(0.0042), CALLS)
    print(f"prometheus_client Histogram.observe: {theirs_ns:.0f} ns")
    print(f"siaga_core Histogram.observe:        {ours_ns:.0f} ns")
    per_call = best_ns(lambda: ours.observe_ages(5_000_000, starts), 1000)
    print(f"siaga_core observe_ages, per message: {per_call / MESSAGES:.0f} ns")


if __name__ == "__main__":
    main()
