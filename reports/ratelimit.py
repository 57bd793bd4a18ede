"""How many reports each API key may send: a token bucket per key, with an injected clock.

A key may send `per_minute` reports at once (an app flushing its offline queue), then one
every 60/per_minute seconds. One limiter serves one process, from the event loop's thread
(it takes no lock). Instances sharing a report book keep the buckets in it instead
(`reports.book.ReportBook.take_report_token`), with the same arithmetic (`refilled`,
`take_token`): a key's limit holds across them, whichever instance its reports reach.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from reports.errors import TooManyReports


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # the clock's time of `tokens`
    capacity: float  # the key's limit a minute: also how many it may send at once


class RateLimiter:
    """`take(key_name)` once per report; `TooManyReports` when the key's bucket is empty.

    `per_minute` is the default; a key with its own limit passes it to `take`."""

    def __init__(self, per_minute: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, not {per_minute}")
        self._capacity = float(per_minute)
        self._clock = clock
        # Least recently used first: a bucket left alone refills, so the oldest are the first
        # to be full again. A full bucket is forgotten, since a new one starts full: memory
        # holds only the keys that sent something within the last minute.
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key_name: str, per_minute: int | None = None) -> None:
        """One report from `key_name` (whose own limit is `per_minute`, if it has one):
        allowed, or `TooManyReports` with its Retry-After."""
        capacity = self._capacity if per_minute is None else float(per_minute)
        if capacity < 1:
            raise ValueError(f"per_minute must be at least 1, not {per_minute}")
        now = self._clock()
        self._forget_full(now)
        bucket = self._buckets.pop(key_name, None)
        tokens = capacity if bucket is None else min(capacity, self._refilled(bucket, now))
        try:
            tokens = take_token(key_name, tokens, capacity)
        finally:
            self._buckets[key_name] = _Bucket(tokens, now, capacity)

    def __len__(self) -> int:
        """How many keys are remembered (the others' buckets are full)."""
        return len(self._buckets)

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        return refilled(bucket.tokens, now - bucket.at, bucket.capacity)

    def _forget_full(self, now: float) -> None:
        while self._buckets:
            key_name, oldest = next(iter(self._buckets.items()))
            if self._refilled(oldest, now) < oldest.capacity:
                return
            del self._buckets[key_name]


def refilled(tokens: float, elapsed_s: float, capacity: float) -> float:
    """A bucket's tokens `elapsed_s` later: `capacity` a minute, never more than it holds.
    A clock that steps back refills nothing."""
    return min(capacity, tokens + max(0.0, elapsed_s) * capacity / 60)


def take_token(key_name: str, tokens: float, capacity: float) -> float:
    """What is left of `tokens` after one report, or `TooManyReports` with its Retry-After."""
    if tokens >= 1:
        return tokens - 1
    raise too_many(key_name, tokens, capacity)


def too_many(key_name: str, tokens: float, capacity: float) -> TooManyReports:
    """The refusal of a report from a bucket holding `tokens`, saying when to retry (at
    least 1 s: also for a bucket another computation of the same refill found full)."""
    # Less a hair: 2/60 and 1/3 of a token are not exact in binary, and 20.000000004 seconds
    # must read 20, not 21.
    wait_s = max(1, math.ceil((1 - tokens) / (capacity / 60) - 1e-9))
    return TooManyReports(f"too many reports from key {key_name!r}: at most "
                          f"{capacity:g} a minute; retry in {wait_s} s", wait_s)
