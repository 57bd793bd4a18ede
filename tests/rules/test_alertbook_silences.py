"""Silences in the alert book: what they suppress, when they end, and that they last a restart.

On both backends (`book` and `book_place`, tests/rules/conftest.py)."""

from __future__ import annotations

import pytest

from rules.alertbook import (
    AlertBook,
    UnknownSilence,
)
from rules.silences import Matcher, SilenceError, parse_matcher
from tests.rules.books import (
    FLOOD,
    HOUR,
    MINUTE,
    T0,
    BookPlace,
    Clock,
    change,
    fire,
    flood,
)

# silences


def test_a_silence_suppresses_and_its_expiry_restores(book: AlertBook, clock: Clock) -> None:
    floods = parse_matcher("alertname=~Flood.*")
    silence = book.add_silence([floods], T0, T0 + HOUR, "budi", "drill")
    assert book.apply(fire(T0)) is None
    assert book.refresh_after_silence_change() == []  # still silenced
    clock.now = T0 + MINUTE
    book.expire_silence(silence.id)
    sent = book.refresh_after_silence_change()
    assert [(n.reason, n.fingerprint) for n in sent] == [("new", FLOOD)]
    assert book.refresh_after_silence_change() == []  # told once


def test_a_silence_that_ends_by_itself_restores(book: AlertBook, clock: Clock) -> None:
    book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + HOUR, "budi")
    book.apply(fire(T0))
    clock.now = T0 + HOUR
    assert [n.reason for n in book.refresh_after_silence_change()] == ["new"]


def test_a_change_made_under_a_silence_is_told_when_it_ends(book: AlertBook, clock: Clock) -> None:
    book.apply(fire(T0))
    silence = book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + HOUR, "budi")
    assert book.apply(change("siaga-2", T0)) is None
    book.expire_silence(silence.id)
    sent = book.refresh_after_silence_change()
    assert [(n.reason, n.labels["level"]) for n in sent] == [("changed", "siaga-2")]


def test_silence_expiry_does_not_page_a_stale_backlog(book: AlertBook, clock: Clock) -> None:
    clock.now = T0 + HOUR
    book.apply(fire(T0))  # stale, not silenced
    silence = book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + 2 * HOUR, "budi")
    book.expire_silence(silence.id)
    assert book.refresh_after_silence_change() == []


def test_expired_silences_stay_listed_but_do_not_suppress(book: AlertBook, clock: Clock) -> None:
    silence = book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + HOUR, "budi")
    clock.now = T0 + HOUR
    assert book.silences() == []
    assert book.silences(include_expired=True) == [silence]
    assert book.silenced(flood().labels) is None
    assert book.apply(fire(T0 + HOUR)) is not None


def test_expiring_a_silence_ends_it_now(book: AlertBook, clock: Clock) -> None:
    silence = book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + HOUR, "budi")
    assert book.silenced(flood().labels) == silence
    expired = book.expire_silence(silence.id, T0 + MINUTE)
    assert (expired.starts_at_ns, expired.ends_at_ns) == (T0, T0 + MINUTE)
    assert book.silenced(flood().labels, T0 + MINUTE) is None
    assert book.expire_silence(silence.id, T0 + HOUR) == expired  # already over: unchanged


def test_expiring_a_silence_not_started_yet_ends_it_before_it_begins(book: AlertBook) -> None:
    later = book.add_silence([Matcher("device_id", "manggarai")], T0 + HOUR, T0 + 2 * HOUR, "budi")
    expired = book.expire_silence(later.id, T0)
    assert (expired.starts_at_ns, expired.ends_at_ns) == (T0, T0)
    assert book.silenced(flood().labels, T0 + HOUR) is None


def test_expiring_an_unknown_silence_is_an_error(book: AlertBook) -> None:
    with pytest.raises(UnknownSilence):
        book.expire_silence("nope")


def test_a_silence_already_over_is_refused(book: AlertBook) -> None:
    with pytest.raises(SilenceError, match="after now"):
        book.add_silence([Matcher("device_id", "manggarai")], T0 - HOUR, T0, "budi")


def test_silences_survive_reopening_with_their_matchers(
    book_place: BookPlace, clock: Clock
) -> None:
    texts = ['summary=~"pa-\\d+ \\"x\\""', "level!=siaga-3", "a!~b|c"]
    matchers = [parse_matcher(text) for text in texts]
    with book_place.open(clock) as first:
        silence = first.add_silence(matchers, T0, T0 + HOUR, "budi", "pumps")
    with book_place.open(clock) as reopened:
        assert reopened.silences() == [silence]


