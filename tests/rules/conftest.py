"""Fixtures of the rules tests: the bundled catalog and rules, the webhook receiver, and the
alert book (on a set clock) and the outbox on both backends: SQLite in the test's temporary
dir, then a fresh database on the session's PostgreSQL (started only when such a test runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.registry import Registry, bundled_catalog_path, load_catalog
from rules.alertbook import AlertBook
from rules.config import RulesFile, load_rules
from siaga.sandbox.postgres import PostgreSQL
from tests.integration.support import unique_name
from tests.receiver import RecordingReceiver
from tests.rules.books import DEFAULT_RULES, T0, BookPlace, Clock, OutboxPlace, fresh_database

BACKENDS = ["sqlite", "postgresql"]  # the book and the outbox run on either; tests on both


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The bundled Jakarta catalog."""
    return load_catalog(bundled_catalog_path())


@pytest.fixture(scope="module")
def rules_file(registry: Registry) -> RulesFile:
    """The bundled rules on the bundled catalog."""
    return load_rules(DEFAULT_RULES, registry)


@pytest.fixture
def server(receiver: RecordingReceiver) -> RecordingReceiver:
    """The rules tests' name for the real webhook receiver of tests/conftest.py."""
    return receiver


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture(params=BACKENDS)
def book_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BookPlace]:
    """Where a test's alert book lives, on each backend in turn."""
    if request.param == "sqlite":
        yield BookPlace(tmp_path / "alerts.db", None)
        return
    with fresh_database(request.getfixturevalue("postgres"), "alerts") as url:
        yield BookPlace(tmp_path / "alerts.db", url)


@pytest.fixture
def book(book_place: BookPlace, clock: Clock) -> Iterator[AlertBook]:
    """An alert book on the test's clock, on each backend in turn."""
    with book_place.open(clock) as opened:
        yield opened


@pytest.fixture(params=BACKENDS)
def outbox_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutboxPlace]:
    """Where a test's outbox lives, on each backend in turn."""
    if request.param == "sqlite":
        yield OutboxPlace(tmp_path / "outbox.sqlite", None)
        return
    with fresh_database(request.getfixturevalue("postgres"), "outbox") as url:
        yield OutboxPlace(tmp_path / "unused.sqlite", url)


@pytest.fixture
def database(postgres: PostgreSQL) -> Iterator[str]:
    """A fresh database of its own on the session's PostgreSQL: a cluster's shared one."""
    name = unique_name("cluster_")
    yield postgres.create_database(name)
    postgres.drop_database(name)
