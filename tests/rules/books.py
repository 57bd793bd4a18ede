"""The alert book's and the outbox's test ground: a wall clock the test sets, where a book or
an outbox lives (a temporary SQLite file, or a fresh database on the session's PostgreSQL),
and the FloodLevel alerts and transitions the book tests feed it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rules.alert import Alert, AlertStatus, Change, Severity, Transition, fingerprint
from rules.alertbook import AlertBook, Notified, Send
from rules.alertstore import content_digest
from rules.outbox import Outbox
from siaga.sandbox.postgres import PostgreSQL

DEFAULT_RULES = Path(__file__).parents[2] / "rules" / "default.yaml"  # the bundled rules
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
MINUTE = 60 * 1_000_000_000
HOUR = 60 * MINUTE
MAX_AGE = 15 * MINUTE
REPEAT = HOUR
LEVELS = {
    "siaga-3": Severity.WARNING, "siaga-2": Severity.MAJOR, "siaga-1": Severity.CRITICAL,
}
FLOOD = fingerprint("FloodLevel", "manggarai")


class Clock:
    """The wall clock, set by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_book(tmp_path: Path, clock: Clock) -> AlertBook:
    return AlertBook(tmp_path / "alerts.db", page_max_age_ns=MAX_AGE,
                     repeat_interval_ns=REPEAT, clock_ns=clock)


@contextmanager
def fresh_database(server: PostgreSQL, prefix: str) -> Iterator[str]:
    """A new empty database on the session's PostgreSQL, dropped afterwards; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


@dataclass(frozen=True, slots=True)
class BookPlace:
    """Where a test's book lives: the SQLite file, or the PostgreSQL database (then the
    file is not used); every `open` is another instance on the same book."""

    path: Path
    database_url: str | None

    def open(self, clock: Clock, send: Send | None = None
             ) -> AlertBook:
        return AlertBook(self.path, page_max_age_ns=MAX_AGE, repeat_interval_ns=REPEAT,
                         clock_ns=clock, send=send, database_url=self.database_url)


@dataclass(frozen=True, slots=True)
class OutboxPlace:
    """Where a test's outbox lives; `open` opens it again, as another instance would."""

    path: Path
    database_url: str | None

    def open(self, clock_ns: Callable[[], int] = lambda: T0, owner: str | None = None
             ) -> Outbox:
        return Outbox(self.path, clock_ns, database_url=self.database_url, owner=owner)


def flood(status: AlertStatus = AlertStatus.FIRING, *, level: str = "siaga-3", at: int = T0,
          device: str = "manggarai") -> Alert:
    severity = LEVELS[level]
    return Alert(
        fingerprint=fingerprint("FloodLevel", device), rule="FloodLevel", subject=device,
        status=status, severity=severity,
        labels={"alertname": "FloodLevel", "severity": severity.value, "device_id": device,
                "kind": "water-level", "level": level},
        annotations={"summary": f"{device} at {level}"},
        starts_at_ns=T0 - 10 * MINUTE, ends_at_ns=at if status is AlertStatus.RESOLVED else None,
        active_at_ns=at, evaluated_at_ns=at,
    )


def move(change: Change, alert: Alert, previous: AlertStatus | None = None) -> Transition:
    return Transition(change, alert, previous)


def fire(at: int = T0, level: str = "siaga-3", device: str = "manggarai") -> Transition:
    return move("firing", flood(level=level, at=at, device=device), AlertStatus.PENDING)


def change(level: str, at: int = T0) -> Transition:
    return move("changed", flood(level=level, at=at), AlertStatus.FIRING)


def resolve(at: int = T0, level: str = "siaga-3") -> Transition:
    return move("resolved", flood(AlertStatus.RESOLVED, level=level, at=at), AlertStatus.FIRING)


TOLD_FIRING = Notified("firing", content_digest(flood()), T0)
