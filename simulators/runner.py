"""Putting a scenario on the wire, as `siaga simulate` does: placement in time, progress line."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TextIO

from devices.registry import Registry
from devices.topics import TopicScheme
from simulators.fleet import Fleet, FleetConfig, FleetConfigError
from simulators.pacing import WallClock
from simulators.scenario import Scenario
from simulators.simulation import Simulation
from simulators.summary import Summary, progress_line

TTY_PROGRESS_S = 1.0  # a terminal redraws its one line every second
LOG_PROGRESS_S = 10.0  # a log gets a line every ten seconds, not a flood


def placed(scenario: Scenario, start: datetime | None = None,
           until: datetime | timedelta | None = None) -> tuple[Scenario, float, float]:
    """`scenario` moved to `start`, and the simulated [start_s, until_s) to play.

    `until` is an instant, or a duration from the (moved) start; None: the scenario's end.
    """
    if start is not None:
        scenario = scenario.starting_at(start)
    if until is None:
        until_s = scenario.end_s
    elif isinstance(until, datetime):
        until_s = until.timestamp()
    else:
        until_s = scenario.start_s + until.total_seconds()
    if until_s <= scenario.start_s:
        raise FleetConfigError(f"until ({until}) must come after the start ({scenario.start})")
    return scenario, scenario.start_s, until_s


def playback(registry: Registry, scenario: Scenario, config: FleetConfig, *, seed: int = 0,
             start: datetime | None = None, until: datetime | timedelta | None = None,
             clock: WallClock | None = None) -> Fleet:
    """A fleet playing `scenario` on the devices of `registry`; `await fleet.run()` plays it."""
    scenario, start_s, until_s = placed(scenario, start, until)
    simulation = Simulation(registry, scenario, seed, TopicScheme(config.topic_prefix))
    return Fleet(simulation, config, start_s=start_s, until_s=until_s, clock=clock)


class ProgressPrinter:
    """Prints progress snapshots: redrawn in place on a terminal, one line each in a log."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last: Summary | None = None
        self.every_s = TTY_PROGRESS_S if self._tty else LOG_PROGRESS_S

    def __call__(self, summary: Summary) -> None:
        line = progress_line(summary, self._last)
        self._last = summary
        if self._tty:
            self._out.write("\r" + line.ljust(110))
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def finish(self) -> None:
        """Ends the redrawn line, so what follows starts on a line of its own."""
        if self._tty and self._last is not None:
            self._out.write("\n")
            self._out.flush()
