"""What an alert is: identity, state, and the lifecycle step from a rule's signal to a change.

Flow (one way): a rule's condition looks at a reading (or at the clock, for silent devices)
and emits a `Signal` for one subject; `step` turns the signal and the alert's current
record into a `Transition` (or nothing); the alert book applies transitions, keeps history,
and decides which become a `Notification`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Final, Literal, NamedTuple

# Indonesia's zones by offset: operators read "14:05 WIB", not "+07:00".
ZONE_NAMES: Final = {"+07:00": "WIB", "+08:00": "WITA", "+09:00": "WIT", "+00:00": "UTC"}


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}


class AlertStatus(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


Change = Literal["pending", "firing", "changed", "resolved", "abandoned"]
# pending:   the condition holds, its `for` has not elapsed yet
# firing:    it held for `for`: the alert fires (notified as new)
# changed:   still firing, but severity or labels changed (Siaga 3 -> Siaga 2): notified
# resolved:  it stopped holding (after keep-firing-for): notified as resolved
# abandoned: it stopped holding while pending: recorded, never notified


def fingerprint(rule: str, subject: str) -> str:
    """The stable id of one rule on one subject, from first firing to resolution."""
    return hashlib.sha256(f"{rule}\x00{subject}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a condition must hold before firing, and keep firing after it stops."""

    for_ns: int = 0
    keep_firing_for_ns: int = 0


class Signal(NamedTuple):
    """What a rule's condition says about one subject at one (event) time.

    A NamedTuple, as `Reading` is: most readings make one (the rule still does not
    hold), and a frozen dataclass costs twice as much to build.
    """

    rule: str
    subject: str  # a device id, or an area such as "river=Ciliwung"
    active: bool
    at_ns: int
    severity: Severity
    labels: Mapping[str, str]  # alertname, severity, device_id, kind, level, device labels...
    annotations: Mapping[str, str]  # summary, description, value, ...

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.subject)


@dataclass(frozen=True, slots=True)
class Alert:
    """The current record of one alert (persisted by the alert book)."""

    fingerprint: str
    rule: str
    subject: str
    status: AlertStatus
    severity: Severity
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at_ns: int  # event time the condition began (pending) or fired
    ends_at_ns: int | None  # event time it resolved
    active_at_ns: int  # event time the condition was last seen holding
    evaluated_at_ns: int  # event time of the latest signal applied


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of an alert, with the record as it is after the change."""

    change: Change
    alert: Alert
    previous: AlertStatus | None


Stepped = tuple["Alert | None", "Transition | None"]


def step(alert: Alert | None, signal: Signal, timing: Timing) -> Stepped:
    """Apply one signal to an alert's record: the new record, and the change if there is one.

    Pure: no clock, no I/O. Signals older than the record's latest are the caller's to
    filter (late data is stored but does not re-fire).
    """
    if signal.active:
        return _step_active(alert, signal, timing)
    return _step_inactive(alert, signal, timing)


def resolved_with(transition: Transition, annotations: Mapping[str, str]) -> Transition:
    """A resolution that says what happened: `annotations` (the condition's account of the
    end: summary, description, the last value and when) over the alert's firing ones, so
    a rule's own extra annotations (a runbook link) still travel with it."""
    alert = replace(transition.alert, annotations={**transition.alert.annotations, **annotations})
    return Transition(transition.change, alert, transition.previous)


def zone(utc_offset: str) -> timezone:
    """`+07:00` -> its timezone (the offset is validated where it is configured)."""
    hours, minutes = utc_offset[1:].split(":")
    sign = -1 if utc_offset.startswith("-") else 1
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


def local_time(ns: int, utc_offset: str) -> str:
    """`2020-01-01 14:05 WIB`: an instant as operators read it, in their zone."""
    stamp = datetime.fromtimestamp(ns / 1e9, zone(utc_offset)).strftime("%Y-%m-%d %H:%M")
    return f"{stamp} {ZONE_NAMES.get(utc_offset, 'UTC' + utc_offset)}"


def ended(summary: str, description: str, at_ns: int, utc_offset: str,
          **extra: str) -> dict[str, str]:
    """The annotations of a resolution: what happened, and when (RFC 3339 in `resolved_at`)."""
    resolved_at = datetime.fromtimestamp(at_ns / 1e9, zone(utc_offset)).isoformat("T", "seconds")
    return {"summary": summary, "description": description, "resolved_at": resolved_at, **extra}


def _step_active(alert: Alert | None, signal: Signal, timing: Timing) -> Stepped:
    if alert is None or alert.status is AlertStatus.RESOLVED:
        status = AlertStatus.FIRING if timing.for_ns <= 0 else AlertStatus.PENDING
        new = _record(signal, status, starts_at_ns=signal.at_ns, alert=alert)
        return new, Transition("firing" if status is AlertStatus.FIRING else "pending", new,
                               None if alert is None else alert.status)
    if alert.status is AlertStatus.PENDING:
        if signal.at_ns - alert.starts_at_ns >= timing.for_ns:
            new = _record(signal, AlertStatus.FIRING, starts_at_ns=alert.starts_at_ns,
                          alert=alert)
            return new, Transition("firing", new, AlertStatus.PENDING)
        return _record(signal, AlertStatus.PENDING, starts_at_ns=alert.starts_at_ns,
                       alert=alert), None
    new = _record(signal, AlertStatus.FIRING, starts_at_ns=alert.starts_at_ns, alert=alert)
    if new.severity != alert.severity or dict(new.labels) != dict(alert.labels):
        return new, Transition("changed", new, AlertStatus.FIRING)
    return new, None


def _step_inactive(alert: Alert | None, signal: Signal, timing: Timing) -> Stepped:
    if alert is None or alert.status is AlertStatus.RESOLVED:
        return alert, None
    if alert.status is AlertStatus.PENDING:
        new = replace(alert, status=AlertStatus.RESOLVED, ends_at_ns=signal.at_ns,
                      evaluated_at_ns=signal.at_ns)
        return new, Transition("abandoned", new, AlertStatus.PENDING)
    if signal.at_ns - alert.active_at_ns < timing.keep_firing_for_ns:
        return replace(alert, evaluated_at_ns=signal.at_ns), None
    new = replace(alert, status=AlertStatus.RESOLVED, ends_at_ns=signal.at_ns,
                  evaluated_at_ns=signal.at_ns)
    return new, Transition("resolved", new, AlertStatus.FIRING)


def _record(signal: Signal, status: AlertStatus, *, starts_at_ns: int,
            alert: Alert | None) -> Alert:
    # The current record's fingerprint, if any: the same, without a SHA-256 per reading.
    return Alert(
        fingerprint=signal.fingerprint if alert is None else alert.fingerprint,
        rule=signal.rule, subject=signal.subject, status=status,
        severity=signal.severity, labels=dict(signal.labels),
        annotations=dict(signal.annotations), starts_at_ns=starts_at_ns, ends_at_ns=None,
        active_at_ns=signal.at_ns, evaluated_at_ns=signal.at_ns,
    )


@dataclass(frozen=True, slots=True)
class Notification:
    """An alert change that operators are told about (SPEC section 3: one alert per body)."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    reason: Literal["new", "changed", "repeat", "resolved"]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at_ns: int
    ends_at_ns: int | None
    # The receivers told, earlier in this episode, that it fires: it goes to them as well as
    # to those its labels route to now, so a flood that drops back below critical still
    # ends for the monitoring room that heard it was critical.
    also_to: frozenset[str] = frozenset()
