"""A store on PostgreSQL, shared by several Siaga instances (`siaga_core.sqlbackend`).

A small pool of connections (psycopg_pool), so that the threads the service calls a store
from commit side by side rather than queue behind one connection. A connection found broken
is dropped by the pool; a unit of work that failed on a broken connection before its COMMIT
was sent is run once more on another, so a restarted server costs no error. A failure
during COMMIT is not retried: it may have committed. Imported only by a store that names a
PostgreSQL URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, NoReturn

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from siaga_core.errors import ConfigurationError, StorageError
from siaga_core.sqlbackend import Dialect, Row, SharedStore, T, Tx, render, statements

CONNECT_TIMEOUT_S = 10  # a PostgreSQL that does not answer in 10 s is down, not slow
# Connections per store: the service's default thread pool runs a handful of calls at once;
# more connections would only wait on the same disk's commits.
POOL_SIZE = 4


class _PostgresTx:
    dialect: Final[Dialect] = "postgresql"

    def __init__(self, cursor: psycopg.Cursor[Row], lock_prefix: str) -> None:
        self._cursor = cursor
        self._lock_prefix = lock_prefix

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        self._cursor.execute(postgres_sql(sql), tuple(params))
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def serialize(self, key: str) -> None:
        # A transaction-scoped advisory lock: released by COMMIT or ROLLBACK, even when the
        # client dies. Keys are prefixed so another application's locks do not collide.
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
                     (f"{self._lock_prefix}:{key}",))


def postgres_sql(sql: str) -> str:
    """`?` placeholders (the SQL both databases are written in) as psycopg's `%s`."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresBackend:
    """One store's tables (`store` says which) in a PostgreSQL several instances share."""

    dialect: Final[Dialect] = "postgresql"

    def __init__(self, url: str, store: SharedStore) -> None:
        self._where = describe_url(url, store.setting)
        self._name = store.name
        self._migrations = tuple(store.migrations)
        self._schema_table = store.schema_table
        self._lock_prefix = store.lock_prefix
        # autocommit: no transaction is left open between calls; `run` opens each one.
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url, min_size=1, max_size=POOL_SIZE, open=False, timeout=CONNECT_TIMEOUT_S,
            # A connection is checked as it is handed out (one round trip): after a server
            # restart, an idle connection is found broken then, not mid-transaction.
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            name=f"siaga-{store.schema_table}")
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
                            result = work(_PostgresTx(cursor, self._lock_prefix))
                            committing = True
                        return result
                    except psycopg.Error:
                        if conn.broken and not committing and attempt == 1:
                            continue  # the server went away before COMMIT: nothing was done
                        raise
            except psycopg.Error as exc:
                self._fail(exc)
        raise AssertionError("unreachable: the second attempt returns or raises")

    @contextmanager
    def begin(self) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield _PostgresTx(cursor, self._lock_prefix)
        except psycopg.Error as exc:
            self._fail(exc)

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    try:
                        with conn.cursor() as cursor:
                            cursor.execute(postgres_sql(sql), tuple(params))
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

    def _migrate(self, tx: Tx) -> None:
        table, known = self._schema_table, len(self._migrations)
        tx.serialize("schema")  # two instances starting together migrate one after the other
        tx.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
        rows = tx.execute(f"SELECT version FROM {table}")
        if not rows:
            tx.execute(f"INSERT INTO {table} (version) VALUES (0)")
        version = int(rows[0][0]) if rows else 0
        if version > known:
            raise StorageError(f"{self._name}'s schema version {version} is newer than the"
                               f" {known} this Siaga knows; use a newer release")
        for migration in self._migrations[version:]:
            for statement in statements(render(migration, "postgresql")):
                tx.execute(statement)
        tx.execute(f"UPDATE {table} SET version = ?", (known,))

    def close(self) -> None:
        self._pool.close()


def describe_url(url: str, setting: str) -> str:
    """host:port/database, for messages: never the user's password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        # Not psycopg's words: they may quote the URL, password and all.
        raise ConfigurationError(f"{setting} is not a valid postgresql:// URL"
                                 " (postgresql://user:password@host:port/database)") from None
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}" \
           f"/{parts.get('dbname') or parts.get('user') or ''}"


def check_url(url: str, setting: str) -> None:
    """A URL that is not postgresql:// or does not parse: a configuration error, said first."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"{setting} must be a postgresql:// URL "
                                 "(or empty for SQLite in the data directory)")
    describe_url(url, setting)
