"""Where the report book keeps its rows: SQLite in the data directory, or a shared PostgreSQL.

Both run the same SQL (`?` placeholders; PostgreSQL's are rewritten to `%s`) through one
small interface: `run(work)` does `work(tx)` in one transaction, committed (durable) before
it returns, and `read` runs one query. Every database error leaves as a
`siaga_core.errors.StorageError` naming the database, never its password.

PostgreSQL: a small pool of connections (psycopg_pool), so that the threads the service
calls the book from commit side by side rather than queue behind one connection. A
connection found broken is dropped by the pool; a unit of work that failed on a broken
connection before its COMMIT was sent is run once more on another, so a restarted server
costs no error. A failure during COMMIT is not retried: it may have committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from reports.schema import MIGRATIONS, render, statements
from siaga_core.errors import ConfigurationError, StorageError
from siaga_core.sqlitestore import SqliteStore

if TYPE_CHECKING:
    import sqlite3

T = TypeVar("T")
Row = tuple[Any, ...]
CONNECT_TIMEOUT_S = 10  # a PostgreSQL that does not answer in 10 s is down, not slow
# Connections per book: the service's default thread pool runs a handful of book calls at
# once; more connections would only wait on the same disk's commits.
POOL_SIZE = 4
SCHEMA_TABLE = "report_book_schema"  # PostgreSQL's stand-in for SQLite's user_version


class Tx(Protocol):
    """One transaction: statements, and a lock for a read-then-write that must not race."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement; its rows (none for a statement without RETURNING)."""
        ...

    def serialize(self, key: str) -> None:
        """Hold `key` until the transaction ends: others serializing on it wait."""
        ...


class Backend(Protocol):
    def run(self, work: Callable[[Tx], T]) -> T: ...

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class _SqliteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def serialize(self, key: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the file's only write lock."""


class SqliteBackend(SqliteStore):
    """The embedded default: one file, WAL and synchronous=FULL (siaga_core.sqlitestore)."""

    MIGRATIONS: ClassVar[tuple[str, ...]] = tuple(render(m, "sqlite") for m in MIGRATIONS)

    def run(self, work: Callable[[Tx], T]) -> T:
        with self.transaction() as db:
            return work(_SqliteTx(db))

    def describe(self) -> str:
        return f"SQLite {self.path}"


class _PostgresTx:
    def __init__(self, cursor: psycopg.Cursor[Row]) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        self._cursor.execute(_postgres_sql(sql), tuple(params))
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def serialize(self, key: str) -> None:
        # A transaction-scoped advisory lock: released by COMMIT or ROLLBACK, even when the
        # client dies. Keys are prefixed so another application's locks do not collide.
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
                     (f"siaga.reports:{key}",))


def _postgres_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresBackend:
    """A PostgreSQL database several Siaga instances share (reports.database_url)."""

    def __init__(self, url: str) -> None:
        self._where = _describe_url(url)
        # autocommit: no transaction is left open between calls; `run` opens each one.
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url, min_size=1, max_size=POOL_SIZE, open=False, timeout=CONNECT_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            name="siaga-reports")
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            self.run(self._migrate)
        except psycopg.Error as exc:
            self.close()
            self._fail(exc)
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        return f"PostgreSQL {self._where}"

    def run(self, work: Callable[[Tx], T]) -> T:
        for attempt in (1, 2):
            committing = False
            try:
                with self._pool.connection() as conn:
                    try:
                        with conn.transaction(), conn.cursor() as cursor:
                            result = work(_PostgresTx(cursor))
                            committing = True
                        return result
                    except psycopg.Error:
                        if conn.broken and not committing and attempt == 1:
                            continue  # the server went away before COMMIT: nothing was done
                        raise
            except psycopg.Error as exc:
                self._fail(exc)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    try:
                        with conn.cursor() as cursor:
                            cursor.execute(_postgres_sql(sql), tuple(params))
                            return cursor.fetchall()
                    except psycopg.Error:
                        if conn.broken and attempt == 1:
                            continue
                        raise
            except psycopg.Error as exc:
                self._fail(exc)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _fail(self, exc: psycopg.Error) -> NoReturn:
        # psycopg's messages name host and database, not the password.
        raise StorageError(f"{self.describe()}: {str(exc).strip()}") from exc

    @staticmethod
    def _migrate(tx: Tx) -> None:
        tx.serialize("schema")  # two instances starting together migrate one after the other
        tx.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
        rows = tx.execute(f"SELECT version FROM {SCHEMA_TABLE}")
        if not rows:
            tx.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
        version = int(rows[0][0]) if rows else 0
        if version > len(MIGRATIONS):
            raise StorageError(f"the report book's schema version {version} is newer than the"
                               f" {len(MIGRATIONS)} this Siaga knows; use a newer release")
        for migration in MIGRATIONS[version:]:
            for statement in statements(render(migration, "postgresql")):
                tx.execute(statement)
        tx.execute(f"UPDATE {SCHEMA_TABLE} SET version = ?", (len(MIGRATIONS),))

    def close(self) -> None:
        self._pool.close()


def open_backend(database_url: str | None, data_dir: Path) -> Backend:
    """PostgreSQL when a URL is given, else SQLite at `data_dir/reports.sqlite`."""
    if database_url is None:
        return SqliteBackend(data_dir / "reports.sqlite")
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError("reports.database_url must be a postgresql:// URL "
                                 "(or empty for SQLite in the data directory)")
    _describe_url(database_url)  # a malformed URL is a configuration error, said first
    return PostgresBackend(database_url)


def _describe_url(url: str) -> str:
    """host:port/database, for messages: never the user's password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        # Not psycopg's words: they may quote the URL, password and all.
        raise ConfigurationError("reports.database_url is not a valid postgresql:// URL"
                                 " (postgresql://user:password@host:port/database)") from None
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}" \
           f"/{parts.get('dbname') or parts.get('user') or ''}"

