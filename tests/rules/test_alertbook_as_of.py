"""The alert book as of a past moment: which alerts were active then, as they were then.

The `book` tests run on SQLite and on PostgreSQL (tests/rules/conftest.py); the files of
earlier releases are SQLite's alone.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from rules.alert import AlertStatus, Severity, fingerprint
from rules.alertbook import AlertBook
from rules.alertschema import AlertStore
from tests.rules.books import (
    FLOOD,
    HOUR,
    MINUTE,
    T0,
    Clock,
    change,
    fire,
    flood,
    move,
    open_book,
    resolve,
)

DAY = 24 * HOUR
WEEK = 7 * DAY
DEPOK = fingerprint("FloodLevel", "depok")


def test_a_firing_alert_is_active_from_its_change_on(book: AlertBook) -> None:
    book.apply(fire(T0))
    assert book.as_of(T0 - 1, WEEK) == []
    (view,) = book.as_of(T0, WEEK)
    assert (view.alert.fingerprint, view.alert.status) == (FLOOD, AlertStatus.FIRING)
    assert [v.alert.fingerprint for v in book.as_of(T0 + DAY, WEEK)] == [FLOOD]


def test_a_resolved_alert_is_active_only_before_its_resolution(book: AlertBook) -> None:
    book.apply(fire(T0))
    book.apply(resolve(T0 + HOUR))
    assert len(book.as_of(T0 + HOUR - 1, WEEK)) == 1
    assert book.as_of(T0 + HOUR, WEEK) == []
    assert book.as_of(T0 + DAY, WEEK) == []


def test_labels_severity_and_summary_are_those_of_then(book: AlertBook) -> None:
    book.apply(fire(T0, level="siaga-3"))
    book.apply(change("siaga-1", T0 + HOUR))
    (then,) = book.as_of(T0 + 30 * MINUTE, WEEK)
    assert then.alert.severity is Severity.WARNING
    assert then.alert.labels["level"] == "siaga-3"
    assert then.alert.annotations["summary"] == "manggarai at siaga-3"
    assert then.alert.starts_at_ns == T0 - 10 * MINUTE
    assert then.alert.evaluated_at_ns == T0 and then.alert.ends_at_ns is None
    (later,) = book.as_of(T0 + 2 * HOUR, WEEK)
    assert later.alert.labels["level"] == "siaga-1"


def test_pending_counts_and_the_lookback_bounds_the_search(book: AlertBook) -> None:
    book.apply(move("pending", flood(AlertStatus.PENDING, device="depok"), None))
    assert [v.alert.status for v in book.as_of(T0, WEEK)] == [AlertStatus.PENDING]
    assert book.as_of(T0 + WEEK + 1, WEEK) == []


def test_the_newest_change_comes_first_and_acks_are_not_rebuilt(
    book: AlertBook, clock: Clock
) -> None:
    book.apply(fire(T0, device="depok"))
    book.apply(fire(T0 + MINUTE))
    book.acknowledge(FLOOD, "budi", "on it")
    views = book.as_of(T0 + HOUR, WEEK)
    assert [v.alert.fingerprint for v in views] == [FLOOD, DEPOK]
    assert all(v.ack is None and v.silenced_by is None for v in views)


def test_replayed_history_is_found_by_event_time_not_by_recording_time(
    book: AlertBook, clock: Clock
) -> None:
    past = T0 - 365 * DAY  # a replay of last year, recorded now
    book.apply(fire(past))
    assert book.as_of(T0, WEEK) == []
    assert [v.alert.fingerprint for v in book.as_of(past + HOUR, WEEK)] == [FLOOD]


class VersionOneStore(AlertStore):
    """The store as released before the console: the first migration only."""

    MIGRATIONS = AlertStore.MIGRATIONS[:1]


def test_a_version_one_file_is_migrated_and_its_history_still_answers(
    tmp_path: Path, clock: Clock
) -> None:
    with VersionOneStore(tmp_path / "alerts.db") as old:
        assert old.schema_version == 1
        with old.transaction() as db:
            db.execute(
                "INSERT INTO history (fingerprint, change, status, severity, labels, at,"
                " recorded_at, paged, reason) VALUES (?, 'firing', 'firing', 'warning',"
                " '{\"alertname\":\"FloodLevel\",\"level\":\"siaga-3\"}', ?, ?, 1, 'new')",
                (FLOOD, T0, T0),
            )
    with open_book(tmp_path, clock) as book:
        (view,) = book.as_of(T0 + MINUTE, WEEK)
        # No record and no annotations in a version-1 row: the labels say what they can.
        assert (view.alert.rule, view.alert.labels["level"]) == ("FloodLevel", "siaga-3")
        assert view.alert.annotations == {} and view.alert.starts_at_ns == T0
        book.apply(change("siaga-2", T0 + HOUR))  # the new columns are written
        (later,) = book.as_of(T0 + 2 * HOUR, WEEK)
        assert later.alert.annotations == {"summary": "manggarai at siaga-2"}
    with closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(AlertStore.MIGRATIONS),)
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM history WHERE at BETWEEN 1 AND 2"
        ).fetchall()
        assert any("history_at" in str(row) for row in plan)


def test_a_version_one_row_takes_summary_and_start_from_the_current_record(
    tmp_path: Path, clock: Clock
) -> None:
    with VersionOneStore(tmp_path / "alerts.db") as old, old.transaction() as db:
        db.execute(
            "INSERT INTO history (fingerprint, change, status, severity, labels, at,"
            " recorded_at, paged, reason) VALUES (?, 'firing', 'firing', 'warning', '{}', ?, ?,"
            " 1, 'new')", (FLOOD, T0, T0))
    with open_book(tmp_path, clock) as book:
        book.observe(flood(at=T0 + MINUTE))  # a record, no history row
        (view,) = book.as_of(T0 + 2 * MINUTE, WEEK)
        assert view.alert.annotations == {"summary": "manggarai at siaga-3"}
        assert view.alert.starts_at_ns == T0 - 10 * MINUTE
        assert (view.alert.rule, view.alert.subject) == ("FloodLevel", "manggarai")


def test_a_file_whose_version_was_set_back_migrates_again_and_keeps_its_history(
    tmp_path: Path, clock: Clock
) -> None:
    with open_book(tmp_path, clock) as before:
        before.apply(fire(T0))
    with closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
        db.execute("PRAGMA user_version = 0")
    with open_book(tmp_path, clock) as after:
        assert [h.reason for h in after.history(FLOOD)] == ["new"]
        assert [v.alert.fingerprint for v in after.as_of(T0, WEEK)] == [FLOOD]


class VersionTwoStore(AlertStore):
    """The store as released before alerts were restored by subject: two migrations."""

    MIGRATIONS = AlertStore.MIGRATIONS[:2]


def test_a_version_two_file_gains_the_subject_and_rule_indexes_and_keeps_its_alerts(
    tmp_path: Path, clock: Clock
) -> None:
    with VersionTwoStore(tmp_path / "alerts.db") as old:
        assert old.schema_version == 2
    with open_book(tmp_path, clock) as book:
        book.apply(fire(T0))
        book.apply(fire(T0, device="depok"))
    with closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
        db.execute("PRAGMA user_version = 2")  # as a file the last release wrote
    with open_book(tmp_path, clock) as book:
        assert [a.subject for a in book.restore(["depok"])] == ["depok"]
        assert [v.alert.fingerprint for v in book.as_of(T0, WEEK)] == [DEPOK, FLOOD]
    with closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(AlertStore.MIGRATIONS),)
        indexes = {row[1] for row in db.execute("PRAGMA index_list(alerts)")}
        assert {"alerts_subject", "alerts_rule"} <= indexes  # 3 and 4: by subject, by rule
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT fingerprint FROM alerts WHERE subject IN ('a', 'b')"
        ).fetchall()
        assert any("alerts_subject" in str(row) for row in plan)
