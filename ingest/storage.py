"""The durable sink for line protocol: InfluxDB when it takes the lines, else the spool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ingest.influx import RejectedWriteError, RetryableWriteError, Writer
from ingest.spool import Segment, Spool, SpoolFull
from siaga_core.errors import StorageError
from siaga_core.histogram import Histogram, Snapshot

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 1.0  # a restarting InfluxDB is often back within a second or two
BACKOFF_MAX_S = 30.0  # an outage is noticed within half a minute of its end
PROBE_EVERY_S = 0.5  # while InfluxDB is unreachable, /ping it this often (a cheap request)
RETRY_AFTER_MAX_S = 300.0  # a Retry-After beyond five minutes is more likely a bug than a plan
# Why a batch could not be made durable (the `cause` label of the refusal counter).
SPOOL_FULL: Final = "spool-full"  # InfluxDB down and the spool at its byte budget
DISK_ERROR: Final = "disk-error"  # InfluxDB down and the spool's disk failing (ENOSPC, EIO)
UNAVAILABLE_CAUSES: Final = (SPOOL_FULL, DISK_ERROR)

Rejection = tuple[str, str]  # (line, InfluxDB's reason for refusing it)
# Called in a worker thread, as it is expected to write the lines to disk (as dead letters).
RejectedCallback = Callable[[list[Rejection]], None]


class NotDurable(StorageError):
    """Lines could be made durable neither in InfluxDB nor in the spool.

    `cause` is one of `UNAVAILABLE_CAUSES`; `reason` says what failed, short and without
    the batch's size, for `/readyz` and the StorageUnavailable alert.
    """

    def __init__(self, message: str, cause: str, reason: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What became of a batch: lines written, spooled, and rejected with a reason."""

    written: int = 0
    spooled: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StorageStats:
    """A snapshot of the storage counters, in lines."""

    written_total: int
    spooled_total: int
    rejected_total: int
    retryable_errors_total: int
    spool_segments: int
    spool_bytes: int
    last_write_latency_s: float | None
    # Stores refused as not durable (each retry of a batch counts), by cause: every one of
    # `UNAVAILABLE_CAUSES` is present.
    unavailable_total: Mapping[str, int] = field(default_factory=dict)
    # While readings cannot be made durable: why, and since when (time.time() of the first
    # refusal); both None once a store succeeds again.
    unavailable_reason: str | None = None
    unavailable_since: float | None = None
    spool_max_bytes: int | None = None  # the spool's budget (`spool.max_bytes`)
    write_duration: Snapshot | None = None  # seconds per InfluxDB write that succeeded

    @property
    def unavailable(self) -> bool:
        return self.unavailable_reason is not None


@dataclass(slots=True)
class _Progress:
    written: int = 0
    rejected: list[Rejection] = field(default_factory=list)


class _Interrupted(Exception):
    """A retryable failure part way through a batch; `remaining` keeps the order."""

    def __init__(
        self, progress: _Progress, remaining: list[str], cause: RetryableWriteError
    ) -> None:
        super().__init__(str(cause))
        self.progress = progress
        self.remaining = remaining
        self.cause = cause


class Storage:
    """Writes batches to InfluxDB, spools what it cannot write, and drains the spool in order.

    While the spool holds anything, new batches join its end rather than going straight to
    InfluxDB, so readings reach InfluxDB in the order they arrived. A batch InfluxDB
    refuses (400, 413, 422) is split in halves until the refused lines are alone; those are
    handed back with InfluxDB's message, so a single bad line costs no good ones.

    The drain hands the refused lines of spooled segments to `on_rejected`, in a worker
    thread; it must make them durable (as dead letters) before it returns, since the
    segment is removed right after.
    """

    def __init__(
        self,
        writer: Writer,
        spool: Spool,
        on_rejected: RejectedCallback,
        *,
        timer: Callable[[], float] = time.perf_counter,
        clock: Callable[[], float] = time.time,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self._writer = writer
        self._spool = spool
        self._on_rejected = on_rejected
        self._timer = timer
        self._clock = clock
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._appended = asyncio.Event()
        # One batch at a time: a second batch written directly while the first is being
        # spooled would overtake it.
        self._store_lock = asyncio.Lock()
        self._written_total = 0
        self._spooled_total = 0
        self._rejected_total = 0
        self._retryable_errors_total = 0
        self._last_write_latency_s: float | None = None
        self._write_duration = Histogram()
        self._unavailable_total = dict.fromkeys(UNAVAILABLE_CAUSES, 0)
        self._unavailable: tuple[str, float] | None = None  # (reason, since), until a store works

    @property
    def stats(self) -> StorageStats:
        return StorageStats(
            written_total=self._written_total,
            spooled_total=self._spooled_total,
            rejected_total=self._rejected_total,
            retryable_errors_total=self._retryable_errors_total,
            spool_segments=self._spool.segments,
            spool_bytes=self._spool.size_bytes,
            last_write_latency_s=self._last_write_latency_s,
            unavailable_total=dict(self._unavailable_total),
            unavailable_reason=None if self._unavailable is None else self._unavailable[0],
            unavailable_since=None if self._unavailable is None else self._unavailable[1],
            spool_max_bytes=self._spool.max_bytes,
            write_duration=self._write_duration.snapshot(),
        )

    async def store(self, lines: list[str]) -> StoreOutcome:
        """Make `lines` durable: written to InfluxDB, or appended to the spool.

        Rejected lines are returned for the caller to dead-letter. When the spool is full
        (or the disk fails) the lines cannot be made durable, and this raises
        `NotDurable` instead of dropping them: the caller must then not acknowledge
        the messages, so the broker keeps them and redelivers them later. Dropping the
        newest data, or evicting the oldest from the spool, would both lose readings that
        the broker can still hold for us. Lines written before the error are written again
        on redelivery, which InfluxDB turns into harmless overwrites.

        Each refusal is counted by cause, and `stats` tells why and since when until a
        store succeeds again.
        """
        if not lines:
            return StoreOutcome()
        async with self._store_lock:
            outcome = await self._store(lines)
            self._unavailable = None  # durable again: InfluxDB or the spool took the lines
            return outcome

    async def spool(self, lines: list[str]) -> StoreOutcome:
        """Make `lines` durable in the spool alone (a stop out of time for InfluxDB); the
        drain writes them, after what the spool already holds. `NotDurable` as `store`."""
        if not lines:
            return StoreOutcome()
        async with self._store_lock:
            await self._append(lines)
            self._unavailable = None
            return StoreOutcome(spooled=len(lines))

    async def _store(self, lines: list[str]) -> StoreOutcome:
        if not self._spool.empty:
            await self._append(lines)
            return StoreOutcome(spooled=len(lines))
        try:
            progress = await self._write_splitting(lines)
        except _Interrupted as stopped:
            log.warning("InfluxDB unavailable, spooling: %s", stopped.cause)
            await self._append(stopped.remaining)
            self._rejected_total += len(stopped.progress.rejected)
            return StoreOutcome(
                stopped.progress.written, len(stopped.remaining), stopped.progress.rejected
            )
        self._rejected_total += len(progress.rejected)
        return StoreOutcome(written=progress.written, rejected=progress.rejected)

    async def drain(self, stop: asyncio.Event) -> None:
        """Deliver the spool to InfluxDB, oldest segment first, until `stop` is set.

        A segment leaves the spool only after it is written (and its rejected lines are
        reported through `on_rejected`), so a crash at any point loses nothing. An error
        from `on_rejected` propagates: the segment then stays for the next run.
        """
        backoff = self._backoff_initial_s
        while not stop.is_set():
            if self._spool.empty:
                await self._wait_for_append(stop)
                continue
            failure = await self._drain_oldest()
            if failure is None:
                backoff = self._backoff_initial_s
                continue
            delay = _retry_delay(failure, backoff)
            backoff = min(backoff * 2, self._backoff_max_s)
            log.warning("spool drain paused for %.1f s: %s", delay, failure)
            if failure.status is None and failure.retry_after is None:
                await self._wait_for_server(stop, delay)  # unreachable: watch for its return
            else:
                await _wait(stop, delay)  # it answered: its errors are not fixed by a ping

    async def _wait_for_server(self, stop: asyncio.Event, delay: float) -> None:
        """Wait `delay`, or less: until InfluxDB answers its ping again.

        The backoff spares a server that keeps failing; a server that was simply away
        gets the spool as soon as it is back, not up to `backoff_max_s` later.
        """
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0 and not stop.is_set():
            await _wait(stop, min(PROBE_EVERY_S, left))
            if not stop.is_set() and await self._writer.ping():
                return

    async def _drain_oldest(self) -> RetryableWriteError | None:
        """Deliver the oldest segment; return the error that stopped it, if one did."""
        segment = await asyncio.to_thread(self._spool.oldest)
        if segment is None:
            return None
        lines = _split_lines(segment.body)
        try:
            progress = await self._write_splitting(lines)
        except _Interrupted as stopped:
            await self._keep_rest(segment, lines, stopped)
            return stopped.cause
        await self._report(progress.rejected)
        await asyncio.to_thread(self._spool.remove, segment)
        return None

    async def _keep_rest(self, segment: Segment, lines: list[str], stopped: _Interrupted) -> None:
        # Rewriting lines already written would be harmless, but shrinking the segment
        # keeps lines already dead-lettered from being dead-lettered again.
        await self._report(stopped.progress.rejected)
        if len(stopped.remaining) < len(lines):
            body = _join_lines(stopped.remaining)
            await asyncio.to_thread(self._spool.replace, segment, body)

    async def _report(self, rejected: list[Rejection]) -> None:
        if rejected:
            await asyncio.to_thread(self._on_rejected, rejected)
            self._rejected_total += len(rejected)

    async def _write_splitting(self, lines: list[str]) -> _Progress:
        """Write `lines`, halving refused chunks until each refused line stands alone.

        Raises `_Interrupted` on a retryable error, with the lines not yet dealt with.

        A refused chunk may have been written in part: InfluxDB 1.x stores every line it
        can parse and type-check and still answers 400 ("partial write: ... dropped=N"),
        naming only the first conflict, so which lines it dropped cannot be read from the
        answer. Halving sends those good lines again, which is harmless: InfluxDB keeps one
        point per series and timestamp, so the same line overwrites itself, and a line is
        counted written only once, in the chunk that was taken whole (tested against the
        real server in tests/integration/test_influx_partial_write.py).
        """
        progress = _Progress()
        pending = [lines]  # a stack of chunks, the next one on top
        while pending:
            chunk = pending.pop()
            try:
                await self._timed_write(chunk)
            except RejectedWriteError as exc:
                if len(chunk) == 1:
                    progress.rejected.append((chunk[0], exc.message))
                else:
                    middle = len(chunk) // 2
                    pending += [chunk[middle:], chunk[:middle]]
                continue
            except RetryableWriteError as exc:
                self._retryable_errors_total += 1
                remaining = chunk + [line for later in reversed(pending) for line in later]
                raise _Interrupted(progress, remaining, exc) from exc
            progress.written += len(chunk)
        return progress

    async def _timed_write(self, lines: list[str]) -> None:
        started = self._timer()
        await self._writer.write(_join_lines(lines))
        self._last_write_latency_s = elapsed = self._timer() - started
        self._write_duration.observe(elapsed)
        self._written_total += len(lines)

    async def _append(self, lines: list[str]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, _join_lines(lines))
        except (SpoolFull, OSError) as exc:
            raise self._refused(len(lines), exc) from exc
        self._spooled_total += len(lines)
        self._appended.set()

    def _refused(self, count: int, exc: SpoolFull | OSError) -> NotDurable:
        """Count a refusal and remember it (from its first occurrence) until a store works."""
        cause, reason = (SPOOL_FULL, str(exc)) if isinstance(exc, SpoolFull) else (
            DISK_ERROR, f"spool disk error: {exc}")
        self._unavailable_total[cause] += 1
        since = self._clock() if self._unavailable is None else self._unavailable[1]
        self._unavailable = (reason, since)
        return NotDurable(
            f"cannot store {count} lines: InfluxDB is not taking them and {exc}", cause, reason)

    async def _wait_for_append(self, stop: asyncio.Event) -> None:
        self._appended.clear()
        if not self._spool.empty:  # appended between the caller's check and the clear
            return
        waiters = [asyncio.ensure_future(self._appended.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def _retry_delay(exc: RetryableWriteError, backoff: float) -> float:
    # The server's own estimate beats our guess, in both directions.
    if exc.retry_after is not None:
        return max(0.0, min(exc.retry_after, RETRY_AFTER_MAX_S))
    return backoff


async def _wait(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def _join_lines(lines: list[str]) -> bytes:
    return "\n".join(lines).encode("utf-8")


def _split_lines(body: bytes) -> list[str]:
    # A damaged segment still goes out: InfluxDB refuses the bad lines, which get
    # dead-lettered, instead of the whole segment blocking the spool forever.
    return [line for line in body.decode("utf-8", errors="replace").split("\n") if line]
