"""The report book on PostgreSQL (reports.database_url), shared by several Siaga instances.

A small pool of connections (psycopg_pool), so that the threads the service calls the book
from commit side by side rather than queue behind one connection. A connection found broken
is dropped by the pool; a unit of work that failed on a broken connection before its COMMIT
was sent is run once more on another, so a restarted server costs no error. A failure
during COMMIT is not retried: it may have committed. Imported only by a book that names a
PostgreSQL URL (`reports.backends.open_backend`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from reports.backends import CONNECT_TIMEOUT_S, POOL_SIZE, SCHEMA_TABLE, Row, T, Tx
from reports.schema import MIGRATIONS, render, statements
from siaga_core.errors import ConfigurationError, StorageError


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
        self._where = describe_url(url)
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


def describe_url(url: str) -> str:
    """host:port/database, for messages: never the user's password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        # Not psycopg's words: they may quote the URL, password and all.
        raise ConfigurationError("reports.database_url is not a valid postgresql:// URL"
                                 " (postgresql://user:password@host:port/database)") from None
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}" \
           f"/{parts.get('dbname') or parts.get('user') or ''}"

