"""Tests of the alert book: what is paged, what is only recorded, and what survives a restart.

Each test that does not look into SQLite's file runs on both backends: SQLite in a temporary
data dir, and a fresh PostgreSQL database per test on the session's server (`book` and
`book_place`, tests/rules/conftest.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from rules.alert import AlertStatus
from rules.alertbook import (
    AlertBook,
    AlertNotActive,
)
from rules.alertschema import AlertStore
from rules.silences import Matcher, parse_matcher
from tests.rules.books import (
    FLOOD,
    HOUR,
    MINUTE,
    REPEAT,
    T0,
    BookPlace,
    Clock,
    change,
    fire,
    flood,
    move,
    open_book,
    resolve,
)

# apply: the same rules through the book


def test_apply_pages_a_fresh_firing_as_new(book: AlertBook) -> None:
    sent = book.apply(fire())
    assert sent is not None
    assert (sent.status, sent.reason, sent.fingerprint) == ("firing", "new", FLOOD)
    assert sent.labels["level"] == "siaga-3"
    assert sent.ends_at_ns is None


def test_apply_never_pages_pending_or_abandoned(book: AlertBook) -> None:
    assert book.apply(move("pending", flood(AlertStatus.PENDING), None)) is None
    assert book.apply(move("abandoned", flood(AlertStatus.RESOLVED), AlertStatus.PENDING)) is None
    assert [h.reason for h in book.history(FLOOD)] == ["abandoned", "pending"]


def test_each_level_change_of_a_told_flood_is_paged_then_its_resolution(
    book: AlertBook, clock: Clock
) -> None:
    steps = [fire(level="siaga-3"), change("siaga-2"), change("siaga-1"), change("siaga-2"),
             change("siaga-3"), resolve(level="siaga-3")]
    sent = []
    for i, step in enumerate(steps):
        clock.now = T0 + i * 5 * MINUTE
        at = clock.now
        sent.append(book.apply(replace(step, alert=replace(step.alert, evaluated_at_ns=at))))
    assert [(n.reason, n.labels["level"]) for n in sent if n] == [
        ("new", "siaga-3"), ("changed", "siaga-2"), ("changed", "siaga-1"),
        ("changed", "siaga-2"), ("changed", "siaga-3"), ("resolved", "siaga-3"),
    ]


def test_a_stale_backlog_is_recorded_without_paging(book: AlertBook, clock: Clock) -> None:
    clock.now = T0 + 8 * HOUR  # the gauge's store-and-forward flushes last night's readings
    assert book.apply(fire(T0)) is None
    assert book.apply(change("siaga-2", T0 + 30 * MINUTE)) is None
    assert book.apply(resolve(T0 + HOUR)) is None
    assert [(h.change, h.paged, h.reason) for h in book.history(FLOOD)] == [
        ("resolved", False, "never-paged"), ("changed", False, "stale"),
        ("firing", False, "stale"),
    ]


def test_a_fresh_change_of_a_stale_alert_is_paged_as_new(book: AlertBook, clock: Clock) -> None:
    clock.now = T0 + HOUR
    assert book.apply(fire(T0)) is None
    sent = book.apply(change("siaga-2", T0 + HOUR))
    assert sent is not None and (sent.reason, sent.labels["level"]) == ("new", "siaga-2")


def test_the_resolution_of_a_told_alert_is_sent_however_late(
    book: AlertBook, clock: Clock
) -> None:
    book.apply(fire(T0))
    clock.now = T0 + 6 * HOUR  # the gauge was cut off; its backlog arrives much later
    sent = book.apply(resolve(T0 + HOUR))
    assert sent is not None
    assert (sent.status, sent.reason, sent.ends_at_ns) == ("resolved", "resolved", T0 + HOUR)


def test_a_silenced_firing_is_recorded_with_its_silence(book: AlertBook) -> None:
    silence = book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + HOUR, "budi")
    assert book.apply(fire()) is None
    entry = book.history(FLOOD)[0]
    assert (entry.paged, entry.reason, entry.note) == (False, "silenced", f"silence {silence.id}")


def test_history_keeps_every_decision_with_its_reason(book: AlertBook, clock: Clock) -> None:
    book.apply(move("pending", flood(AlertStatus.PENDING, at=T0 - MINUTE), None))
    book.apply(fire(T0))
    clock.now = T0 + REPEAT
    book.due_repeats()
    book.acknowledge(FLOOD, "budi", "pumps on")
    book.apply(resolve(T0 + REPEAT))
    history = book.history(FLOOD)
    assert [(h.change, h.paged, h.reason) for h in reversed(history)] == [
        ("pending", False, "pending"), ("firing", True, "new"), ("repeat", True, "repeat"),
        ("acknowledged", False, "acknowledged"), ("resolved", True, "resolved"),
    ]
    assert history[1].note == "budi: pumps on"
    assert history[0].recorded_at_ns == T0 + REPEAT
    assert history[0].at_ns == T0 + REPEAT


def test_observe_pages_a_stale_alert_once_fresh_readings_arrive(
    book: AlertBook, clock: Clock
) -> None:
    clock.now = T0 + HOUR
    assert book.apply(fire(T0)) is None  # the backlog ends with the river still high
    sent = book.observe(flood(at=T0 + HOUR))  # a live reading, same level: no transition
    assert sent is not None and sent.reason == "new"
    assert book.observe(flood(at=T0 + HOUR + MINUTE)) is None  # told once


def test_observe_keeps_the_record_current_without_history(book: AlertBook) -> None:
    book.apply(fire(T0))
    book.observe(flood(at=T0 + 5 * MINUTE))
    assert book.restore()[0].active_at_ns == T0 + 5 * MINUTE
    assert len(book.history(FLOOD)) == 1


# persistence across a restart


def test_a_firing_alert_is_restored_after_reopening(
    book_place: BookPlace, clock: Clock
) -> None:
    with book_place.open(clock) as first:
        first.apply(fire(T0))
        first.apply(move("pending", flood(AlertStatus.PENDING, device="depok"), None))
        first.apply(fire(T0, device="katulampa"))
        first.apply(move("resolved", flood(AlertStatus.RESOLVED, device="katulampa"),
                         AlertStatus.FIRING))
    with book_place.open(clock) as reopened:
        restored = {a.subject: a for a in reopened.restore()}
    assert sorted(restored) == ["depok", "manggarai"]  # resolved alerts need no resuming
    assert restored["manggarai"] == flood(at=T0)
    assert restored["depok"].status is AlertStatus.PENDING


def test_a_restored_alert_is_not_paged_again_but_its_resolution_is(
    book_place: BookPlace, clock: Clock
) -> None:
    with book_place.open(clock) as first:
        first.apply(fire(T0))
    clock.now = T0 + MINUTE
    with book_place.open(clock) as reopened:
        assert reopened.apply(fire(T0 + MINUTE)) is None  # an engine that lost its timers
        sent = reopened.apply(resolve(T0 + MINUTE))
    assert sent is not None and sent.reason == "resolved"


def test_repeats_continue_from_before_the_restart(book_place: BookPlace, clock: Clock) -> None:
    with book_place.open(clock) as first:
        first.apply(fire(T0))
    with book_place.open(clock) as reopened:
        assert reopened.due_repeats(T0 + REPEAT - 1) == []
        assert [n.reason for n in reopened.due_repeats(T0 + REPEAT)] == ["repeat"]


# repeats and acknowledgements


def test_due_repeats_reminds_of_a_firing_alert_each_interval(book: AlertBook) -> None:
    book.apply(fire(T0))
    assert book.due_repeats(T0 + REPEAT - 1) == []
    first = book.due_repeats(T0 + REPEAT)
    assert [(n.status, n.reason, n.fingerprint) for n in first] == [("firing", "repeat", FLOOD)]
    assert book.due_repeats(T0 + REPEAT + MINUTE) == []  # marked as notified
    assert len(book.due_repeats(T0 + 2 * REPEAT)) == 1


def test_ack_stops_repeats(book: AlertBook) -> None:
    book.apply(fire(T0))
    view = book.acknowledge(FLOOD, "budi", "pumps on", T0 + MINUTE)
    assert view is not None and view.ack is not None
    assert (view.ack.by, view.ack.comment, view.ack.at_ns) == ("budi", "pumps on", T0 + MINUTE)
    assert book.due_repeats(T0 + 10 * REPEAT) == []


def test_an_escalation_clears_the_ack_so_repeats_resume(book: AlertBook) -> None:
    book.apply(fire(T0))
    book.acknowledge(FLOOD, "budi", "watching Siaga 3")
    book.apply(change("siaga-2", T0))
    assert [n.labels["level"] for n in book.due_repeats(T0 + REPEAT)] == ["siaga-2"]


def test_a_deescalation_keeps_the_ack(book: AlertBook) -> None:
    book.apply(fire(T0, level="siaga-2"))
    book.acknowledge(FLOOD, "budi", "")
    book.apply(change("siaga-3", T0))
    assert book.due_repeats(T0 + REPEAT) == []


def test_an_ack_holds_when_the_alert_comes_back_to_the_severity_acknowledged(
    book: AlertBook,
) -> None:
    book.apply(fire(T0, level="siaga-2"))
    book.acknowledge(FLOOD, "budi", "pumps on")
    book.apply(change("siaga-3", T0 + MINUTE))
    book.apply(change("siaga-2", T0 + 2 * MINUTE))  # no worse than what budi took on
    view = book.get(FLOOD)
    assert view is not None and view.ack is not None and view.ack.by == "budi"
    assert book.due_repeats(T0 + REPEAT) == []
    book.apply(change("siaga-1", T0 + 3 * MINUTE))  # worse: repeats resume
    assert [n.labels["level"] for n in book.due_repeats(T0 + REPEAT)] == ["siaga-1"]


def test_a_new_episode_is_not_acknowledged(book: AlertBook) -> None:
    book.apply(fire(T0))
    book.acknowledge(FLOOD, "budi", "")
    book.apply(resolve(T0))
    book.apply(move("firing", flood(at=T0 + MINUTE), AlertStatus.RESOLVED))
    view = book.get(FLOOD)
    assert view is not None and view.ack is None
    assert len(book.due_repeats(T0 + MINUTE + REPEAT)) == 1


def test_acknowledging_a_resolved_alert_is_refused(book: AlertBook) -> None:
    book.apply(fire(T0))
    book.apply(resolve(T0))
    with pytest.raises(AlertNotActive):
        book.acknowledge(FLOOD, "budi", "")


def test_acknowledging_an_unknown_alert_returns_none(book: AlertBook) -> None:
    assert book.acknowledge("0123456789abcdef", "budi", "") is None


def test_repeats_skip_silenced_alerts_and_alerts_never_told(book: AlertBook, clock: Clock) -> None:
    book.apply(fire(T0))
    clock.now = T0 + HOUR
    book.apply(fire(T0, device="depok"))  # stale: never told
    book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + 5 * HOUR, "budi")
    assert book.due_repeats(T0 + 2 * REPEAT) == []


# views, counts, pruning, storage


def test_alerts_filter_by_status_and_label_matchers(book: AlertBook) -> None:
    book.apply(fire(T0, device="manggarai"))
    book.apply(fire(T0, device="depok", level="siaga-2"))
    book.apply(move("pending", flood(AlertStatus.PENDING, device="katulampa"), None))
    assert {v.alert.subject for v in book.alerts(AlertStatus.FIRING)} == {"manggarai", "depok"}
    siaga_2 = [parse_matcher("level=siaga-2")]
    assert [v.alert.subject for v in book.alerts(matchers=siaga_2)] == ["depok"]
    assert len(book.alerts(limit=2)) == 2
    assert len(book.alerts()) == 3


def test_an_alert_view_shows_ack_silence_and_what_operators_were_told(book: AlertBook) -> None:
    book.apply(fire(T0))
    book.acknowledge(FLOOD, "budi", "on it")
    silence = book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + HOUR, "budi")
    view = book.get(FLOOD)
    assert view is not None
    assert view.silenced and view.silenced_by == silence.id
    assert view.ack is not None and view.ack.by == "budi"
    assert (view.notified.status, view.notified.at_ns) == ("firing", T0)
    assert book.get("0123456789abcdef") is None


def test_counts_by_status_lists_every_state(book: AlertBook) -> None:
    assert book.counts_by_status() == {"pending": 0, "firing": 0, "resolved": 0}
    book.apply(fire(T0))
    book.apply(fire(T0, device="depok"))
    assert book.counts_by_status() == {"pending": 0, "firing": 2, "resolved": 0}


def test_history_is_newest_first_and_can_be_limited(book: AlertBook) -> None:
    book.apply(fire(T0))
    book.apply(fire(T0, device="depok"))
    book.apply(change("siaga-2"))
    assert [h.change for h in book.history(limit=2)] == ["changed", "firing"]
    assert [h.labels["device_id"] for h in book.history()] == ["manggarai", "depok", "manggarai"]
    assert [h.change for h in book.history(FLOOD)] == ["changed", "firing"]


def test_prune_forgets_old_history_resolved_alerts_and_expired_silences(
    book: AlertBook, clock: Clock
) -> None:
    book.apply(fire(T0, device="depok"))
    book.apply(move("resolved", flood(AlertStatus.RESOLVED, device="depok"), AlertStatus.FIRING))
    book.apply(fire(T0))
    book.add_silence([Matcher("device_id", "manggarai")], T0, T0 + MINUTE, "budi")
    pruned = book.prune(T0 + HOUR)
    assert (pruned.history, pruned.alerts, pruned.silences) == (3, 1, 1)
    assert [a.subject for a in book.restore()] == ["manggarai"]  # still firing: kept


def test_the_database_uses_write_ahead_logging(tmp_path: Path, clock: Clock) -> None:
    with open_book(tmp_path, clock) as opened:
        opened.apply(fire(T0))
    db = sqlite3.connect(tmp_path / "alerts.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT notified_status FROM alerts").fetchall() == [("firing",)]
    finally:
        db.close()


def test_a_file_from_before_schema_versions_opens_with_its_alerts(
    tmp_path: Path, clock: Clock
) -> None:
    with open_book(tmp_path, clock) as before:
        before.apply(fire(T0))
    with closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
        db.execute("PRAGMA user_version = 0")  # every file written before versions says 0
    with open_book(tmp_path, clock) as after:
        assert [a.subject for a in after.restore()] == ["manggarai"]
    with closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(AlertStore.MIGRATIONS),)


async def test_the_book_can_be_shared_by_threads(book: AlertBook) -> None:
    devices = [f"pa-{i:02d}" for i in range(40)]
    sent = await asyncio.gather(
        *(asyncio.to_thread(book.apply, fire(T0, device=device)) for device in devices)
    )
    assert all(n is not None and n.reason == "new" for n in sent)
    assert book.counts_by_status()["firing"] == len(devices)


def test_a_page_is_handed_to_the_sender_before_it_is_recorded_as_told(
    book_place: BookPlace, clock: Clock
) -> None:
    sent: list[str] = []
    with book_place.open(clock, send=lambda told: sent.append(told.reason)) as book:
        assert book.apply(fire()) is not None
    assert sent == ["new"]


def test_a_sender_that_fails_leaves_the_alert_untold_so_it_is_paged_again(
    book_place: BookPlace, clock: Clock
) -> None:
    def broken(_: object) -> None:
        raise OSError("outbox disk full")

    with book_place.open(clock, send=broken) as book, pytest.raises(OSError):
        book.apply(fire())
    with book_place.open(clock) as book:
        told = book.apply(fire())
    assert told is not None and told.reason == "new"  # at least once: never zero times


def test_resolved_since_lists_episodes_by_their_end_latest_first(book: AlertBook) -> None:
    ends = {"pos-a": T0 + 3 * HOUR, "pos-b": T0 + HOUR, "pos-c": T0 + 2 * HOUR}
    for device, ended in ends.items():
        book.apply(fire(T0, device=device))
        book.apply(move("resolved", flood(AlertStatus.RESOLVED, at=ended, device=device),
                        AlertStatus.FIRING))
    book.apply(fire(T0 + 4 * HOUR, device="pos-d"))  # still firing: not listed
    since = [view.alert.subject for view in book.resolved_since(T0 + 90 * MINUTE)]
    assert since == ["pos-a", "pos-c"]
    assert [view.alert.subject for view in book.resolved_since(T0, limit=1)] == ["pos-a"]


def test_a_limit_without_matchers_gives_what_the_whole_list_begins_with(
        book: AlertBook) -> None:
    for number in range(6):
        book.apply(fire(T0 + number * MINUTE, device=f"pos-{number}"))
    everything = [view.alert.fingerprint for view in book.alerts(limit=100)]
    assert len(everything) == 6
    assert [view.alert.fingerprint for view in book.alerts(limit=2)] == everything[:2]
    firing = book.alerts(AlertStatus.FIRING, limit=3)
    assert [view.alert.fingerprint for view in firing] == everything[:3]
