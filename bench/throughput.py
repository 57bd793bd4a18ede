"""Backlog drain: a backlog in the broker, drained by one consumer into InfluxDB.

This is not a live rate: the readings are all queued in Mosquitto before the consumer
starts, and the figure is how fast the consumer empties that queue into InfluxDB.

Each measurement gets a fresh broker and database. The consumer's persistent session is
primed first, the load mode then publishes the backlog (exactly the planned number of
readings, single or in batches of 100: bench/backlog.py) while the consumer is away,
and the consumer starts: the broker delivers as fast as the consumer takes. The stored
count is polled (a count query every half second); the rate is what landed from the
first poll that saw readings to the first that saw them all, so the consumer's start-up
does not count but every stall of the drain does. The slope between 10 % and 90 % is
kept too: where the two differ, the drain was uneven. The final count is checked
against what the broker acknowledged to the load mode (which must be the plan).

Draining a backlog keeps the publisher's CPU out of the measurement: on a real box the
devices are elsewhere, and on this 2-core machine a concurrent publisher would take a core.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import feed
from bench.bed import Bed, fresh_bed, prime_session
from bench.consumers import Consumer, Running
from bench.influxdb import Influx
from bench.procs import Usage, cpu_percent, usage, wait_quiet

MEASURE = "backlog drain"  # written beside every figure: this is not a live rate
POLL_S = 0.5  # count queries this often; each costs InfluxDB a little, the same for everyone
START_TIMEOUT_S = 60.0  # until the first reading lands (Node-RED starts in seconds)
STALL_S = 15.0  # no new reading for this long after the first: the consumer is stuck
SETTLE_S = 3.0  # after stopping, the last flush may still be on its way
LOW, HIGH = 0.10, 0.90  # the part of the drain the slope is measured over


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since the consumer started
    count: int
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class Drain:
    """One consumer draining one backlog (a pre-loaded queue, not a live rate)."""

    consumer: str
    shape: str  # "single" or "batch100"
    planned: int  # readings in the backlog, by the plan
    acknowledged: int  # readings the broker acknowledged to the load mode (== planned)
    landed: int  # readings counted in InfluxDB at the end
    complete: bool  # all acknowledged readings landed, within the time cap
    ended: str  # why the measurement stopped: all, cap, stalled, exited
    rate: float  # readings/s landed, from the first poll that saw some to the one that saw all
    rate_10_90: float  # the steepest part: readings/s between 10 % and 90 % of what landed
    cpu_percent: float  # the consumer's CPU over the drain (100 = one core)
    peak_rss_mb: float
    first_landed_s: float | None  # start-up: consumer started -> first reading stored
    fed_rate: float  # how fast the load mode published the backlog (flat out, queued)
    timeline: list[tuple[float, int, float, float]]  # seconds, count, CPU s, RSS MB

    def as_dict(self) -> dict[str, Any]:
        return {"measure": MEASURE} | asdict(self)


def measure(root: Path, influx: Influx, catalog: Path, consumer: Consumer, *, batch: int,
            readings: int, devices: int, cap_s: float, webhook_url: str | None) -> Drain:
    with fresh_bed(root, influx, catalog, webhook_url=webhook_url) as bed:
        prime_session(bed.broker.port, consumer.client_id(bed), consumer.filters(bed))
        fed = feed.publish(bed.siaga_config("siaga-load-config", 0, name="feed"),
                           bed.workdir / "feed.log", devices=devices, readings=readings,
                           batch=batch)
        wait_quiet(server_pids(bed))
        with consumer.running(bed) as running:
            samples, ended = _follow(bed, running, fed.readings, cap_s)
        time.sleep(SETTLE_S if samples[-1].count < fed.readings else 0)
        landed = bed.count()
    return _summarise(consumer.name, "single" if batch == 1 else f"batch{batch}", readings,
                      fed.readings, landed, samples, fed.rate, ended)


def server_pids(bed: Bed) -> list[int]:
    """The broker's and InfluxDB's process ids, of those running."""
    return [pid for pid in (bed.broker.pid, bed.influx.server.pid) if pid is not None]


def _follow(bed: Bed, running: Running, expected: int,
            cap_s: float) -> tuple[list[Sample], str]:
    """Count what landed every POLL_S until all of it, the cap, a stall or an exit; and which."""
    started = time.monotonic()
    samples = [Sample(0.0, 0, usage(running.pid))]
    last_change = started
    while True:
        time.sleep(POLL_S)
        now = time.monotonic()
        count = bed.count()
        sample = Sample(now - started, count, usage(running.pid))
        if count != samples[-1].count:
            last_change = now
        samples.append(sample)
        limit = STALL_S if count else START_TIMEOUT_S
        for ended, reached in (("all", count >= expected), ("exited", sample.usage is None),
                               ("cap", now - started > cap_s),
                               ("stalled", now - last_change > limit)):
            if reached:
                return samples, ended


def crossing(samples: list[Sample], target: float) -> tuple[float, Sample]:
    """When the count reached `target` (interpolated), and the sample at or after it."""
    for before, after in itertools.pairwise(samples):
        if after.count >= target:
            span = after.count - before.count
            fraction = (target - before.count) / span if span else 1.0
            return before.at + fraction * (after.at - before.at), after
    return samples[-1].at, samples[-1]


def _summarise(name: str, shape: str, planned: int, acknowledged: int, landed: int,
               samples: list[Sample], fed_rate: float, ended: str) -> Drain:
    reached = samples[-1].count
    # The drain: from the first sample that saw readings to the first that saw them all.
    # What landed by the first of these is not counted, so start-up does not count.
    first = next((s for s in samples if s.count > 0), samples[-1])
    last = next(s for s in samples if s.count == reached)
    span = last.at - first.at
    rate = (reached - first.count) / span if span > 0 else 0.0
    t_low, _ = crossing(samples, LOW * reached)
    t_high, _ = crossing(samples, HIGH * reached)
    slope = (HIGH - LOW) * reached / (t_high - t_low) if t_high > t_low else 0.0
    cpu = 0.0
    if first.usage is not None and last.usage is not None and span > 0:
        cpu = cpu_percent(first.usage, last.usage)
    peaks = [s.usage.peak_rss_mb for s in samples if s.usage is not None]
    timeline = [(round(s.at, 2), s.count, round(s.usage.cpu_s, 2), round(s.usage.rss_mb, 1))
                for s in samples if s.usage is not None]
    return Drain(name, shape, planned, acknowledged, landed, landed >= acknowledged, ended,
                 rate, slope, cpu,
                 max(peaks, default=0.0), first.at if first.count else None, fed_rate,
                 timeline)
