"""The alert book's decisions, pure: what is paged, what is only recorded, and why."""

from __future__ import annotations

from rules.alert import AlertStatus, Severity
from rules.alertbook import (
    Decision,
    Notified,
    decide,
    decide_repeat,
)
from rules.alertstore import Ack, AlertRow
from rules.paging import kept_ack
from tests.rules.books import (
    HOUR,
    MAX_AGE,
    MINUTE,
    REPEAT,
    T0,
    TOLD_FIRING,
    change,
    fire,
    flood,
    move,
    resolve,
)

# decide: one rule each, pure


def test_pending_is_never_paged() -> None:
    pending = move("pending", flood(AlertStatus.PENDING), None)
    assert decide(pending, Notified(), False, T0, MAX_AGE) == Decision(False, "pending")


def test_abandoned_is_never_paged() -> None:
    abandoned = move("abandoned", flood(AlertStatus.RESOLVED), AlertStatus.PENDING)
    assert decide(abandoned, Notified(), False, T0, MAX_AGE) == Decision(False, "abandoned")


def test_a_fresh_firing_is_paged_as_new() -> None:
    assert decide(fire(T0 - MINUTE), Notified(), False, T0, MAX_AGE) == Decision(True, "new")


def test_a_silenced_firing_is_recorded_as_silenced() -> None:
    assert decide(fire(), Notified(), True, T0, MAX_AGE) == Decision(False, "silenced")


def test_a_firing_older_than_the_page_max_age_is_recorded_as_stale() -> None:
    old = fire(T0 - MAX_AGE - 1)
    assert decide(old, Notified(), False, T0, MAX_AGE) == Decision(False, "stale")


def test_a_change_of_a_told_alert_is_paged_as_changed() -> None:
    assert decide(change("siaga-2"), TOLD_FIRING, False, T0, MAX_AGE) == Decision(True, "changed")


def test_a_late_change_of_a_told_alert_is_still_paged() -> None:
    late = change("siaga-2", at=T0 - 5 * HOUR)
    assert decide(late, TOLD_FIRING, False, T0, MAX_AGE) == Decision(True, "changed")


def test_a_silenced_change_is_not_paged() -> None:
    assert decide(change("siaga-2"), TOLD_FIRING, True, T0, MAX_AGE) == Decision(False, "silenced")


def test_a_fresh_change_of_an_alert_never_told_is_paged_as_new() -> None:
    assert decide(change("siaga-2"), Notified(), False, T0, MAX_AGE) == Decision(True, "new")


def test_a_stale_change_of_an_alert_never_told_is_recorded_as_stale() -> None:
    stale = change("siaga-2", at=T0 - HOUR)
    assert decide(stale, Notified(), False, T0, MAX_AGE) == Decision(False, "stale")


def test_a_firing_operators_already_know_is_not_paged_again() -> None:
    assert decide(fire(), TOLD_FIRING, False, T0, MAX_AGE) == Decision(False, "unchanged")


def test_the_resolution_of_a_told_alert_is_paged_even_when_stale_and_silenced() -> None:
    late = resolve(at=T0 - 5 * HOUR)
    assert decide(late, TOLD_FIRING, True, T0, MAX_AGE) == Decision(True, "resolved")


def test_the_resolution_of_an_alert_never_told_is_only_recorded() -> None:
    assert decide(resolve(), Notified(), False, T0, MAX_AGE) == Decision(False, "never-paged")
    told_over = Notified("resolved", None, T0)
    assert decide(resolve(), told_over, False, T0, MAX_AGE) == Decision(False, "never-paged")


def test_a_repeat_is_due_once_the_interval_has_passed() -> None:
    row = AlertRow(flood(), TOLD_FIRING)
    assert decide_repeat(row, False, T0 + REPEAT - 1, REPEAT) == Decision(False, "not-due")
    assert decide_repeat(row, False, T0 + REPEAT, REPEAT) == Decision(True, "repeat")


def test_no_repeat_for_acknowledged_silenced_or_never_told_alerts() -> None:
    later = T0 + 2 * REPEAT
    acked = AlertRow(flood(), TOLD_FIRING, ack=Ack(T0, "budi", "on it", Severity.WARNING))
    assert decide_repeat(acked, False, later, REPEAT) == Decision(False, "acknowledged")
    told = AlertRow(flood(), TOLD_FIRING)
    assert decide_repeat(told, True, later, REPEAT) == Decision(False, "silenced")
    untold = AlertRow(flood(), Notified())
    assert decide_repeat(untold, False, later, REPEAT) == Decision(False, "never-paged")




def test_an_ack_is_kept_up_to_the_severity_acknowledged_not_the_last_one() -> None:
    dipped = AlertRow(flood(level="siaga-3"), TOLD_FIRING,
                      ack=Ack(T0, "budi", "on it", Severity.MAJOR))
    assert kept_ack(dipped, change("siaga-2")) == dipped.ack
    assert kept_ack(dipped, change("siaga-1")) is None
