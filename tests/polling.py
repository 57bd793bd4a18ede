"""The one polling helper of the test suite: wait on a condition, never on elapsed time.

A test that sleeps a fixed time and then looks guesses how long the system needs: too short on
a loaded machine and it fails for no reason, too long everywhere else and the suite crawls.
These helpers ask instead, every `step` seconds, until the condition holds or `within` seconds
have passed. They are written once so every test fails the same way: the message names what was
awaited, how long the test waited, and the predicate's last value when that value says more
than `False` (a count, a list, `None`). `within` is a ceiling for a broken system, not a
timing assumption: a healthy run returns as soon as the condition holds.

    wait_until(lambda: len(receiver.received) == 3, what="three webhook deliveries")
    await eventually(lambda: book.firing(), within=10, what="the alert firing")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["eventually", "wait_until"]


def _timed_out(what: str, within: float, last: object) -> AssertionError:
    message = f"{what}: not within {within:g} s"
    if last is not False:  # a bare False adds nothing; a count or a list says how far it got
        message += f" (last value: {last!r:.300})"
    return AssertionError(message)


def wait_until(predicate: Callable[[], object], within: float = 20.0, what: str = "condition",
               step: float = 0.05) -> float:
    """Block until `predicate()` is truthy; return the seconds waited.

    Raise AssertionError naming `what` and `within` if it is still falsy after `within` seconds.
    The predicate is always asked once more at the deadline, so a condition that became true
    while the test slept its last step is not reported as a time-out.
    """
    started = time.monotonic()
    deadline = started + within
    while True:
        last = predicate()
        if last:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise _timed_out(what, within, last)
        time.sleep(min(step, max(0.0, deadline - time.monotonic())))


async def eventually(predicate: Callable[[], object], within: float = 20.0,
                     what: str = "condition", step: float = 0.02) -> float:
    """The same as `wait_until` for async tests: yields to the event loop between checks."""
    started = time.monotonic()
    deadline = started + within
    while True:
        last = predicate()
        if last:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise _timed_out(what, within, last)
        await asyncio.sleep(min(step, max(0.0, deadline - time.monotonic())))


async def a_few_loop_iterations() -> None:
    """Let the event loop run its ready callbacks and poll its sockets a few times: a reader
    still registered on a readable socket would be called in the first of them. Not a wait
    on time: for showing that something does not happen while the loop turns."""
    for _ in range(5):
        await asyncio.sleep(0)
