"""Load through the simulators' load mode: `siaga simulate --devices N --rate R [--batch B]`.

Always a separate process, as devices are: its CPU is not the consumer's. A live load
runs `siaga simulate` at a rate; a backlog of an exact size is published by
`python -m bench.backlog` (the same load run, stopped at a count: bench/backlog.py).
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.procs import child, stop

SIMULATE = [sys.executable, "-m", "siaga", "simulate"]
SUMMARY = re.compile(r"([\d,]+) of ([\d,]+) messages acknowledged \(([\d,]+) of ([\d,]+) readings\)"
                     r" in ([\d.]+) s")
FEED_GRACE_S = 60.0  # beyond its own duration: connecting, status rounds, the last PUBACKs
BACKLOG_TIMEOUT_S = 900.0  # 2,000,000 readings take ~10 s flat out; a bound, not a guess
SEED = 1


@dataclass(frozen=True, slots=True)
class Fed:
    """What the broker acknowledged to the load mode."""

    messages: int
    readings: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0


def parse_summary(output: str) -> Fed:
    """The acknowledged counts from `siaga simulate`'s summary line."""
    found = SUMMARY.search(output)
    if found is None:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise RuntimeError(f"no summary from `siaga simulate`:\n{tail}")
    number = [int(group.replace(",", "")) for group in found.groups()[:4]]
    return Fed(messages=number[0], readings=number[2], elapsed_s=float(found.group(5)))


def write_catalog(devices: int, path: Path) -> Path:
    """The bundled Jakarta devices plus `devices` synthetic ones, as a catalog file."""
    if path.exists():
        return path
    config = path.with_name(path.stem + "-source.yaml")  # only the bundled catalog matters
    config.write_text("mqtt:\n  url: mqtt://127.0.0.1:1883\n")
    done = subprocess.run([*SIMULATE, "-c", str(config), "--devices", str(devices),
                           "--write-catalog", str(path)], capture_output=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`siaga simulate --write-catalog` failed: {done.stderr[-800:]!r}")
    return path


def _command(config: Path, devices: int, rate: float | None, batch: int,
             duration_s: float) -> list[str]:
    return [*SIMULATE, "-c", str(config), "--devices", str(devices),
            "--rate", "max" if rate is None else f"{rate:g}", "--batch", str(batch),
            "--duration", f"{duration_s:g}", "--seed", str(SEED)]


BACKLOG = [sys.executable, "-m", "bench.backlog"]


def publish(config: Path, log: Path, *, devices: int, readings: int, batch: int = 1) -> Fed:
    """Publish exactly `readings` readings flat out (bench/backlog.py); what was acknowledged.

    Raises unless the broker acknowledged every one: a backlog is the planned size or the
    measurement does not count.
    """
    command = [*BACKLOG, "-c", str(config), "--devices", str(devices), "--readings",
               str(readings), "--batch", str(batch), "--seed", str(SEED)]
    with log.open("ab") as output:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=output,
                              timeout=BACKLOG_TIMEOUT_S, check=False)
    text = done.stdout.decode(errors="replace")
    with log.open("a") as output:
        output.write(text)
    if done.returncode != 0:
        raise RuntimeError(f"bench.backlog exited {done.returncode}: {text[-500:]}")
    fed = parse_summary(text)
    if fed.readings != readings:
        raise RuntimeError(f"the broker acknowledged {fed.readings:,} of the {readings:,} "
                           f"readings planned for the backlog")
    return fed


def flat_out(config: Path, log: Path, *, devices: int, batch: int,
             duration_s: float) -> tuple[Fed, float]:
    """`siaga simulate --devices N --rate max` for `duration_s`: what it published, its CPU s."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("ab") as output:
        done = subprocess.run(_command(config, devices, None, batch, duration_s),
                              stdout=subprocess.PIPE, stderr=output,
                              timeout=duration_s + FEED_GRACE_S, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the waited-for child's CPU
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"`siaga simulate` exited {done.returncode}: {text[-500:]}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_summary(text), cpu_s


class LiveFeed:
    """A load-mode process publishing at a steady rate until stopped; then its summary."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log
        self.started = time.monotonic()
        self.fed: Fed | None = None

    def finish(self) -> Fed:
        """SIGINT (the load mode says `offline` and prints its summary), then the counts."""
        stop(self.process, signal.SIGINT)
        self.fed = parse_summary(self.log.read_text(errors="replace"))
        return self.fed


@contextlib.contextmanager
def live(config: Path, log: Path, *, devices: int, rate: float, batch: int = 1,
         max_duration_s: float = 600.0, cpus: str | None = None) -> Iterator[LiveFeed]:
    """Steady load in the background; bounded by `max_duration_s` even if never finished.
    With `cpus` (a `taskset -c` list) the load runs on those cores only."""
    command = _command(config, devices, rate, batch, max_duration_s)
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]  # execs in place, threads inherit it
    with child(command, log, stop_signal=signal.SIGINT) as process:
        feed = LiveFeed(process, log)
        yield feed
        if feed.fed is None:
            feed.finish()
