"""Tests of storage: write or spool, split refused batches, drain the spool in order.

`ScriptedWriter` is a deterministic stand-in for InfluxDB. It is used here for what a real
server cannot be made to do on demand, at a chosen write: be down for exactly two writes,
answer 503 or 429 with a Retry-After, fail with a time-out in the middle of a split, or come
back between two probes; and for the drain's ordering and backoff, which need such failures.
A real InfluxDB only fails like that when it is really broken, at moments a test cannot pick.

Where it refuses lines it answers as InfluxDB 1.6.7 does (see
tests/integration/test_influx_partial_write.py): the lines it can take are WRITTEN, and the
answer is still a 400 "partial write". How the split behaves against that real server (good
lines stored once, refused lines dead-lettered with the server's reason) is tested there, not
here; so is the v1 writer in tests/integration/test_influx_writers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from ingest.influx import RejectedWriteError, RetryableWriteError, V1Writer
from ingest.spool import SEGMENT_SUFFIX, SEQUENCE_DIGITS, TEMP_SUFFIX, Spool
from ingest.storage import (
    DISK_ERROR,
    SPOOL_FULL,
    NotDurable,
    Rejection,
    Storage,
)
from siaga.sandbox.ports import free_port
from tests.polling import eventually

BUDGET = 1_000_000
DEADLINE_S = 5.0  # generous: a loaded CI machine must not fail a correct drain


class ScriptedWriter:
    """Follows the `Writer` protocol; answers as scripted instead of as a server would.

    Each write consumes the next entry of `script`: an error to raise, or None to behave
    normally. Normally, like InfluxDB 1.x, it stores every line not in `refused` and, if the
    batch held a refused line, then answers 400 "partial write" naming the first one. An
    empty script means normal behaviour; `down` makes every write fail as if unreachable.

    `written` logs every line each time a write stored it (a line sent again shows again);
    `points` is what the server holds: each line once, as InfluxDB keeps one point per
    series and timestamp.
    """

    def __init__(self) -> None:
        self.down = False
        self.refused: set[str] = set()
        self.script: list[Exception | None] = []
        self.written: list[str] = []
        self.attempts: list[float] = []  # time.monotonic() of each write

    @property
    def points(self) -> list[str]:
        return list(dict.fromkeys(self.written))

    async def write(self, body: bytes) -> None:
        self.attempts.append(time.monotonic())
        scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            raise scripted
        if self.down:
            raise RetryableWriteError("connection refused")
        lines = body.decode().split("\n")
        taken = [line for line in lines if line not in self.refused]
        self.written.extend(taken)
        if len(taken) < len(lines):
            bad = next(line for line in lines if line in self.refused)
            reason = f"unable to parse '{bad}': bad timestamp"
            raise RejectedWriteError(400, f"partial write: {reason} dropped=0" if taken else reason)

    async def ping(self) -> bool:
        return not self.down

    def describe(self) -> str:
        return "scripted stand-in for InfluxDB"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Harness:
    """A storage over a real spool directory, collecting what the drain reports."""

    def __init__(
        self,
        tmp_path: Path,
        max_bytes: int = BUDGET,
        backoff_initial_s: float = 0.01,
        backoff_max_s: float = 0.05,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.writer = ScriptedWriter()
        self.spool = Spool(tmp_path / "spool", max_bytes)
        self.reported: list[Rejection] = []
        self.storage = Storage(
            self.writer,
            self.spool,
            self.reported.extend,
            timer=timer,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )

    @contextlib.asynccontextmanager
    async def draining(self) -> AsyncIterator[None]:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.storage.drain(stop))
            try:
                yield
            finally:
                stop.set()


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def batch(name: str, size: int = 3) -> list[str]:
    return [f"m,b={name} v={i}i {i}" for i in range(size)]


async def test_a_batch_influxdb_takes_is_written(harness: Harness) -> None:
    outcome = await harness.storage.store(batch("a"))
    assert (outcome.written, outcome.spooled, outcome.rejected) == (3, 0, [])
    assert harness.writer.written == batch("a")
    assert harness.spool.empty


async def test_write_latency_is_measured_with_the_timer(tmp_path: Path) -> None:
    ticks: Iterator[float] = iter([10.0, 10.25])
    harness = Harness(tmp_path, timer=lambda: next(ticks))
    await harness.storage.store(batch("a"))
    assert harness.storage.stats.last_write_latency_s == 0.25


async def test_batches_are_spooled_while_influxdb_is_down_then_drained_in_order(
    harness: Harness,
) -> None:
    harness.writer.down = True
    async with harness.draining():
        first = await harness.storage.store(batch("a"))
        second = await harness.storage.store(batch("b"))
        assert (first.spooled, second.spooled) == (3, 3)
        assert harness.writer.written == []
        harness.writer.down = False
        await eventually(lambda: harness.spool.empty, what="the spool drained")
    assert harness.writer.written == batch("a") + batch("b")
    stats = harness.storage.stats
    assert (stats.written_total, stats.spooled_total, stats.spool_segments) == (6, 6, 0)


async def test_new_batches_go_behind_the_spool_and_are_written_after_it(
    harness: Harness,
) -> None:
    harness.writer.down = True
    await harness.storage.store(batch("old"))
    harness.writer.down = False

    outcome = await harness.storage.store(batch("new"))

    assert (outcome.written, outcome.spooled) == (0, 3)
    assert harness.writer.written == []
    async with harness.draining():
        await eventually(lambda: harness.spool.empty, what="the spool drained")
    assert harness.writer.written == batch("old") + batch("new")


async def test_a_failure_in_the_middle_of_a_split_spools_the_rest(harness: Harness) -> None:
    a, bad, c, d = lines = batch("x", size=4)
    harness.writer.refused = {bad}
    # Writes: [a bad c d] partly written (a, c, d), [a bad] partly written (a), [a] taken,
    # [bad] refused, [c d] times out.
    harness.writer.script = [None, None, None, None, RetryableWriteError("timeout")]

    outcome = await harness.storage.store(lines)

    assert (outcome.written, outcome.spooled) == (1, 2)
    assert [line for line, _ in outcome.rejected] == [bad]
    oldest = harness.spool.oldest()
    assert oldest is not None
    assert oldest.body == f"{c}\n{d}".encode()
    # The server already has c and d from the first, partial write; the spool sends them
    # again, which overwrites the same points: still one each, and each counted once.
    async with harness.draining():
        await eventually(lambda: harness.spool.empty, what="the rest drained")
    assert harness.writer.points == [a, c, d]
    assert harness.storage.stats.written_total == 3


async def test_the_drain_keeps_only_the_unwritten_rest_when_influxdb_fails_midway(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, backoff_initial_s=60.0)
    a, bad, c, d = lines = batch("x", size=4)
    harness.spool.append("\n".join(lines).encode())
    harness.writer.refused = {bad}
    harness.writer.script = [None, None, None, None, RetryableWriteError("timeout")]

    async with harness.draining():
        await eventually(lambda: len(harness.writer.attempts) == 5, what="five writes")
        await eventually(lambda: harness.spool.size_bytes == len(f"{c}\n{d}"),
                         what="the segment cut to its unwritten rest")

    assert [line for line, _ in harness.reported] == [bad]
    oldest = harness.spool.oldest()
    assert oldest is not None
    assert oldest.body == f"{c}\n{d}".encode()
    # Not "unwritten" to the server (the first write stored c and d), but not confirmed.
    assert harness.writer.points == [a, c, d]
    assert harness.storage.stats.written_total == 1


async def test_an_unreachable_influxdb_gets_the_spool_as_soon_as_it_answers_again(
    tmp_path: Path,
) -> None:
    # A 60 s backoff, but InfluxDB is only away: the drain pings it (every PROBE_EVERY_S)
    # and goes on when it is back. Waiting out the backoff would take 60 s, so draining
    # within half of that proves the probe without asserting how fast a loaded machine is.
    harness = Harness(tmp_path, backoff_initial_s=60.0)
    harness.spool.append(b"m v=1i 1")
    harness.writer.down = True
    async with harness.draining():
        await eventually(lambda: len(harness.writer.attempts) == 1, what="the first write")
        harness.writer.down = False
        await eventually(lambda: harness.spool.empty, within=30.0,
                         what="the spool drained before the 60 s backoff ended")
    assert len(harness.writer.attempts) == 2


async def test_a_server_that_answers_with_errors_waits_out_its_backoff(tmp_path: Path) -> None:
    # A 503 is an answer: pinging would not tell whether writes work again.
    harness = Harness(tmp_path, backoff_initial_s=0.6)
    harness.spool.append(b"m v=1i 1")
    harness.writer.script = [RetryableWriteError("503", status=503)]
    async with harness.draining():
        await eventually(lambda: harness.spool.empty, what="the spool drained")
    first, second = harness.writer.attempts
    assert second - first >= 0.6 * 0.9


async def test_retry_after_shorter_than_the_backoff_is_honoured(tmp_path: Path) -> None:
    harness = Harness(tmp_path, backoff_initial_s=60.0)
    harness.spool.append(b"m v=1i 1")
    harness.writer.script = [RetryableWriteError("429", status=429, retry_after=0.05)]
    async with harness.draining():
        await eventually(lambda: harness.spool.empty, what="the spool drained")
    first, second = harness.writer.attempts
    assert second - first >= 0.05 * 0.9  # the loop's timers may fire a tick early


async def test_retry_after_longer_than_the_backoff_is_honoured(tmp_path: Path) -> None:
    harness = Harness(tmp_path, backoff_initial_s=0.001)
    harness.spool.append(b"m v=1i 1")
    harness.writer.script = [RetryableWriteError("429", status=429, retry_after=0.3)]
    async with harness.draining():
        await eventually(lambda: harness.spool.empty, what="the spool drained")
    first, second = harness.writer.attempts
    assert second - first >= 0.3 * 0.9


async def test_the_drain_backs_off_exponentially_up_to_the_cap(tmp_path: Path) -> None:
    harness = Harness(tmp_path, backoff_initial_s=0.02, backoff_max_s=0.08)
    harness.spool.append(b"m v=1i 1")
    harness.writer.script = [RetryableWriteError("down") for _ in range(5)]
    async with harness.draining():
        await eventually(lambda: harness.spool.empty, what="the spool drained")
    attempts = harness.writer.attempts
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, expected in zip(gaps, [0.02, 0.04, 0.08, 0.08, 0.08], strict=True):
        assert gap >= expected * 0.9


async def test_a_full_spool_makes_storage_unavailable(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_bytes=20)
    harness.writer.down = True
    with pytest.raises(NotDurable, match="spool full"):
        await harness.storage.store(batch("a"))
    assert harness.spool.empty
    assert harness.storage.stats.spooled_total == 0


@contextlib.asynccontextmanager
async def dead_influxdb() -> AsyncIterator[V1Writer]:
    """A real InfluxDB 1.x writer aimed at a port nothing listens on: connection refused."""
    async with V1Writer(f"http://127.0.0.1:{free_port()}", "siaga", timeout_s=2.0,
                        create_database=False) as writer:
        yield writer


async def test_a_full_spool_is_counted_and_said_until_a_store_succeeds(tmp_path: Path) -> None:
    refused, fits = batch("a", 4), ["m v=1i 1"]  # 4 lines do not fit 40 bytes; 1 does
    clock = iter([100.0, 200.0, 300.0])
    async with dead_influxdb() as writer:
        storage = Storage(writer, Spool(tmp_path / "spool", 40), lambda rejected: None,
                          clock=lambda: next(clock))
        for _ in range(2):
            with pytest.raises(NotDurable) as raised:
                await storage.store(refused)
        full = storage.stats
        await storage.store(fits)
        after = storage.stats
    assert raised.value.cause == SPOOL_FULL
    assert full.unavailable_total == {SPOOL_FULL: 2, DISK_ERROR: 0}
    assert full.unavailable and full.unavailable_reason == raised.value.reason
    assert raised.value.reason.startswith("spool full: 0 of 40 bytes used")
    assert full.unavailable_since == 100.0  # since the first refusal, not the latest
    assert after.spooled_total == 1
    assert not after.unavailable and after.unavailable_since is None
    assert after.unavailable_total == {SPOOL_FULL: 2, DISK_ERROR: 0}


async def test_a_failing_spool_disk_is_counted_as_a_disk_error(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    async with dead_influxdb() as writer:
        storage = Storage(writer, Spool(directory, BUDGET), lambda rejected: None)
        directory.rmdir()
        directory.write_bytes(b"")  # a file where the spool's folder was: every write fails
        with pytest.raises(NotDurable) as raised:
            await storage.store(batch("a"))
        failing = storage.stats
        directory.unlink()
        directory.mkdir()
        await storage.store(batch("b"))
        after = storage.stats
    assert raised.value.cause == DISK_ERROR
    assert isinstance(raised.value.__cause__, OSError)
    assert failing.unavailable_total == {SPOOL_FULL: 0, DISK_ERROR: 1}
    assert failing.unavailable_reason == f"spool disk error: {raised.value.__cause__}"
    assert not after.unavailable and after.spooled_total == 3


async def test_a_full_disk_is_a_disk_error_until_space_returns(tmp_path: Path) -> None:
    # ENOSPC from the real OS call path, without root: the spool's next temporary file is
    # a link to /dev/full, where every write fails so. Its twin, EFBIG from a file size
    # limit, is what tests/faults/test_disk_faults.py makes the service process meet.
    directory = tmp_path / "spool"
    async with dead_influxdb() as writer:
        storage = Storage(writer, Spool(directory, BUDGET), lambda rejected: None)
        first = directory / f"{1:0{SEQUENCE_DIGITS}d}{SEGMENT_SUFFIX}{TEMP_SUFFIX}"
        first.symlink_to("/dev/full")
        with pytest.raises(NotDurable) as raised:
            await storage.store(batch("a"))
        full = storage.stats
        assert not first.is_symlink()  # the failed write cleaned up after itself: room again
        await storage.store(batch("b"))
        after = storage.stats
    assert raised.value.cause == DISK_ERROR
    assert full.unavailable_total == {SPOOL_FULL: 0, DISK_ERROR: 1}
    assert full.unavailable_reason == "spool disk error: [Errno 28] No space left on device"
    assert full.spool_segments == 0
    assert not after.unavailable and (after.spooled_total, after.spool_segments) == (3, 1)


async def test_the_drain_stops_promptly_while_waiting_for_work(harness: Harness) -> None:
    async with asyncio.timeout(DEADLINE_S), harness.draining():
        await asyncio.sleep(0)  # one loop turn: the drain is parked on its wait, then stopped


async def test_the_drain_stops_promptly_while_backing_off(tmp_path: Path) -> None:
    harness = Harness(tmp_path, backoff_initial_s=60.0)
    harness.spool.append(b"m v=1i 1")
    harness.writer.down = True
    async with asyncio.timeout(DEADLINE_S), harness.draining():
        await eventually(lambda: len(harness.writer.attempts) == 1, what="the first write")
    assert harness.spool.segments == 1


async def test_a_spool_left_by_an_earlier_run_is_drained_first(tmp_path: Path) -> None:
    Spool(tmp_path / "spool", BUDGET).append("\n".join(batch("earlier")).encode())
    harness = Harness(tmp_path)
    await harness.storage.store(batch("now"))
    async with harness.draining():
        await eventually(lambda: harness.spool.empty, what="the spool drained")
    assert harness.writer.written == batch("earlier") + batch("now")
