"""The persistent outbox of webhook deliveries (the worker that attempts them: `rules.delivery`).

A delivery is one notification's body for one receiver. It is written to SQLite before any
attempt, keeps its id (the `X-Siaga-Delivery` header) for every attempt, and leaves the
pending state only when delivered or dead. A restart loses nothing: whatever was pending or
in flight is simply due again (at least once; receivers deduplicate by the delivery id).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from siaga_core.sqlitestore import SqliteStore

if TYPE_CHECKING:
    from sqlite3 import Connection

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


class Outbox(SqliteStore):
    """The SQLite table of deliveries.

    A `SqliteStore` by inheritance: the store is its file, and what it adds is only its
    schema and queries (open, transactions, errors and close are the shell's). An enqueued
    notification is a promise to tell operators: hence the shell's synchronous=FULL, so a
    power loss cannot take it back. Blocking: call it through `asyncio.to_thread`.
    """

    # 1: the schema as first written; IF NOT EXISTS, so a file from before versions (0)
    # just gains version 1.
    MIGRATIONS = (_SCHEMA,)

    def __init__(self, path: Path, clock_ns: Callable[[], int] = time.time_ns) -> None:
        super().__init__(path)
        self._clock_ns = clock_ns

    def enqueue(self, receiver_name: str, fingerprint: str, body: bytes, created_ns: int) -> str:
        """Store one delivery, due at once; its id is the X-Siaga-Delivery of every attempt."""
        return self.enqueue_many([(receiver_name, fingerprint, body)], created_ns)[0]

    def enqueue_many(self, items: Sequence[tuple[str, str, bytes]], created_ns: int) -> list[str]:
        """Store (receiver, fingerprint, body) deliveries in one transaction: all or none."""
        ids = [uuid.uuid4().hex for _ in items]
        rows = [(delivery_id, receiver, fingerprint, body, created_ns, created_ns)
                for delivery_id, (receiver, fingerprint, body) in zip(ids, items, strict=True)]
        with self.transaction() as db:
            db.executemany("INSERT INTO deliveries (id, receiver, fingerprint, body, created_at,"
                           " state, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)", rows)
        return ids

    def due(self, now_ns: int, limit: int, exclude: Collection[str] = ()) -> list[Delivery]:
        """Deliveries to attempt now: per (receiver, alert) only the oldest pending one.

        `exclude` names deliveries in flight: they are left out, and their alert's later
        deliveries wait behind them.
        """
        query = _heads(exclude) + " AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.seq"
        rows = self.read(query + " LIMIT ?", (*exclude, now_ns, limit))
        return [Delivery(*row) for row in rows]

    def next_due_ns(self, exclude: Collection[str] = ()) -> int | None:
        """When the next attempt is due (outside `exclude`), or None when nothing waits."""
        rows = self.read(f"SELECT MIN(next_attempt_at) FROM ({_heads(exclude)})", exclude)
        return None if not rows else rows[0][0]

    def get(self, delivery_id: str) -> Delivery | None:
        rows = self.read(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,))
        return Delivery(*rows[0]) if rows else None

    def mark_delivered(self, delivery_id: str, now_ns: int) -> None:
        self._finish(delivery_id, "delivered", None, now_ns, attempted=True)

    def hurry(self, receiver_name: str, now_ns: int) -> int:
        """Make every delivery to `receiver_name` waiting on a backoff due now; how many.

        Called when the receiver took a delivery: it is back, and what piled up while it
        was down should not wait out backoffs grown during the outage.
        """
        with self.transaction() as db:
            return db.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE receiver = ?"
                " AND state = 'pending' AND next_attempt_at > ?",
                (now_ns, receiver_name, now_ns),
            ).rowcount

    def mark_retry(self, delivery_id: str, next_attempt_ns: int, error: str) -> None:
        """An attempt failed and may succeed later: try again at `next_attempt_ns`."""
        with self.transaction() as db:
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
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE deliveries SET state = ?, finished_at = ?, attempts = attempts + ?,"
                " last_error = COALESCE(?, last_error) WHERE id = ? AND state = 'pending'",
                (state, now_ns, int(attempted), error, delivery_id),
            ).rowcount
            _count(db, state, changed)

    def dead(self, limit: int = 50) -> list[Delivery]:
        """Dead deliveries, the most recently given up first."""
        rows = self.read(f"SELECT {_COLUMNS} FROM deliveries WHERE state = 'dead'"
                            " ORDER BY finished_at DESC, seq DESC LIMIT ?", (limit,))
        return [Delivery(*row) for row in rows]

    def pending_count(self) -> int:
        return int(self.read("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")[0][0])

    def oldest_pending_ns(self) -> int | None:
        """When the oldest delivery still pending was created; None when none is."""
        rows = self.read("SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'")
        return None if rows[0][0] is None else int(rows[0][0])

    def counts_by_outcome(self) -> dict[str, int]:
        """Totals since the outbox was created: delivered, retried (attempts), dead."""
        counts = dict.fromkeys(OUTCOMES, 0)
        counts.update(self.read("SELECT outcome, count FROM delivery_outcomes"))
        return counts

    def prune(self, before_ns: int) -> int:
        """Forget delivered deliveries finished before `before_ns`; dead ones are kept."""
        with self.transaction() as db:
            return db.execute("DELETE FROM deliveries WHERE state = 'delivered'"
                              " AND finished_at < ?", (before_ns,)).rowcount


def _heads(exclude: Collection[str]) -> str:
    return f"{_HEADS} WHERE d.id NOT IN ({', '.join('?' * len(exclude))})"


def _count(db: Connection, outcome: str, changed: int) -> None:
    # Counted in the same transaction as the change: /metrics counters never disagree with
    # the rows, and they survive restarts and pruning.
    if changed:
        db.execute("INSERT INTO delivery_outcomes (outcome, count) VALUES (?, ?)"
                   " ON CONFLICT (outcome) DO UPDATE SET count = count + excluded.count",
                   (outcome, changed))
