"""Where the report book keeps its rows: SQLite in the data directory, or a shared PostgreSQL.

Both run the same SQL (`?` placeholders; PostgreSQL's are rewritten to `%s`) through one
small interface: `run(work)` does `work(tx)` in one transaction, committed (durable) before
it returns, and `read` runs one query. Every database error leaves as a
`siaga_core.errors.StorageError` naming the database, never its password.

PostgreSQL's backend lives in `reports.postgres`, imported only when a URL names one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from reports.schema import MIGRATIONS, render
from siaga_core.errors import ConfigurationError
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


def open_backend(database_url: str | None, data_dir: Path) -> Backend:
    """PostgreSQL when a URL is given, else SQLite at `data_dir/reports.sqlite`."""
    if database_url is None:
        return SqliteBackend(data_dir / "reports.sqlite")
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError("reports.database_url must be a postgresql:// URL "
                                 "(or empty for SQLite in the data directory)")
    # psycopg and libpq (some 20 MB of a process) are loaded only by a PostgreSQL book.
    from reports.postgres import PostgresBackend, describe_url

    describe_url(database_url)  # a malformed URL is a configuration error, said first
    return PostgresBackend(database_url)
