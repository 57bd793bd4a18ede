"""sqlitestore: the shell of every SQLite store (migrations, transactions, errors, locks)."""

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from siaga_core.errors import StorageError
from siaga_core.sqlitestore import SqliteStore

NOTES = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);"
# Not idempotent on purpose: running it twice would fail, or log a second row.
ADD_AUTHOR = """
ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT 'unknown';
CREATE TABLE migrated (step TEXT NOT NULL);
INSERT INTO migrated VALUES ('2; with a semicolon');
"""


class Notes(SqliteStore):
    MIGRATIONS = (NOTES,)


class AuthoredNotes(SqliteStore):
    MIGRATIONS = (NOTES, ADD_AUTHOR)


class QuickNotes(Notes):
    BUSY_TIMEOUT_S = 0.1  # the locked-file test waits this long, not sqlite3's 5 s


def raw(path: Path, script: str = "") -> list[tuple[object, ...]]:
    """Run `script` on the file outside any store; the rows of its last statement."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        rows: list[tuple[object, ...]] = []
        for statement in filter(str.strip, script.split(";")):
            rows = db.execute(statement).fetchall()
        return rows


def version(path: Path) -> object:
    return raw(path, "PRAGMA user_version")[0][0]


@pytest.fixture
def notes(tmp_path: Path) -> Iterator[Notes]:
    with Notes(tmp_path / "notes.sqlite") as store:
        yield store


def test_a_fresh_file_gets_every_migration(tmp_path: Path) -> None:
    with AuthoredNotes(tmp_path / "deep" / "notes.sqlite") as store:  # parents made
        assert store.schema_version == 2
        with store.transaction() as db:
            db.execute("INSERT INTO notes (text) VALUES ('banjir')")
        assert store.read("SELECT text, author FROM notes") == [("banjir", "unknown")]
        assert store.read("SELECT step FROM migrated") == [("2; with a semicolon",)]


def test_a_file_from_before_versions_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    raw(path, NOTES + "INSERT INTO notes (text) VALUES ('kept')")
    assert version(path) == 0
    with AuthoredNotes(path) as store:
        assert store.schema_version == 2
        assert store.read("SELECT text, author FROM notes") == [("kept", "unknown")]


def test_reopening_an_up_to_date_file_runs_no_migration(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    AuthoredNotes(path).close()
    with AuthoredNotes(path) as again:  # ALTER TABLE ADD COLUMN twice would fail
        assert again.read("SELECT COUNT(*) FROM migrated") == [(1,)]
        assert again.schema_version == 2


def test_a_migration_that_fails_leaves_the_file_at_its_version(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    Notes(path).close()

    class Broken(SqliteStore):
        MIGRATIONS = (NOTES, "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);")

    with pytest.raises(StorageError, match="no such table: nowhere"):
        Broken(path)
    assert version(path) == 1
    assert raw(path, "SELECT name FROM sqlite_master WHERE name = 'half'") == []


def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    AuthoredNotes(path).close()
    with pytest.raises(StorageError, match="schema version 2 is newer than the 1"):
        Notes(path)


def test_the_file_is_in_write_ahead_logging_with_full_sync(notes: Notes) -> None:
    assert notes.read("PRAGMA journal_mode") == [("wal",)]
    assert notes.read("PRAGMA synchronous") == [(2,)]  # FULL


def test_a_transaction_that_raises_is_rolled_back_and_its_error_kept(notes: Notes) -> None:
    with pytest.raises(ValueError, match="changed my mind"), notes.transaction() as db:
        db.execute("INSERT INTO notes (text) VALUES ('never')")
        raise ValueError("changed my mind")
    assert notes.read("SELECT COUNT(*) FROM notes") == [(0,)]
    with notes.transaction() as db:  # the store is usable again: no transaction left open
        db.execute("INSERT INTO notes (text) VALUES ('later')")
    assert notes.read("SELECT text FROM notes") == [("later",)]


def test_an_sqlite_error_is_a_storage_error_naming_the_file(notes: Notes) -> None:
    with pytest.raises(StorageError) as caught, notes.transaction() as db:
        db.execute("INSERT INTO notes (text) VALUES ('first')")
        db.execute("INSERT INTO notes (text) VALUES (NULL)")
    assert str(caught.value) == f"{notes.path}: NOT NULL constraint failed: notes.text"
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert notes.read("SELECT COUNT(*) FROM notes") == [(0,)]  # the first insert too


def test_a_bad_read_is_a_storage_error(notes: Notes) -> None:
    with pytest.raises(StorageError, match=r"notes\.sqlite: no such table: missing"):
        notes.read("SELECT * FROM missing")


def test_a_file_that_cannot_be_opened_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unable to open database file"):
        Notes(tmp_path)  # a directory


def test_a_closed_store_refuses_with_a_storage_error(tmp_path: Path) -> None:
    store = Notes(tmp_path / "notes.sqlite")
    store.close()
    with pytest.raises(StorageError, match="closed database"):
        store.read("SELECT 1")


def test_a_locked_file_opens_but_a_write_fails_as_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    Notes(path).close()
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        other.execute("INSERT INTO notes (text) VALUES ('uncommitted')")
        # Up to date: opening takes no write lock, so a restart is not stopped by the lock.
        with QuickNotes(path) as store:
            with pytest.raises(StorageError, match="database is locked"), store.transaction():
                pass
            assert store.read("SELECT COUNT(*) FROM notes") == [(0,)]  # WAL: readers go on
            other.execute("ROLLBACK")
            with store.transaction() as db:
                db.execute("INSERT INTO notes (text) VALUES ('after the lock')")
            assert store.read("SELECT text FROM notes") == [("after the lock",)]
