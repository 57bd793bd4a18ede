"""The shell every SQLite store stands on: open, migrate, one transaction at a time, close.

Each store (dead letters, the alert book, the outbox) is one file holding a promise: a message
acknowledged to the broker, a page told, a delivery enqueued. So every file is opened the same
way: WAL, `synchronous=FULL`, explicit transactions, one lock, and a schema that says its
version (`PRAGMA user_version`) so that a later release can change it in place.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Self

from siaga_core.errors import StorageError


class SqliteStore:
    """One SQLite file: WAL; synchronous=FULL; explicit transactions; one lock; schema by version.

    A store subclasses this and names its schema in `MIGRATIONS`: `MIGRATIONS[i]` is an SQL
    script that takes `user_version` i to i + 1. Opening applies the ones a file lacks, in one
    transaction; a file already up to date is not written to (so a file another process holds
    locked still opens). A file from a newer release, with more migrations than this one
    knows, is refused rather than misread.

    Blocking: from async code call it through `asyncio.to_thread` (hence
    `check_same_thread=False`); the lock makes callers from several threads take turns, one
    transaction or one read at a time. Every `sqlite3.Error` leaves as a
    `siaga_core.errors.StorageError` naming the file and keeping sqlite's own words
    ("database is locked", "disk I/O error"), which operators and the fault tests look for.
    """

    MIGRATIONS: ClassVar[tuple[str, ...]]
    # sqlite3's default: a writer waits this long for another's lock before "database is
    # locked". The locked-file fault tests rely on it; explicit, so it stays put (a test of
    # the shell itself may wait less).
    BUSY_TIMEOUT_S: ClassVar[float] = 5.0

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        try:
            # Transactions are begun explicitly (isolation_level=None): one unit, one commit.
            self._db = sqlite3.connect(path, timeout=self.BUSY_TIMEOUT_S,
                                       check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            self._fail(exc)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # With WAL, synchronous=NORMAL fsyncs only at checkpoints, so a power loss or an
            # OS crash could take back a committed promise; FULL fsyncs the WAL at every
            # commit, which is what "durable before the ack (the page, the delivery)" needs.
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                self._fail(exc)
            raise

    @property
    def path(self) -> Path:
        return self._path

    @property
    def schema_version(self) -> int:
        """The file's `user_version`: how many of `MIGRATIONS` it has had."""
        version: int = self.read("PRAGMA user_version")[0][0]
        return version

    def _migrate(self) -> None:
        known = len(self.MIGRATIONS)
        # Read first, outside a transaction: an up-to-date file needs no write lock.
        version = self._user_version()
        if version == known:
            return
        with self.transaction() as db:
            version = self._user_version()  # another process may have migrated meanwhile
            if version > known:
                raise StorageError(f"{self._path}: schema version {version} is newer than the"
                                   f" {known} this Siaga knows; use a newer release")
            for migration in self.MIGRATIONS[version:]:
                # Not executescript: it would commit the open transaction first.
                for statement in _statements(migration):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {known}")

    def _user_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One exclusive unit of work (BEGIN IMMEDIATE): committed whole, or rolled back.

        IMMEDIATE takes the write lock at the start, so a transaction that reads and then
        writes cannot be refused halfway for a lock another writer took meanwhile.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (a full disk) can leave the transaction open; a failed
                    # statement may already have rolled it back. Either way: nothing of it.
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._fail(exc)

    def read(self, query: str, params: Iterable[object] = ()) -> list[Any]:
        """All rows of one query, taken in turn with the transactions."""
        with self._lock:
            try:
                return self._db.execute(query, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                self._fail(exc)

    def _fail(self, exc: sqlite3.Error) -> NoReturn:
        raise StorageError(f"{self._path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, each whole (a `;` in a string or a trigger is kept)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending
