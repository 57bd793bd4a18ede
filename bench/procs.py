"""Child processes the harness starts, always stopped by it, and their CPU and memory from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_TIMEOUT_S = 15.0  # a graceful stop flushes and acknowledges; past this, SIGKILL
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in these
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True, slots=True)
class Usage:
    """A process's CPU seconds (user + system) and memory at one instant."""

    at: float  # time.monotonic()
    cpu_s: float
    rss_mb: float
    peak_rss_mb: float  # VmHWM: the high-water mark since the process started


def usage(pid: int) -> Usage | None:
    """The process's CPU and memory now, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2:].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    memory = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
              if line.startswith(("VmRSS:", "VmHWM:"))}
    return Usage(time.monotonic(), cpu_s, int(memory.get("VmRSS", 0)) / 1024,
                 int(memory.get("VmHWM", 0)) / 1024)


def cpu_percent(before: Usage, after: Usage) -> float:
    """Average CPU between two samples, 100 = one core."""
    elapsed = after.at - before.at
    return 100.0 * (after.cpu_s - before.cpu_s) / elapsed if elapsed > 0 else 0.0


@contextlib.contextmanager
def child(command: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None, stop_signal: int = signal.SIGTERM,
          stdin: int | None = subprocess.DEVNULL) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a session of its own, output to `log`; stopped (then killed) at exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(list(command), stdin=stdin, stdout=output,
                                   stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop(process, stop_signal)


def stop(process: subprocess.Popen[bytes], stop_signal: int = signal.SIGTERM) -> int:
    """Signal the process, wait STOP_TIMEOUT_S, then kill its process group; its exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(stop_signal)
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Not reaped yet, so its pid is still ours: it leads a session of its own, and
            # the group of that id holds only it and what it started.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def load_average() -> tuple[float, float, float]:
    """The machine's 1, 5 and 15 minute load averages."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def wait_quiet(pids: Sequence[int], *, below_percent: float = 5.0, window_s: float = 1.0,
               timeout_s: float = 30.0) -> float:
    """Wait until the processes (servers after a run: compactions, autosaves) are idle.

    Returns the seconds waited; gives up after `timeout_s` (a busy server is noted, not fatal).
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = [usage(pid) for pid in pids]
        time.sleep(window_s)
        after = [usage(pid) for pid in pids]
        busy = sum(cpu_percent(b, a) for b, a in zip(before, after, strict=True)
                   if b is not None and a is not None)
        if busy < below_percent:
            break
    return time.monotonic() - started
