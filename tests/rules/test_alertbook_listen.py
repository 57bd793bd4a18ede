"""Listeners of the alert book: told of each committed change, never able to break the book.

On both backends (`book`, tests/rules/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from rules.alert import AlertStatus
from rules.alertbook import ALL, AlertBook
from rules.silences import parse_matcher
from tests.rules.books import (
    FLOOD,
    HOUR,
    MINUTE,
    REPEAT,
    T0,
    BookPlace,
    Clock,
    fire,
    flood,
    move,
)


class Heard:
    """A listener that keeps what it heard, and the alert's status another connection saw."""

    def __init__(self, reader: AlertBook) -> None:
        self.fingerprints: list[str] = []
        self.seen: list[AlertStatus | None] = []
        # A second book on the same file or database sees only what is committed.
        self._reader = reader

    def __call__(self, fingerprint: str) -> None:
        self.fingerprints.append(fingerprint)
        view = None if fingerprint == ALL else self._reader.get(fingerprint)
        self.seen.append(None if view is None else view.alert.status)

    def close(self) -> None:
        self._reader.close()


@pytest.fixture
def heard(book_place: BookPlace, book: AlertBook, clock: Clock) -> Iterator[Heard]:
    listener = Heard(book_place.open(clock))
    book.listen(listener)
    yield listener
    listener.close()


def test_apply_tells_the_fingerprint_after_the_commit(book: AlertBook, heard: Heard) -> None:
    book.apply(move("pending", flood(AlertStatus.PENDING), None))
    book.apply(fire())
    assert heard.fingerprints == [FLOOD, FLOOD]
    assert heard.seen == [AlertStatus.PENDING, AlertStatus.FIRING]


def test_acknowledge_tells_the_fingerprint(book: AlertBook, heard: Heard) -> None:
    book.apply(fire())
    book.acknowledge(FLOOD, "budi", "on it")
    assert heard.fingerprints == [FLOOD, FLOOD]


def test_observe_tells_only_when_it_records(
    book: AlertBook, heard: Heard, clock: Clock
) -> None:
    book.apply(fire())
    book.observe(flood(at=T0 + MINUTE))  # a reading of a told alert: no history, not told
    book.observe(flood(AlertStatus.PENDING, device="depok"))  # pending: no history
    assert heard.fingerprints == [FLOOD]
    book.observe(flood(at=T0 + 2 * MINUTE), note="report r-1 linked")
    assert heard.fingerprints == [FLOOD, FLOOD]


def test_due_repeats_tell_the_repeated_alerts(
    book: AlertBook, heard: Heard, clock: Clock
) -> None:
    book.apply(fire())
    clock.now = T0 + REPEAT + MINUTE
    assert len(book.due_repeats()) == 1
    assert heard.fingerprints == [FLOOD, FLOOD]


def test_silence_changes_tell_everything(book: AlertBook, heard: Heard, clock: Clock) -> None:
    silence = book.add_silence([parse_matcher("alertname=FloodLevel")], T0, T0 + HOUR, "budi",
                               "drill")
    assert heard.fingerprints == [ALL]
    book.expire_silence(silence.id)
    assert heard.fingerprints == [ALL, ALL]


def test_the_scheduled_refresh_tells_only_when_the_active_silences_change(
    book: AlertBook, heard: Heard, clock: Clock
) -> None:
    book.add_silence([parse_matcher("alertname=FloodLevel")], T0, T0 + HOUR, "budi", "drill")
    book.apply(fire())  # withheld: silenced
    heard.fingerprints.clear()
    book.refresh_after_silence_change()  # first look: the set is news
    book.refresh_after_silence_change()  # the same set: nothing
    assert heard.fingerprints == [ALL]
    clock.now = T0 + HOUR + MINUTE  # the silence ended by itself
    sent = book.refresh_after_silence_change()
    assert [n.fingerprint for n in sent] == [FLOOD]
    assert heard.fingerprints == [ALL, ALL]


def test_unsubscribe_stops_the_calls(book: AlertBook) -> None:
    calls: list[str] = []
    unsubscribe = book.listen(calls.append)
    book.apply(fire())
    unsubscribe()
    unsubscribe()  # twice is harmless
    book.apply(fire(T0 + MINUTE, level="siaga-2"))
    assert calls == [FLOOD]


def test_a_raising_listener_is_logged_and_the_others_still_hear(
    book: AlertBook, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fingerprint: str) -> None:
        raise RuntimeError("listener bug")

    calls: list[str] = []
    book.listen(broken)
    book.listen(calls.append)
    with caplog.at_level(logging.ERROR, logger="rules.alertbook"):
        sent = book.apply(fire())
    assert sent is not None and sent.reason == "new"
    assert calls == [FLOOD]
    assert book.get(FLOOD) is not None
    assert "listener bug" in caplog.text

