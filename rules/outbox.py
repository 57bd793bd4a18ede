"""The persistent outbox of webhook deliveries (the worker that attempts them: `rules.delivery`).

A delivery is one notification's body for one receiver. It is written to the outbox before
any attempt, keeps its id (the `X-Siaga-Delivery` header) for every attempt, and leaves the
pending state only when delivered or dead. A restart loses nothing: whatever was pending or
in flight is simply due again (at least once; receivers deduplicate by the delivery id).

The outbox lives in SQLite in the data directory (the default, one instance) or in a
PostgreSQL several instances share (`alerting.database_url`), as Alertmanager's peers share
a notification log: every instance delivers, and a delivery is *claimed* by one at a time
for a lease long enough for one attempt. An instance that dies leaves its claims to run
out; another then delivers them, with the same delivery id.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self

from siaga_core import sqlbackend
from siaga_core.sqlbackend import Backend, Dialect, SharedStore, SqliteBackend, Tx

OUTCOMES = ("delivered", "retried", "dead")  # what counts_by_outcome counts, for /metrics
SCHEMA_TABLE = "outbox_schema"  # PostgreSQL's stand-in for SQLite's user_version
LOCK_PREFIX = "siaga.outbox"  # keeps the outbox's advisory locks apart from other stores'
SETTING = "alerting.database_url"  # one database for the alert book and the outbox

# SQLite 1: the schema as first written; IF NOT EXISTS, so a file from before versions (0)
# just gains version 1. Kept word for word: files in the field were made by it.
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
# SQLite 2: claims. Who holds a delivery's attempt, and until when (wall ns); NULL: nobody.
_CLAIMS = """
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE deliveries ADD COLUMN claimed_until INTEGER;
"""
# SQLite 3, PostgreSQL 2: the earliest time a receiver's Retry-After allows the next attempt
# (wall ns; NULL: no such request). `hurry` keeps it: a receiver back for one alert may
# still be rate-limiting another.
_NOT_BEFORE = "ALTER TABLE deliveries ADD COLUMN not_before {bigint}"
# PostgreSQL 1: the schema as SQLite has it after its migrations (BIGINT for wall ns).
_POSTGRES_SCHEMA = """
CREATE TABLE deliveries (
    seq {serial},
    id TEXT NOT NULL UNIQUE,
    receiver TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    body {blob} NOT NULL,
    created_at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    finished_at BIGINT,
    claimed_by TEXT,
    claimed_until BIGINT
);
CREATE INDEX deliveries_queue ON deliveries (state, receiver, fingerprint, seq);
CREATE INDEX deliveries_finished ON deliveries (state, finished_at);
CREATE TABLE delivery_outcomes (outcome TEXT PRIMARY KEY, count BIGINT NOT NULL);
"""
POSTGRES_MIGRATIONS: Final[tuple[str, ...]] = (_POSTGRES_SCHEMA,
                                                _NOT_BEFORE.format(bigint="BIGINT"))

_COLUMNS = ("id, receiver, fingerprint, body, created_at, state, attempts, next_attempt_at,"
            " last_error, finished_at, claimed_by, claimed_until")
_ROW = f"d.seq, {', '.join('d.' + name.strip() for name in _COLUMNS.split(','))}"
# The oldest pending delivery of each (receiver, alert): only it may be attempted, so one
# alert's notifications reach a receiver in order. `seq` first, then a Delivery's columns.
_HEADS = (
    "WITH heads AS (SELECT MIN(seq) AS seq FROM deliveries WHERE state = 'pending'"
    " GROUP BY receiver, fingerprint)"
    f" SELECT {_ROW} FROM deliveries AS d JOIN heads USING (seq)"
)
# A head is due when its time has come and no live lease holds it. `state` is asked again
# on `d` itself: PostgreSQL re-reads a row another instance changed meanwhile before it
# locks it, and must then see that it was delivered in between.
_DUE = (f"{_HEADS} WHERE d.state = 'pending' AND d.next_attempt_at <= ?"
        " AND (d.claimed_until IS NULL OR d.claimed_until <= ?)")
_EARLIEST = " ORDER BY d.next_attempt_at, d.seq LIMIT ?"
# `_DUE` for rows the caller names (`d.id IN ...`, just stored): each asked whether an
# older pending delivery of its (receiver, alert) is ahead of it, which the queue index
# answers, rather than through `_HEADS`, which reads every pending row. A receiver down
# for hours leaves thousands, and this runs at each page: 56 ms at 50,000 pending
# deliveries, 0.25 ms this way (SQLite, a review's measurement).
_NEW_DUE = (
    f"SELECT {_ROW} FROM deliveries AS d WHERE d.state = 'pending' AND d.next_attempt_at <= ?"
    " AND (d.claimed_until IS NULL OR d.claimed_until <= ?)"
    " AND NOT EXISTS (SELECT 1 FROM deliveries AS o WHERE o.state = 'pending'"
    " AND o.receiver = d.receiver AND o.fingerprint = d.fingerprint AND o.seq < d.seq)"
)
# A finish counts only while the delivery is pending and no other instance holds it: a
# late finisher whose lease ran out and whose delivery another instance claimed since
# changes nothing (that one's own attempt decides), so no outcome is counted twice.
_MINE = "id = ? AND state = 'pending' AND (claimed_by IS NULL OR claimed_by = ?)"
_UNCLAIM = "claimed_by = NULL, claimed_until = NULL"

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
    claimed_by: str | None = None  # the instance (Outbox.owner) attempting it now, if any
    claimed_until_ns: int | None = None  # when that claim runs out (wall ns)


class OutboxSqlite(SqliteBackend):
    """The outbox in one SQLite file, the default.

    An enqueued notification is a promise to tell operators: hence the shell's
    synchronous=FULL, so a power loss cannot take it back.
    """

    MIGRATIONS: ClassVar[tuple[str, ...]] = (_SCHEMA, _CLAIMS,
                                             _NOT_BEFORE.format(bigint="INTEGER"))


def open_backend(database_url: str | None, path: Path) -> Backend:
    """PostgreSQL when a URL is given (several instances share the outbox), else SQLite at
    `path`. Raises ConfigurationError naming `alerting.database_url` for a malformed URL."""
    return sqlbackend.open_backend(database_url, lambda: OutboxSqlite(path), SharedStore(
        "the outbox", POSTGRES_MIGRATIONS, SCHEMA_TABLE, LOCK_PREFIX, SETTING))


@dataclass(frozen=True, slots=True)
class Scope:
    """What one instance of several may claim: deliveries to the receivers it knows, and
    those to any other receiver once created at or before `foreign_before_ns`.

    Instances are restarted one at a time when a receiver is added, so for a while some
    enqueue deliveries to a receiver others have not heard of. One of those others must not
    take such a delivery and mark it dead as "no longer configured": it leaves it to the
    instances that know the receiver, and marks it dead only once it is older than any
    receiver's `max_age`, when nobody will send it (the receiver was removed everywhere).
    """

    receivers: frozenset[str]
    foreign_before_ns: int


def default_owner() -> str:
    """A claimer's id: host and process for operators reading the table, and a random part
    so that a restarted process (same pid in a container) never passes for the dead one."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class Outbox:
    """The table of deliveries, in SQLite (`path`) or a shared PostgreSQL (`database_url`).

    `owner` names this instance in its claims (default: `default_owner()`); two Outbox
    objects sharing a database must have different owners. `mark_delivered`, `mark_retry`
    and `mark_dead` clear the claim, and act only while no other owner holds one: an
    instance whose attempt outlived its lease, after another claimed the delivery, records
    nothing (the other's attempt decides; the receiver may see the id twice). Unclaimed
    deliveries may be finished by anyone. Blocking: call it through `asyncio.to_thread`.
    Every database error leaves as a `StorageError`.
    """

    def __init__(self, path: Path, clock_ns: Callable[[], int] = time.time_ns, *,
                 database_url: str | None = None, owner: str | None = None) -> None:
        self._backend = open_backend(database_url, path)
        self._clock_ns = clock_ns
        self.owner = owner or default_owner()
        if self._backend.dialect == "sqlite":
            try:
                self._release_stale()
            except BaseException:
                self._backend.close()
                raise

    def _release_stale(self) -> None:
        # A SQLite file is one instance's (its data directory's), so a claim found at open
        # is a previous run's, dead with it: what it held is due now, as before claims. Read
        # first: a file without claims is not written to (another process may hold it).
        if self._backend.read("SELECT 1 FROM deliveries WHERE claimed_by IS NOT NULL LIMIT 1"):
            self._backend.run(lambda tx: tx.execute(
                f"UPDATE deliveries SET {_UNCLAIM} WHERE claimed_by IS NOT NULL"))

    @property
    def dialect(self) -> Dialect:
        return self._backend.dialect

    @property
    def schema_version(self) -> int:
        """How many of the backend's migrations the database has had."""
        if isinstance(self._backend, SqliteBackend):
            return self._backend.schema_version
        return int(self._backend.read(f"SELECT version FROM {SCHEMA_TABLE}")[0][0])

    def describe(self) -> str:
        return self._backend.describe()

    def enqueue(self, receiver_name: str, fingerprint: str, body: bytes, created_ns: int) -> str:
        """Store one delivery, due at once; its id is the X-Siaga-Delivery of every attempt."""
        return self.enqueue_many([(receiver_name, fingerprint, body)], created_ns)[0]

    def enqueue_many(self, items: Sequence[tuple[str, str, bytes]], created_ns: int) -> list[str]:
        """Store (receiver, fingerprint, body) deliveries in one transaction: all or none."""
        ids = [uuid.uuid4().hex for _ in items]
        self._backend.run(lambda tx: _insert(tx, ids, items, created_ns))
        return ids

    def enqueue_claimed(self, items: Sequence[tuple[str, str, bytes]], created_ns: int,
                        now_ns: int, limit: int, lease_ns: int) -> tuple[list[str], list[Delivery]]:
        """`enqueue_many`, and in the same transaction `claim` (at `now_ns`, up to `limit`)
        those of the new deliveries that are due: the ids, and what was claimed.

        A page then goes from its rule to its POST with one commit and no look at the
        outbox between them. A new delivery behind an older pending one of its alert to
        the same receiver is not due (`claim`'s order), and is left for a later claim.
        """
        if limit <= 0:
            return self.enqueue_many(items, created_ns), []
        ids = [uuid.uuid4().hex for _ in items]

        def insert_and_take(tx: Tx) -> list[Delivery]:
            _insert(tx, ids, items, created_ns)
            return _take(tx, self.owner, now_ns, limit, now_ns + lease_ns,
                         f" AND d.id IN ({_marks(len(ids))})", tuple(ids), _NEW_DUE)

        return ids, self._backend.run(insert_and_take)

    def claim(self, now_ns: int, limit: int, lease_ns: int, exclude: Collection[str] = (),
              scope: Scope | None = None) -> list[Delivery]:
        """Claim up to `limit` deliveries to attempt now, for `lease_ns`; earliest due first.

        Per (receiver, alert) only the oldest pending one, and none that a live lease
        holds (its alert's later deliveries wait behind it). Claimed in the same
        transaction that found them. On PostgreSQL the rows are locked with SKIP LOCKED: two
        instances claiming at once never take the same delivery, nor wait on each other.

        `exclude` names this instance's attempts still in flight, left out as leased ones
        are: a finishing attempt clears its claim a moment before its worker forgets it, and
        an attempt stuck past its lease still holds its alert's place in line. `scope`, when
        given, leaves out the deliveries this instance cannot send (see `Scope`).
        """
        where, scoped = _scoped(scope)
        return self._backend.run(lambda tx: _take(
            tx, self.owner, now_ns, limit, now_ns + lease_ns,
            _not_in(exclude) + where, (*exclude, *scoped)))

    def release(self, delivery_ids: Collection[str]) -> int:
        """Give back this owner's claims on `delivery_ids` unattempted (a shutdown); how many."""
        if not delivery_ids:
            return 0
        return self._backend.run(lambda tx: len(tx.execute(
            f"UPDATE deliveries SET {_UNCLAIM} WHERE claimed_by = ?"
            f" AND id IN ({_marks(len(delivery_ids))}) RETURNING seq",
            (self.owner, *delivery_ids))))

    def due(self, now_ns: int, limit: int) -> list[Delivery]:
        """What `claim` would take now, without claiming it (for operators and tests)."""
        rows = self._backend.read(_DUE + _EARLIEST, (now_ns, now_ns, limit))
        return [_delivery(row[1:]) for row in rows]

    def next_due_ns(self, now_ns: int | None = None, exclude: Collection[str] = (),
                    scope: Scope | None = None) -> int | None:
        """When the next attempt is due (outside `exclude`, inside `scope` as `claim` takes
        it), or None when nothing waits.

        A head under a live lease counts as due when its lease runs out: if its claimer
        died, that is when another instance takes it over. A delivery `scope` leaves out
        for now is not counted: the caller's idle look finds it once it is old enough.
        """
        now = self._clock_ns() if now_ns is None else now_ns
        where, scoped = _scoped(scope)
        rows = self._backend.read(
            "SELECT MIN(CASE WHEN claimed_until > ? THEN claimed_until ELSE next_attempt_at END)"
            f" FROM ({_HEADS} WHERE TRUE{_not_in(exclude)}{where}) AS h",
            (now, *exclude, *scoped))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def get(self, delivery_id: str) -> Delivery | None:
        rows = self._backend.read(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?",
                                  (delivery_id,))
        return _delivery(rows[0]) if rows else None

    def mark_delivered(self, delivery_id: str, now_ns: int) -> None:
        self._finish(delivery_id, "delivered", None, now_ns, attempted=True)

    def hurry(self, receiver_name: str, now_ns: int) -> int:
        """Make every delivery to `receiver_name` waiting on a backoff due now, or when its
        Retry-After allows; how many.

        Called when the receiver took a delivery: it is back, and what piled up while it
        was down should not wait out backoffs grown during the outage. What it asked to wait
        for (a 429 or 503 with Retry-After) it still waits for.
        """
        return self._backend.run(lambda tx: len(tx.execute(
            "UPDATE deliveries SET next_attempt_at = CASE WHEN not_before > ? THEN not_before"
            " ELSE ? END WHERE receiver = ? AND state = 'pending' AND next_attempt_at > ?"
            " AND (not_before IS NULL OR not_before < next_attempt_at) RETURNING seq",
            (now_ns, now_ns, receiver_name, now_ns))))

    def mark_retry(self, delivery_id: str, next_attempt_ns: int, error: str,
                   not_before_ns: int | None = None) -> None:
        """An attempt failed and may succeed later: try again at `next_attempt_ns`, and
        never before `not_before_ns` (what the receiver's Retry-After asked), if given."""

        def retry(tx: Tx) -> None:
            changed = tx.execute(
                f"UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?,"
                f" last_error = ?, not_before = ?, {_UNCLAIM} WHERE {_MINE} RETURNING seq",
                (next_attempt_ns, error, not_before_ns, delivery_id, self.owner))
            _count(tx, "retried", len(changed))

        self._backend.run(retry)

    def mark_dead(
        self, delivery_id: str, error: str, now_ns: int | None = None, *, attempted: bool = True
    ) -> None:
        """Give up on a delivery; it stays listed in `dead()` for operators."""
        when = self._clock_ns() if now_ns is None else now_ns
        self._finish(delivery_id, "dead", error, when, attempted=attempted)

    def _finish(
        self, delivery_id: str, state: State, error: str | None, now_ns: int, *, attempted: bool
    ) -> None:
        def finish(tx: Tx) -> None:
            changed = tx.execute(
                f"UPDATE deliveries SET state = ?, finished_at = ?, attempts = attempts + ?,"
                f" last_error = COALESCE(?, last_error), {_UNCLAIM} WHERE {_MINE} RETURNING seq",
                (state, now_ns, int(attempted), error, delivery_id, self.owner))
            _count(tx, state, len(changed))

        self._backend.run(finish)

    def dead(self, limit: int = 50) -> list[Delivery]:
        """Dead deliveries, the most recently given up first."""
        rows = self._backend.read(f"SELECT {_COLUMNS} FROM deliveries WHERE state = 'dead'"
                                  " ORDER BY finished_at DESC, seq DESC LIMIT ?", (limit,))
        return [_delivery(row) for row in rows]

    def pending_count(self) -> int:
        return int(self._backend.read(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")[0][0])

    def oldest_pending_ns(self) -> int | None:
        """When the oldest delivery still pending was created; None when none is."""
        rows = self._backend.read("SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'")
        return None if rows[0][0] is None else int(rows[0][0])

    def counts_by_outcome(self) -> dict[str, int]:
        """Totals since the outbox was created: delivered, retried (attempts), dead."""
        counts = dict.fromkeys(OUTCOMES, 0)
        counts.update((str(outcome), int(count)) for outcome, count in self._backend.read(
            "SELECT outcome, count FROM delivery_outcomes"))
        return counts

    def prune(self, before_ns: int) -> int:
        """Forget delivered deliveries finished before `before_ns`; dead ones are kept.

        Every instance sharing the outbox prunes: the DELETE is idempotent, so the second
        to run it finds nothing.
        """
        return self._backend.run(lambda tx: len(tx.execute(
            "DELETE FROM deliveries WHERE state = 'delivered' AND finished_at < ? RETURNING seq",
            (before_ns,))))

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _insert(tx: Tx, ids: Sequence[str], items: Sequence[tuple[str, str, bytes]],
            created_ns: int) -> None:
    # On PostgreSQL a sequence number is taken at INSERT but seen at COMMIT, so two
    # instances enqueueing news of one alert at once could commit the later number first,
    # and it would be delivered first. Taking turns per alert (in sorted order: no
    # deadlock) keeps numbers in commit order. SQLite: one writer anyway.
    for fingerprint in sorted({fingerprint for _, fingerprint, _ in items}):
        tx.serialize(f"enqueue:{fingerprint}")
    for delivery_id, (receiver, fingerprint, body) in zip(ids, items, strict=True):
        tx.execute("INSERT INTO deliveries (id, receiver, fingerprint, body, created_at,"
                   " state, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                   (delivery_id, receiver, fingerprint, body, created_ns, created_ns))


def _take(tx: Tx, owner: str, now_ns: int, limit: int, until_ns: int, where: str,
          parameters: tuple[object, ...], due: str = _DUE) -> list[Delivery]:
    """Claim for `owner` until `until_ns` up to `limit` due heads (`due`: `_DUE`, or
    `_NEW_DUE` for named rows) that also meet `where`, earliest first, in the transaction
    that found them."""
    locking = " FOR UPDATE OF d SKIP LOCKED" if tx.dialect == "postgresql" else ""
    rows = tx.execute(due + where + _EARLIEST + locking, (now_ns, now_ns, *parameters, limit))
    if rows:
        tx.execute(f"UPDATE deliveries SET claimed_by = ?, claimed_until = ?"
                   f" WHERE seq IN ({_marks(len(rows))})",
                   (owner, until_ns, *(row[0] for row in rows)))
    return [replace(_delivery(row[1:]), claimed_by=owner, claimed_until_ns=until_ns)
            for row in rows]


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _not_in(delivery_ids: Collection[str]) -> str:
    return f" AND d.id NOT IN ({_marks(len(delivery_ids))})" if delivery_ids else ""


def _scoped(scope: Scope | None) -> tuple[str, tuple[object, ...]]:
    """The condition (appended to a WHERE on `d`) and parameters of `scope`."""
    if scope is None:
        return "", ()
    known = tuple(scope.receivers)
    inside = f"d.receiver IN ({_marks(len(known))}) OR " if known else ""
    return f" AND ({inside}d.created_at <= ?)", (*known, scope.foreign_before_ns)


def _count(tx: Tx, outcome: str, changed: int) -> None:
    # Counted in the same transaction as the change: /metrics counters never disagree with
    # the rows, and they survive restarts and pruning.
    if changed:
        tx.execute("INSERT INTO delivery_outcomes (outcome, count) VALUES (?, ?)"
                   " ON CONFLICT (outcome) DO UPDATE"
                   " SET count = delivery_outcomes.count + excluded.count", (outcome, changed))
