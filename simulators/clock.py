"""The clock that stamps simulated readings: injected, so simulated time may leave wall time."""

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the simulated time as Unix epoch seconds."""

    def now(self) -> float: ...


class SimClock:
    """Simulated time; this first version runs at wall-clock speed from the real present.

    Scenarios will later give it a start time and a speed-up factor; readings are stamped
    from it, so rules on event time see the simulated day, not the wall clock.
    """

    def now(self) -> float:
        return time.time()
