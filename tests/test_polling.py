"""tests/polling.py: returns once the condition holds; a time-out says what and how long."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.polling import eventually, wait_until


def test_wait_until_returns_once_the_condition_holds() -> None:
    calls = itertools.count(1)
    waited = wait_until(lambda: next(calls) >= 3, within=5, step=0.001)
    assert next(calls) == 4  # asked exactly three times, no further
    assert waited < 5


def test_a_time_out_names_what_was_awaited_for_how_long_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as raised:
        wait_until(lambda: [], within=0.05, what="three rows")
    assert str(raised.value) == "three rows: not within 0.05 s (last value: [])"
    with pytest.raises(AssertionError) as raised:
        wait_until(lambda: False, within=0.05, what="the alert")
    assert str(raised.value) == "the alert: not within 0.05 s"


async def test_eventually_yields_to_the_loop_while_it_waits() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)  # fires only if eventually yields
    await eventually(done.is_set, within=5, what="the timer")
    with pytest.raises(AssertionError, match=r"^a count: not within 0.05 s \(last value: 0\)$"):
        await eventually(lambda: 0, within=0.05, what="a count")
