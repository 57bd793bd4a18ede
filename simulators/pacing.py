"""Time acceleration: when, on the wall clock, a moment of simulated time is due."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol


class WallClock(Protocol):
    """The clocks pacing a run: injected, so tests need not wait for real seconds."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...  # Unix time: how far the present has come

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clocks and `asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Pacer:
    """Simulated second `t` is due at `started + (t - origin_s) / speed` on the wall clock,
    and never before the present reaches `t - ahead_s`.

    `speed` None plays as fast as possible. The second rule keeps readings out of the
    future, where Siaga refuses them: a scenario placed in the past plays at `speed` until
    it catches up with the present, then in real time. `ahead_s` None lifts it.
    """

    def __init__(self, speed: float | None, origin_s: float, clock: WallClock,
                 started: float | None = None, ahead_s: float | None = 0.0) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number or None (as fast as possible), "
                             f"got {speed}")
        self.speed = speed
        self.origin_s = origin_s
        self.ahead_s = ahead_s
        self._clock = clock
        self.started = clock.monotonic() if started is None else started

    def delay(self, sim_time_s: float) -> float:
        """Seconds to wait until `sim_time_s` is due; 0 when it is due already."""
        wait = 0.0
        if self.speed is not None:
            due = self.started + (sim_time_s - self.origin_s) / self.speed
            wait = due - self._clock.monotonic()
        if self.ahead_s is not None:
            wait = max(wait, sim_time_s - self.ahead_s - self._clock.time())
        return max(0.0, wait)

    def sim_now(self) -> float | None:
        """The simulated time the wall clock has reached; None when not paced."""
        if self.speed is None:
            return None
        paced = self.origin_s + (self._clock.monotonic() - self.started) * self.speed
        if self.ahead_s is not None:
            paced = min(paced, self._clock.time() + self.ahead_s)
        return paced
