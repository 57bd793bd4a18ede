"""The board of devices heard, shared by a cluster's instances (rules.seenboard), on a real
PostgreSQL: the newest of what any instance heard wins, statuses included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rules.seenboard import Heard, SeenBoard
from siaga.sandbox.postgres import PostgreSQL
from siaga_core.errors import StorageError
from tests.integration.support import unique_name


@pytest.fixture
def url(postgres: PostgreSQL) -> Iterator[str]:
    name = unique_name("seen_")
    yield postgres.create_database(name)
    postgres.drop_database(name)


def test_two_instances_publish_and_the_newest_wins(url: str) -> None:
    with SeenBoard(url) as one, SeenBoard(url) as two:
        one.publish({"a": Heard(100), "b": Heard(200, (False, 210))})
        two.publish({"a": Heard(50), "b": Heard(300)})  # an older a; a newer reading of b
        assert one.read() == {"a": Heard(100), "b": Heard(300, (False, 210))}
        two.publish({"b": Heard(None, (True, 400))})  # b says online again
        one.publish({"b": Heard(None, (False, 250))})  # an older status: kept out
        assert two.read()["b"] == Heard(300, (True, 400))


def test_nothing_to_publish_writes_nothing(url: str) -> None:
    with SeenBoard(url) as board:
        board.publish({})
        assert board.read() == {}


def test_a_board_on_a_database_that_is_not_there_is_a_storage_error(
        postgres: PostgreSQL) -> None:
    with pytest.raises(StorageError, match="PostgreSQL"):
        SeenBoard(postgres.url_for("no_such_database"))
