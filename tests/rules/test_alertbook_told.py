"""Whoever heard an alert fire hears it end: the book keeps, per episode, the receivers told
that it fires, and the dispatcher sends its later news to them too, whatever its labels say
by then (the monitoring room, paged at Siaga 1, hears the fall back to Siaga 2 and the end).

The book, the dispatcher and the outbox as the service wires them, on each backend: SQLite
files in the test's temporary dir, or one fresh PostgreSQL database the book and the outbox
share, as a cluster's do.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from rules.alert import AlertStatus, Notification, Severity
from rules.alertschema import LOCK_PREFIX, POSTGRES_MIGRATIONS, SCHEMA_TABLE, SETTING, AlertStore
from rules.alertstore import content_digest
from rules.dispatch import Dispatcher
from rules.outbox import Outbox
from rules.routing import Receiver, Route, Router
from siaga_core import sqlbackend
from siaga_core.errors import StorageError
from siaga_core.sqlbackend import Backend, SharedStore
from tests.rules.books import (
    FLOOD,
    MINUTE,
    REPEAT,
    T0,
    BookPlace,
    Clock,
    OutboxPlace,
    change,
    fire,
    flood,
    move,
    resolve,
)

# The README's routes: floods to the disaster agency, everything critical to the monitoring
# room. Nothing is delivered (no deliverer runs): the tests read what was enqueued.
RECEIVERS = [Receiver(name="bpbd", url="https://bpbd.example/siaga"),
             Receiver(name="monitoring-room", url="http://monitoring.example:9000/alerts")]
ROUTES = [Route(receivers=["bpbd"], match_re={"alertname": "Flood.*"}),
          Route(receivers=["monitoring-room"], match={"severity": "critical"})]
EXTERNAL_URL = "https://siaga.example"


class Heard:
    """The book's `send`: the dispatcher, noting the deliveries it enqueued."""

    def __init__(self, dispatcher: Dispatcher, outbox: Outbox) -> None:
        self._dispatcher = dispatcher
        self._outbox = outbox
        self._ids: list[str] = []

    def __call__(self, told: Notification) -> dict[str, str]:
        enqueued = self._dispatcher.dispatch(told)
        self._ids.extend(enqueued.values())
        return enqueued

    def by_receiver(self) -> dict[str, list[tuple[str, str]]]:
        """What each receiver's stored deliveries say, (status, level), in enqueue order."""
        heard: dict[str, list[tuple[str, str]]] = {}
        for delivery_id in self._ids:
            delivery = self._outbox.get(delivery_id)
            assert delivery is not None
            (alert,) = orjson.loads(delivery.body)["alerts"]
            heard.setdefault(delivery.receiver, []).append(
                (alert["status"], alert["labels"]["level"]))
        return heard


@pytest.fixture
def heard(book_place: BookPlace, clock: Clock) -> Iterator[Heard]:
    """A dispatcher over an outbox on the book's backend (its database, on PostgreSQL)."""
    place = OutboxPlace(book_place.path.with_name("outbox.sqlite"), book_place.database_url)
    with place.open(clock) as outbox:
        yield Heard(Dispatcher(Router(RECEIVERS, ROUTES), outbox.enqueue_many, EXTERNAL_URL,
                               clock), outbox)


def test_the_receiver_paged_at_siaga_1_hears_the_fall_back_and_the_end(
    book_place: BookPlace, clock: Clock, heard: Heard
) -> None:
    with book_place.open(clock, send=heard) as book:
        book.apply(fire(T0, "siaga-3"))
        book.apply(change("siaga-1", T0 + MINUTE))  # critical: the monitoring room too
        book.apply(change("siaga-2", T0 + 2 * MINUTE))  # major: routed to bpbd alone
    # Who was told is in the book, not in the process: the end outlives a restart.
    with book_place.open(clock, send=heard) as restarted:
        restarted.apply(resolve(T0 + 3 * MINUTE, "siaga-2"))
    assert heard.by_receiver() == {
        "bpbd": [("firing", "siaga-3"), ("firing", "siaga-1"), ("firing", "siaga-2"),
                 ("resolved", "siaga-2")],
        "monitoring-room": [("firing", "siaga-1"), ("firing", "siaga-2"),
                            ("resolved", "siaga-2")],
    }


def test_repeats_go_to_every_receiver_told_until_the_end(
    book_place: BookPlace, clock: Clock, heard: Heard
) -> None:
    with book_place.open(clock, send=heard) as book:
        book.apply(fire(T0, "siaga-1"))
        book.apply(change("siaga-3", T0 + MINUTE))
        assert [n.reason for n in book.due_repeats(T0 + REPEAT)] == ["repeat"]
        book.apply(resolve(T0 + 2 * MINUTE))
    assert heard.by_receiver()["monitoring-room"] == [
        ("firing", "siaga-1"), ("firing", "siaga-3"), ("firing", "siaga-3"),
        ("resolved", "siaga-3")]


def test_a_new_episode_goes_only_where_its_labels_route_it(
    book_place: BookPlace, clock: Clock, heard: Heard
) -> None:
    with book_place.open(clock, send=heard) as book:
        book.apply(fire(T0, "siaga-1"))
        book.apply(resolve(T0 + MINUTE, "siaga-1"))  # told its end: owed nothing more
        book.apply(move("firing", flood(level="siaga-3", at=T0 + 2 * MINUTE),
                        AlertStatus.RESOLVED))
        book.apply(resolve(T0 + 3 * MINUTE))
    assert heard.by_receiver()["monitoring-room"] == [("firing", "siaga-1"),
                                                      ("resolved", "siaga-1")]
    assert len(heard.by_receiver()["bpbd"]) == 4


class LastRelease(AlertStore):
    """SQLite's store as released before the book kept who was told: four migrations."""

    MIGRATIONS = AlertStore.MIGRATIONS[:4]


def last_release(place: BookPlace) -> Backend:
    """The book's tables as the last release opened them (PostgreSQL's: two migrations)."""
    shared = SharedStore("the alert book", POSTGRES_MIGRATIONS[:2], SCHEMA_TABLE, LOCK_PREFIX,
                         SETTING)
    return sqlbackend.open_backend(place.database_url, lambda: LastRelease(place.path), shared)


def test_an_alert_the_last_release_told_and_acked_is_migrated_with_its_ack(
    book_place: BookPlace, clock: Clock, heard: Heard
) -> None:
    major = flood(level="siaga-2")
    old = last_release(book_place)
    try:
        with old.begin() as tx:  # firing at Siaga 2, told, and acknowledged
            tx.execute(
                "INSERT INTO alerts (fingerprint, rule, subject, status, severity, labels,"
                " annotations, starts_at, active_at, evaluated_at, acked_at, acked_by,"
                " ack_comment, notified_status, notified_at, notified_digest, updated_at)"
                " VALUES (?, 'FloodLevel', 'manggarai', 'firing', 'major', ?, '{}', ?, ?, ?, ?,"
                " 'budi', 'on it', 'firing', ?, ?, ?)",
                (FLOOD, orjson.dumps(dict(major.labels)).decode(), major.starts_at_ns, T0, T0,
                 T0, T0, content_digest(major), T0))
    finally:
        old.close()
    with book_place.open(clock, send=heard) as book:
        view = book.get(FLOOD)
        # The ack's severity was not kept then: the row's stands in for it.
        assert view is not None and view.ack is not None
        assert view.ack.severity is Severity.MAJOR
        book.apply(change("siaga-3", T0 + MINUTE))
        book.apply(change("siaga-2", T0 + 2 * MINUTE))
        assert book.due_repeats(T0 + 2 * MINUTE + REPEAT) == []  # still acknowledged
        book.apply(resolve(T0 + 3 * MINUTE, "siaga-2"))
    # Nobody was noted as told then: the news goes where the labels route it.
    assert heard.by_receiver() == {"bpbd": [("firing", "siaga-3"), ("firing", "siaga-2"),
                                            ("resolved", "siaga-2")]}
    with pytest.raises(StorageError, match="is newer than the"):
        last_release(book_place).close()  # the last release refuses what it cannot read
