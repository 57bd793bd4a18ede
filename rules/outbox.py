"""The persistent outbox of webhook deliveries, and the worker that delivers and retries them.

A delivery is one notification's body for one receiver. It is written to SQLite before any
attempt, keeps its id (the `X-Siaga-Delivery` header) for every attempt, and leaves the
pending state only when delivered or dead. A restart loses nothing: whatever was pending or
in flight is simply due again (at least once; receivers deduplicate by the delivery id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp

from rules.durations import format_duration, to_ns
from rules.routing import Receiver, Router
from rules.webhook import Outcome, describe, post

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
OUTCOMES = ("delivered", "retried", "dead")  # what counts_by_outcome counts, for /metrics

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- enqueue order: the order of one alert's news
    id TEXT NOT NULL UNIQUE,
    receiver TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (state, receiver, fingerprint, seq);
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (state, finished_at);
CREATE TABLE IF NOT EXISTS delivery_outcomes (outcome TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""

# The oldest pending delivery of each (receiver, alert): only it may be attempted, so one
# alert's notifications reach a receiver in order.
_COLUMNS = ("id, receiver, fingerprint, body, created_at, state, attempts, next_attempt_at,"
            " last_error, finished_at")
_HEADS = (
    "WITH heads AS (SELECT MIN(seq) AS seq FROM deliveries WHERE state = 'pending'"
    " GROUP BY receiver, fingerprint)"
    f" SELECT {', '.join('d.' + name.strip() for name in _COLUMNS.split(','))}"
    " FROM deliveries AS d JOIN heads USING (seq)"
)

State = Literal["pending", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification body for one receiver, and how its delivery is going."""

    id: str
    receiver: str
    fingerprint: str
    body: bytes
    created_ns: int
    state: State
    attempts: int
    next_attempt_ns: int
    last_error: str | None
    finished_ns: int | None


class Outbox:
    """The SQLite table of deliveries (WAL, synchronous=FULL, explicit transactions).

    Blocking: from async code call it through `asyncio.to_thread` (hence
    `check_same_thread=False`); a lock keeps one statement at a time.
    """

    def __init__(self, path: Path, clock_ns: Callable[[], int] = time.time_ns) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # An enqueued notification is a promise to tell operators: FULL fsyncs the WAL at
        # each commit, so a power loss cannot take it back.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def enqueue(self, receiver_name: str, fingerprint: str, body: bytes, created_ns: int) -> str:
        """Store one delivery, due at once; its id is the X-Siaga-Delivery of every attempt."""
        return self.enqueue_many([(receiver_name, fingerprint, body)], created_ns)[0]

    def enqueue_many(self, items: Sequence[tuple[str, str, bytes]], created_ns: int) -> list[str]:
        """Store (receiver, fingerprint, body) deliveries in one transaction: all or none."""
        ids = [uuid.uuid4().hex for _ in items]
        rows = [(delivery_id, receiver, fingerprint, body, created_ns, created_ns)
                for delivery_id, (receiver, fingerprint, body) in zip(ids, items, strict=True)]
        with self._transaction() as db:
            db.executemany("INSERT INTO deliveries (id, receiver, fingerprint, body, created_at,"
                           " state, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)", rows)
        return ids

    def due(self, now_ns: int, limit: int, exclude: Collection[str] = ()) -> list[Delivery]:
        """Deliveries to attempt now: per (receiver, alert) only the oldest pending one.

        `exclude` names deliveries in flight: they are left out, and their alert's later
        deliveries wait behind them.
        """
        query = _heads(exclude) + " AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.seq"
        rows = self._select(query + " LIMIT ?", (*exclude, now_ns, limit))
        return [Delivery(*row) for row in rows]

    def next_due_ns(self, exclude: Collection[str] = ()) -> int | None:
        """When the next attempt is due (outside `exclude`), or None when nothing waits."""
        rows = self._select(f"SELECT MIN(next_attempt_at) FROM ({_heads(exclude)})", exclude)
        return None if not rows else rows[0][0]

    def get(self, delivery_id: str) -> Delivery | None:
        rows = self._select(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,))
        return Delivery(*rows[0]) if rows else None

    def mark_delivered(self, delivery_id: str, now_ns: int) -> None:
        self._finish(delivery_id, "delivered", None, now_ns, attempted=True)

    def hurry(self, receiver_name: str, now_ns: int) -> int:
        """Make every delivery to `receiver_name` waiting on a backoff due now; how many.

        Called when the receiver took a delivery: it is back, and what piled up while it
        was down should not wait out backoffs grown during the outage.
        """
        with self._transaction() as db:
            return db.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE receiver = ?"
                " AND state = 'pending' AND next_attempt_at > ?",
                (now_ns, receiver_name, now_ns),
            ).rowcount

    def mark_retry(self, delivery_id: str, next_attempt_ns: int, error: str) -> None:
        """An attempt failed and may succeed later: try again at `next_attempt_ns`."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ? WHERE id = ? AND state = 'pending'",
                (next_attempt_ns, error, delivery_id),
            ).rowcount
            _count(db, "retried", changed)

    def mark_dead(
        self, delivery_id: str, error: str, now_ns: int | None = None, *, attempted: bool = True
    ) -> None:
        """Give up on a delivery; it stays listed in `dead()` for operators."""
        when = self._clock_ns() if now_ns is None else now_ns
        self._finish(delivery_id, "dead", error, when, attempted=attempted)

    def _finish(
        self, delivery_id: str, state: State, error: str | None, now_ns: int, *, attempted: bool
    ) -> None:
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE deliveries SET state = ?, finished_at = ?, attempts = attempts + ?,"
                " last_error = COALESCE(?, last_error) WHERE id = ? AND state = 'pending'",
                (state, now_ns, int(attempted), error, delivery_id),
            ).rowcount
            _count(db, state, changed)

    def dead(self, limit: int = 50) -> list[Delivery]:
        """Dead deliveries, the most recently given up first."""
        rows = self._select(f"SELECT {_COLUMNS} FROM deliveries WHERE state = 'dead'"
                            " ORDER BY finished_at DESC, seq DESC LIMIT ?", (limit,))
        return [Delivery(*row) for row in rows]

    def pending_count(self) -> int:
        return int(self._select("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")[0][0])

    def counts_by_outcome(self) -> dict[str, int]:
        """Totals since the outbox was created: delivered, retried (attempts), dead."""
        counts = dict.fromkeys(OUTCOMES, 0)
        counts.update(self._select("SELECT outcome, count FROM delivery_outcomes"))
        return counts

    def prune(self, before_ns: int) -> int:
        """Forget delivered deliveries finished before `before_ns`; dead ones are kept."""
        with self._transaction() as db:
            return db.execute("DELETE FROM deliveries WHERE state = 'delivered'"
                              " AND finished_at < ?", (before_ns,)).rowcount

    def _select(self, query: str, params: Iterable[object] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(query, tuple(params)).fetchall()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _heads(exclude: Collection[str]) -> str:
    return f"{_HEADS} WHERE d.id NOT IN ({', '.join('?' * len(exclude))})"


def _count(db: sqlite3.Connection, outcome: str, changed: int) -> None:
    # Counted in the same transaction as the change: /metrics counters never disagree with
    # the rows, and they survive restarts and pruning.
    if changed:
        db.execute("INSERT INTO delivery_outcomes (outcome, count) VALUES (?, ?)"
                   " ON CONFLICT (outcome) DO UPDATE SET count = count + excluded.count",
                   (outcome, changed))


Receivers = Router | Mapping[str, Receiver]
SessionFactory = Callable[[], aiohttp.ClientSession]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How the deliverer retries and paces itself; tests shrink the times."""

    backoff_initial_s: float = 1.0  # attempt n waits up to initial * 2^(n-1), fully jittered
    # Alertmanager's cap too; and a receiver's first success makes the rest due at once.
    backoff_max_s: float = 60.0
    concurrency: int = 8  # attempts at once: alerts and receivers never wait on each other
    idle_s: float = 60.0  # look at the outbox at least this often, whatever the clock did
    drain_s: float = 5.0  # at shutdown, attempts in flight get this long; the rest wait
    keep_delivered_s: float = 7 * 86400.0  # a week of delivered bodies to look into
    prune_every_s: float = 3600.0  # pruning is a cheap indexed delete; hourly is plenty

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")

    def backoff_s(self, attempts: int, rng: random.Random) -> float:
        """The wait after the `attempts`-th failed attempt (1 for the first)."""
        # Full jitter (uniform from 0) spreads the retries of many alerts after an outage.
        exponent = min(max(attempts - 1, 0), 32)  # 2^32 s is past any cap: stop growing
        return rng.uniform(0, min(self.backoff_max_s, self.backoff_initial_s * 2.0**exponent))


class Deliverer:
    """Delivers due deliveries, applying each attempt's outcome (the retry stage).

    Concurrent across alerts and receivers (up to `policy.concurrency`), in order within one
    alert for one receiver. A retryable failure waits the jittered backoff or the receiver's
    `Retry-After`, whichever is longer; a delivery older than its receiver's `max_age`, or
    refused for good (4xx), is dead.
    """

    def __init__(
        self,
        outbox: Outbox,
        receivers: Receivers,
        session_factory: SessionFactory = aiohttp.ClientSession,
        clock_ns: Callable[[], int] = time.time_ns,
        *,
        policy: DeliveryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._receivers = receivers
        self._session_factory = session_factory
        self._clock_ns = clock_ns
        self._policy = policy or DeliveryPolicy()
        self._rng = rng or random.Random()
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._pruned_ns: int | None = None

    def wake(self) -> None:
        """Something was enqueued: look now. Safe to call from any thread."""
        if self._loop is not None:  # not running: run() starts by looking at the outbox
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then give attempts in flight `drain_s` to finish."""
        self._loop = asyncio.get_running_loop()
        try:
            async with self._session_factory() as session, asyncio.TaskGroup() as group:
                group.create_task(self._wake_on(stop))
                while not stop.is_set():
                    self._wakeup.clear()
                    await self._start_due(session, group)
                    await self._maybe_prune()
                    await self._sleep()
                await self._drain()
        finally:
            self._loop = None

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    async def _start_due(self, session: aiohttp.ClientSession, group: asyncio.TaskGroup) -> None:
        free = self._policy.concurrency - len(self._in_flight)
        if free <= 0:
            return
        now, busy = self._clock_ns(), tuple(self._in_flight)
        for delivery in await asyncio.to_thread(self._outbox.due, now, free, busy):
            self._in_flight[delivery.id] = group.create_task(self._attempt(session, delivery))

    async def _sleep(self) -> None:
        timeout = self._policy.idle_s
        if len(self._in_flight) < self._policy.concurrency:
            next_ns = await asyncio.to_thread(self._outbox.next_due_ns, tuple(self._in_flight))
            if next_ns is not None:
                wait_s = (next_ns - self._clock_ns()) / _NS_PER_S
                timeout = min(self._policy.idle_s, max(0.0, wait_s))
        # Woken early by wake(), by a finished attempt (its alert's next delivery may be
        # due) and by stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        _, unfinished = await asyncio.wait(self._in_flight.values(), timeout=self._policy.drain_s)
        for task in unfinished:
            task.cancel()  # still pending in the outbox: attempted again after the restart

    async def _maybe_prune(self) -> None:
        now = self._clock_ns()
        every_ns = int(self._policy.prune_every_s * _NS_PER_S)
        if self._pruned_ns is not None and now - self._pruned_ns < every_ns:
            return
        self._pruned_ns = now
        keep_ns = int(self._policy.keep_delivered_s * _NS_PER_S)
        await asyncio.to_thread(self._outbox.prune, now - keep_ns)

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        try:
            await self._attempt_once(session, delivery)
        except Exception:
            # One delivery's trouble (a full disk, a bug) must not stop the others. It stays
            # pending; holding its slot for the idle interval keeps it from spinning.
            log.exception("delivery %s to %s failed unexpectedly", delivery.id, delivery.receiver)
            await asyncio.sleep(self._policy.idle_s)
        finally:
            self._in_flight.pop(delivery.id, None)
            self._wakeup.set()

    async def _attempt_once(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        receivers = self._receivers
        receiver = (receivers.receiver(delivery.receiver) if isinstance(receivers, Router)
                    else receivers.get(delivery.receiver))
        if receiver is None:
            gone = f"receiver {delivery.receiver!r} is no longer configured"
            return await self._dead(delivery, gone, attempted=False)
        deadline_ns = delivery.created_ns + to_ns(receiver.max_age)
        if self._clock_ns() >= deadline_ns:
            old = (f"older than max_age {format_duration(receiver.max_age)}"
                   f" (last error: {delivery.last_error or 'never attempted'})")
            return await self._dead(delivery, old, attempted=False)
        outcome = await post(session, receiver, delivery.id, delivery.body,
                             self._clock_ns() / _NS_PER_S)
        await self._apply(delivery, receiver, outcome, deadline_ns)

    async def _apply(
        self, delivery: Delivery, receiver: Receiver, outcome: Outcome, deadline_ns: int
    ) -> None:
        attempt = delivery.attempts + 1
        if outcome.kind == "delivered":
            log.info("delivered %s to %s (attempt %d)", delivery.id, describe(receiver), attempt)
            await asyncio.to_thread(self._outbox.mark_delivered, delivery.id, self._clock_ns())
            await asyncio.to_thread(self._outbox.hurry, delivery.receiver, self._clock_ns())
            return
        if outcome.kind == "failed":
            return await self._dead(delivery, f"{outcome.reason} (not retried)", attempted=True)
        delay_s = max(outcome.retry_after_s or 0.0, self._policy.backoff_s(attempt, self._rng))
        next_ns = self._clock_ns() + int(delay_s * _NS_PER_S)
        if next_ns >= deadline_ns:
            late = f"{outcome.reason}; no attempt left within {format_duration(receiver.max_age)}"
            return await self._dead(delivery, late, attempted=True)
        log.warning("delivery %s to %s failed (attempt %d): %s; retrying in %.1fs",
                    delivery.id, describe(receiver), attempt, outcome.reason, delay_s)
        await asyncio.to_thread(self._outbox.mark_retry, delivery.id, next_ns, outcome.reason)

    async def _dead(self, delivery: Delivery, error: str, *, attempted: bool) -> None:
        log.error("delivery %s to %s is dead: %s", delivery.id, delivery.receiver, error)
        await asyncio.to_thread(self._outbox.mark_dead, delivery.id, error, self._clock_ns(),
                                attempted=attempted)
