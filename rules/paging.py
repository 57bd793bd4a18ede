"""Who gets paged for what: pure decisions from an alert change and what operators know.

The promise to operators: a firing alert is told once it is fresh and unsilenced (and
again, as a repeat, until someone acknowledges it); once told, each change of it is told
unless silenced, and its end is always told, however late. Everything else is only
recorded, with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rules.alert import Alert, AlertStatus, Notification, Transition
from rules.alertstore import Ack, AlertRow, Notified, content_digest

_FIRING_REASONS: dict[str, Literal["new", "changed", "repeat"]] = {
    "new": "new", "changed": "changed", "repeat": "repeat",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to notify operators of a change, and why (kept in the history either way)."""

    page: bool
    reason: str  # paged: new, changed, resolved, repeat; else: pending, abandoned, silenced,
    # stale, unchanged, never-paged, acknowledged, not-due


def decide(
    transition: Transition, notified: Notified, silenced: bool, now_ns: int, page_max_age_ns: int
) -> Decision:
    """Whether `transition` becomes a notification, given what operators were told so far.

    Pure, with the wall clock passed in (Alertmanager's `needsUpdate` in spirit).
    """
    change = transition.change
    if change in ("pending", "abandoned"):
        return Decision(False, change)
    if change == "resolved":
        # Never leave operators believing in a fire that is out, however late the news.
        if notified.status == "firing":
            return Decision(True, "resolved")
        return Decision(False, "never-paged")
    return decide_firing(transition.alert, notified, silenced, now_ns - page_max_age_ns)


def decide_news(alert: Alert, notified: Notified) -> Decision:
    """For a firing alert that may be told: what operators do not know yet, if anything."""
    if notified.status != "firing":
        return Decision(True, "new")
    if notified.digest != content_digest(alert):
        return Decision(True, "changed")
    return Decision(False, "unchanged")


def decide_repeat(row: AlertRow, silenced: bool, now_ns: int, repeat_interval_ns: int) -> Decision:
    """Whether operators are reminded of a firing alert they were told about."""
    told_at = row.notified.at_ns
    if row.alert.status is not AlertStatus.FIRING or row.notified.status != "firing":
        return Decision(False, "never-paged")
    if row.ack is not None:
        return Decision(False, "acknowledged")
    if silenced:
        return Decision(False, "silenced")
    if told_at is not None and now_ns - told_at < repeat_interval_ns:
        return Decision(False, "not-due")
    return Decision(True, "repeat")


def decide_firing(
    alert: Alert, notified: Notified, silenced: bool, fresh_after_ns: int
) -> Decision:
    """For an alert firing now: withheld while silenced, or stale and not yet told."""
    if silenced:
        return Decision(False, "silenced")
    if notified.status != "firing" and alert.evaluated_at_ns < fresh_after_ns:
        # A backlog replaying last night starts nothing in operators' minds: history, not
        # news. An alert they already follow is followed to its end, late news included.
        return Decision(False, "stale")
    return decide_news(alert, notified)


def kept_ack(old: AlertRow | None, transition: Transition) -> Ack | None:
    """An ack belongs to one episode, at the severity acknowledged or below."""
    if old is None or old.ack is None:
        return None
    if transition.previous in (None, AlertStatus.RESOLVED):
        return None  # a new episode: nobody has looked at it yet
    if transition.alert.severity.rank > old.ack.severity.rank:
        # Worse than what was acknowledged: repeats resume until acked again. Back at that
        # severity after a dip below it is what the operator already took on: still acked.
        return None
    return old.ack


def notification(alert: Alert, reason: str, told: frozenset[str] = frozenset()) -> Notification:
    """What operators are told, for a decision that pages with `reason`; also to the
    receivers `told` it fires in this episode (`AlertRow.told`)."""
    if reason == "resolved":
        return Notification(alert.fingerprint, "resolved", "resolved", alert.labels,
                            alert.annotations, alert.starts_at_ns, alert.ends_at_ns, told)
    return Notification(alert.fingerprint, "firing", _FIRING_REASONS[reason], alert.labels,
                        alert.annotations, alert.starts_at_ns, None, told)
