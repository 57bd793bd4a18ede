"""The rate limit per API key: a burst of `per_minute`, then one every 60/per_minute s."""

from __future__ import annotations

import pytest

from reports.errors import TooManyReports
from reports.ratelimit import RateLimiter


class Clock:
    """A clock the test moves by hand (the limiter takes any function of seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(limiter: RateLimiter, key: str) -> TooManyReports:
    return refused_with(limiter, key, None)


def refused_with(limiter: RateLimiter, key: str, per_minute: int | None) -> TooManyReports:
    with pytest.raises(TooManyReports) as caught:
        limiter.take(key, per_minute)
    return caught.value


def test_a_key_may_send_its_minute_at_once_then_is_refused() -> None:
    limiter = RateLimiter(60, Clock())
    for _ in range(60):
        limiter.take("qlue")
    error = refused(limiter, "qlue")
    assert str(error) == "too many reports from key 'qlue': at most 60 a minute; retry in 1 s"
    assert error.retry_after_s == 1


def test_retry_after_is_the_wait_for_one_report_rounded_up() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock)  # one every 10 s
    for _ in range(6):
        limiter.take("app")
    assert refused(limiter, "app").retry_after_s == 10
    clock.now += 2.5
    assert refused(limiter, "app").retry_after_s == 8  # 7.5 s to go, rounded up


def test_a_refusal_costs_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock)
    for _ in range(6):
        limiter.take("app")
    for _ in range(5):
        refused(limiter, "app")
    clock.now += 10
    limiter.take("app")  # refusals did not dig the bucket deeper


def test_tokens_come_back_with_time_up_to_the_capacity() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock)
    for _ in range(60):
        limiter.take("app")
    clock.now += 1
    limiter.take("app")
    refused(limiter, "app")
    clock.now += 3600  # an hour of quiet refills a minute's worth, not an hour's
    for _ in range(60):
        limiter.take("app")
    refused(limiter, "app")


def test_keys_are_limited_separately() -> None:
    limiter = RateLimiter(1, Clock())
    limiter.take("qlue")
    refused(limiter, "qlue")
    limiter.take("fixmystreet")


def test_full_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock)
    for index in range(1000):
        limiter.take(f"key-{index}")
    assert len(limiter) == 1000
    clock.now += 0.5
    limiter.take("key-0")
    assert len(limiter) == 1000  # none is full yet: each is one report short for a second
    clock.now += 1
    limiter.take("late")
    # key-1..999 have refilled and are gone; key-0, two reports short, needs another second.
    assert len(limiter) == 2
    clock.now += 1
    limiter.take("later")
    assert len(limiter) == 1  # key-0 and "late" have refilled too; "later" is one short


def test_a_remembered_key_keeps_its_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock)  # one every 30 s
    limiter.take("a")
    limiter.take("a")
    clock.now += 10
    limiter.take("b")  # pruning others must not reset "a"
    assert refused(limiter, "a").retry_after_s == 20


def test_a_clock_stepping_back_refills_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(1, clock)
    limiter.take("a")
    clock.now -= 100
    assert refused(limiter, "a").retry_after_s == 60


def test_a_limit_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RateLimiter(0)


def test_a_key_with_its_own_limit_gets_its_own_bucket_size() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock)
    for _ in range(5):
        limiter.take("aggregator", 5)
    assert refused_with(limiter, "aggregator", 5).retry_after_s == 12  # one token per 12 s
    limiter.take("app")
    limiter.take("app")
    assert refused_with(limiter, "app", None).retry_after_s == 30
