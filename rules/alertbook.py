"""The alert book: alert state, history, acks and silences in SQLite or a shared PostgreSQL
(policy: `rules.paging`)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

from rules.alert import Alert, AlertStatus, Notification, Transition
from rules.alertschema import open_backend
from rules.alertstore import (
    Ack,
    AlertRow,
    AlertTables,
    HistoryEntry,
    Notified,
    NotifiedStatus,
    Pruned,
    content_digest,
)
from rules.paging import (
    Decision,
    decide,
    decide_firing,
    decide_news,
    decide_repeat,
    kept_ack,
    notification,
)
from rules.silences import Matcher, Silence, SilenceError, matches_all, silencing
from siaga_core.errors import InputError

__all__ = [
    "ALL", "Ack", "AlertBook", "AlertBookError", "AlertNotActive", "AlertView", "Decision",
    "HistoryEntry", "Notified", "Pruned", "Send", "UnknownSilence", "decide", "decide_news",
    "decide_repeat",
]

_WITHHELD = ("silenced", "stale")  # a firing state not told for these may be told later
ALL = "*"  # what listeners get when a silence changes: any alert's view may have changed
# The key the book-wide scheduled jobs (repeats, the refresh after silences) take turns on;
# not a fingerprint (16 hex digits), so it holds no alert's turn.
_SCHEDULED = "scheduled-jobs"

log = logging.getLogger(__name__)

Listener = Callable[[str], None]
# The dispatcher: takes a notification, says which receivers it went to (None: it does not say,
# and the book remembers none).
Send = Callable[[Notification], Iterable[str] | None]


class AlertBookError(InputError):
    """Root of the alert book's errors: a request the book cannot do as asked.

    InputError (siaga_core.errors)
     +-- AlertBookError
          +-- AlertNotActive   (acknowledging an alert that is over)
          +-- UnknownSilence   (expiring a silence that does not exist)
    """


class AlertNotActive(AlertBookError):
    """Only a pending or firing alert can be acknowledged."""


class UnknownSilence(AlertBookError):
    """No silence has this id."""


@dataclass(frozen=True, slots=True)
class AlertView:
    """One alert as operators see it: the record, its ack, silence, and what they were told."""

    alert: Alert
    ack: Ack | None
    notified: Notified
    silenced_by: str | None  # the id of the active silence that matches it

    @property
    def silenced(self) -> bool:
        return self.silenced_by is not None


class AlertBook:
    """Alert records, history and silences; decides which changes are paged.

    In SQLite at `path` (the default), or in a PostgreSQL several Siaga instances share
    (`database_url`). Methods are synchronous and quick (the app calls them through
    `asyncio.to_thread`); each is one transaction, so threads, and instances on one
    PostgreSQL, may share the book. A method that reads an alert to write it back first
    takes that alert's turn (an advisory lock on PostgreSQL; SQLite's one writer already
    takes turns), and the scheduled jobs take a book-wide turn: two instances applying the
    same change, or running the repeats at once, page once. Wall-clock arguments (`now_ns`)
    default to the injected clock.
    """

    def __init__(
        self,
        path: Path,
        *,
        page_max_age_ns: int,
        repeat_interval_ns: int,
        clock_ns: Callable[[], int] = time.time_ns,
        send: Send | None = None,
        database_url: str | None = None,
    ) -> None:
        """`send` (the dispatcher) gets each notification inside the transaction that
        records it as told: if the process dies before the commit, the notification may
        go out twice, never zero times (at least once, SPEC section 3). It returns the
        receivers it went to: the book keeps those of the pages that say the alert fires, and
        hands them back with each later notification of the episode (`Notification.also_to`),
        so whoever heard an alert fire hears it end, whatever its labels say by then.

        With `database_url` (postgresql://...) the book lives in that database and `path`
        is not used; a malformed URL is a ConfigurationError naming `alerting.database_url`.
        """
        self._send = send
        if page_max_age_ns <= 0 or repeat_interval_ns <= 0:
            raise ValueError("page_max_age_ns and repeat_interval_ns must be positive")
        self._page_max_age_ns = page_max_age_ns
        self._repeat_interval_ns = repeat_interval_ns
        self._clock_ns = clock_ns
        self._backend = open_backend(database_url, path)
        # A tuple replaced whole under a lock: `_tell` reads it without one, from any thread.
        self._listeners: tuple[Listener, ...] = ()
        self._listeners_lock = threading.Lock()
        self._active_silences: frozenset[str] | None = None  # as of the last refresh

    def listen(self, callback: Listener) -> Callable[[], None]:
        """Call `callback(fingerprint)` after each committed change of an alert; the unsubscribe.

        Called after the commit of `apply`, `due_repeats`, `acknowledge`, and `observe` when
        it writes history (the per-reading refreshes are left out: they change only the
        value an alert shows, and come at the rate of readings). After a change of silences
        (`add_silence`, `expire_silence`, or `refresh_after_silence_change` seeing another
        set of active silences) it gets `ALL` ("*"), as any alert may now be silenced or not.
        It runs in the caller's thread, often a worker thread: it must be quick and
        thread-safe (the console's hub hands it to its loop). One that raises is logged and
        the book goes on.

        Listeners are this process's: a change another instance makes to a shared book is
        not heard here (the console asks `changed_since` every few seconds).
        """
        with self._listeners_lock:
            self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            with self._listeners_lock:
                kept = list(self._listeners)
                if callback in kept:
                    kept.remove(callback)
                self._listeners = tuple(kept)

        return unsubscribe

    def _tell(self, fingerprints: Iterable[str]) -> None:
        listeners = self._listeners
        if not listeners:
            return
        for fingerprint in fingerprints:
            for callback in listeners:
                try:
                    callback(fingerprint)
                except Exception:  # a listener's fault must not undo or block the book's work
                    log.exception("alert book listener %r failed on %s", callback, fingerprint)

    def apply(self, transition: Transition, now_ns: int | None = None) -> Notification | None:
        """Record one change of an alert and its history; the notification, if it is paged."""
        now, alert = self._now(now_ns), transition.alert
        with self._tables() as tables:
            # Another instance applying the same change waits here, then reads what this
            # one told: it decides "unchanged" rather than paging again.
            tables.serialize(alert.fingerprint)
            old = tables.row(alert.fingerprint)
            if old is not None and alert.evaluated_at_ns < old.alert.evaluated_at_ns:
                # Older than what the book holds: an instance that lost its partition but
                # had not yet noticed, applying what the new owner already moved past.
                return None
            notified = Notified() if old is None else old.notified
            silence = silencing(tables.silences(now), alert.labels, now)
            decision = decide(transition, notified, silence is not None, now,
                              self._page_max_age_ns)
            row = AlertRow(alert, notified, kept_ack(old, transition),
                           told=frozenset() if old is None else old.told)
            sent = self._record(tables, row, transition.change, decision, now, silence)
        self._tell((alert.fingerprint,))
        return sent

    def observe(self, alert: Alert, now_ns: int | None = None,
                note: str = "") -> Notification | None:
        """Keep a record that a signal updated without a change (the engine's `step` gave none).

        Keeps `active_at` current for keep-firing-for after a restart, and tells operators
        of an alert withheld as stale or silenced once it is fresh and unsilenced. A `note`
        (a resident's report linked to the alert) goes into the history; new annotations
        alone are not news (`content_digest` leaves them out), so they page nobody.
        """
        if alert.status is AlertStatus.RESOLVED:
            return None  # a quiet subject: nothing to keep, and no write per reading
        now = self._now(now_ns)
        with self._tables() as tables:
            tables.serialize(alert.fingerprint)
            old = tables.row(alert.fingerprint)
            if old is not None and _outdated(alert, old.alert):
                # Another instance of a cluster judged the alert since this one's copy (a
                # report or a camera noted on a gauge another instance reads): writing the
                # copy back would undo that instance's change, and could page it again.
                return None
            row = AlertRow(alert) if old is None else replace(old, alert=alert)
            if alert.status is not AlertStatus.FIRING:
                tables.save(row, now)
                return None
            silence = silencing(tables.silences(now), alert.labels, now)
            decision = decide_firing(alert, row.notified, silence is not None,
                                      now - self._page_max_age_ns)
            recorded = decision.page or bool(note)
            sent = self._record(tables, row, "refresh", decision, now, silence,
                                history=recorded, note=note)
        if recorded:
            self._tell((alert.fingerprint,))
        return sent

    def restore(self, subjects: Collection[str] | None = None) -> list[Alert]:
        """The pending and firing alerts, for the engine to resume after a restart; only
        those of `subjects` (device ids, ...) when given, for an instance taking over a
        partition of the devices. Newest episode first."""
        if subjects is not None and not subjects:
            return []
        open_ = (AlertStatus.PENDING, AlertStatus.FIRING)
        with self._tables() as tables:
            rows = tables.rows(open_) if subjects is None else tables.rows_of(subjects, open_)
        return [row.alert for row in rows]

    def last_judged(self, device_ids: Collection[str], rules: Collection[str]
                    ) -> dict[str, int]:
        """Per device, the event time of the newest of its readings that changed one of its
        alerts of `rules` (`evaluated_at`): the rules judging the device's own readings
        (`RuleEngine.judging_rules`), not the wall-clock checks nor another device's rules
        that name it. For an instance taking over the device's partition: readings up to
        then were judged by the one before (`RuleEngine.reload`).
        """
        if not device_ids or not rules:
            return {}
        with self._tables() as tables:
            return tables.last_judged(device_ids, rules)

    def under(self, prefixes: Collection[str], rules: Collection[str]) -> list[Alert]:
        """The alerts of `rules`, in any status (the latest episode of each), whose subject
        starts with one of `prefixes`: a camera's hotspots and plates, whose subjects are
        `camera-id/...`, for an instance taking its events over (`Alerting._take_over_events`)."""
        if not prefixes or not rules:
            return []
        with self._tables() as tables:
            return [row.alert for row in tables.rows_under(prefixes, rules)]

    def due_repeats(self, now_ns: int | None = None) -> list[Notification]:
        """Reminders of firing alerts told but unacknowledged for `repeat_interval`."""
        now = self._now(now_ns)
        sent: list[Notification] = []
        with self._tables() as tables:
            tables.serialize(_SCHEDULED)  # another instance's run waits, then finds none due
            silences = tables.silences(now)
            for listed in tables.rows((AlertStatus.FIRING,)):
                if not self._repeat(listed, silences, now).page:
                    continue
                row = self._taken(tables, listed)
                if row is None:
                    continue
                silence = silencing(silences, row.alert.labels, now)
                decision = self._repeat(row, silences, now)
                told = (self._record(tables, row, "repeat", decision, now, silence)
                        if decision.page else None)
                if told is not None:
                    sent.append(told)
        self._tell(told.fingerprint for told in sent)
        return sent

    def _repeat(self, row: AlertRow, silences: Sequence[Silence], now_ns: int) -> Decision:
        silenced = silencing(silences, row.alert.labels, now_ns) is not None
        return decide_repeat(row, silenced, now_ns, self._repeat_interval_ns)

    @staticmethod
    def _taken(tables: AlertTables, listed: AlertRow) -> AlertRow | None:
        """The row once this transaction holds its alert's turn: an instance's `apply` may
        have changed it (or the row gone) since the list was read."""
        tables.serialize(listed.alert.fingerprint)
        return tables.row(listed.alert.fingerprint)

    def refresh_after_silence_change(self, now_ns: int | None = None) -> list[Notification]:
        """Tell the firing alerts a silence kept back, now that no silence covers them.

        A silence suppresses and its expiry restores: call this after expiring a silence,
        and on a schedule for silences that end by themselves.
        """
        now = self._now(now_ns)
        sent: list[Notification] = []
        changed: list[str] = []
        with self._tables() as tables:
            tables.serialize(_SCHEDULED)
            silences = tables.silences(now)
            for listed in tables.rows((AlertStatus.FIRING,)):
                if not _held_back(listed, silences, now):
                    continue
                row = self._taken(tables, listed)
                if row is None or not _held_back(row, silences, now):
                    continue
                decision = decide_news(row.alert, row.notified)
                told = self._record(tables, row, "refresh", decision, now, None,
                                    history=decision.page)
                changed.append(row.alert.fingerprint)
                if told is not None:
                    sent.append(told)
        # Run on a schedule too: listeners hear of it only when the active silences differ
        # from the last look (one began or ended by itself) or a withheld alert came out.
        active = frozenset(silence.id for silence in silences if silence.starts_at_ns <= now)
        if active != self._active_silences:
            self._active_silences = active
            self._tell((ALL,))
        else:
            self._tell(changed)
        return sent

    def acknowledge(
        self, fingerprint: str, by: str, comment: str = "", now_ns: int | None = None
    ) -> AlertView | None:
        """Mark an alert as being handled (no more repeats); None if there is no such alert.

        Raises AlertNotActive for an alert that is over. The ack lasts until the alert
        resolves or escalates above the severity it had when acknowledged.
        """
        if not by.strip():
            raise ValueError("an acknowledgement needs who gives it")
        now = self._now(now_ns)
        with self._tables() as tables:
            tables.serialize(fingerprint)
            row = tables.row(fingerprint)
            if row is None:
                return None
            if row.alert.status is AlertStatus.RESOLVED:
                raise AlertNotActive(f"alert {fingerprint} is resolved: nothing to acknowledge")
            row = replace(row, ack=Ack(now, by, comment, row.alert.severity))
            tables.save(row, now)
            tables.add_history(row.alert, "acknowledged", recorded_at_ns=now, paged=False,
                               reason="acknowledged", note=f"{by}: {comment}")
            view = self._view(row, tables.silences(now), now)
        self._tell((fingerprint,))
        return view

    def alerts(
        self,
        status: AlertStatus | None = None,
        matchers: Sequence[Matcher] = (),
        limit: int = 100,
    ) -> list[AlertView]:
        """Alerts, newest first, with a status and matching every label matcher given."""
        now = self._now(None)
        with self._tables() as tables:
            # Without matchers the database counts the limit; with them, every row is matched.
            rows = tables.rows(() if status is None else (status,), None if matchers else limit)
            silences = tables.silences(now)
        chosen = [row for row in rows if matches_all(matchers, row.alert.labels)][:limit]
        return [self._view(row, silences, now) for row in chosen]

    def changed_since(self, since_ns: int, limit: int = 5000) -> list[str]:
        """The alerts whose history grew after `since_ns` (wall time of the write), latest
        first: what any instance sharing the book changed (`listen` hears this one only)."""
        with self._tables() as tables:
            return tables.changed_since(since_ns, limit)

    def resolved_since(self, since_ns: int, limit: int = 5000) -> list[AlertView]:
        """Alerts resolved at or after `since_ns` (event time of their end), latest first."""
        now = self._now(None)
        with self._tables() as tables:
            rows = tables.resolved_since(since_ns, limit)
            silences = tables.silences(now)
        return [self._view(row, silences, now) for row in rows]

    def get(self, fingerprint: str) -> AlertView | None:
        now = self._now(None)
        with self._tables() as tables:
            row = tables.row(fingerprint)
            silences = tables.silences(now)
        return None if row is None else self._view(row, silences, now)

    def as_of(self, at_ns: int, lookback_ns: int) -> list[AlertView]:
        """The alerts pending or firing at `at_ns` (event time), as their history says they
        were then (labels, severity, annotations); newest change first.

        Only state is rebuilt: acks and silences of that moment are not (the views carry
        none), and an episode whose last change is older than `lookback_ns` is not found.
        """
        if lookback_ns < 0:
            raise ValueError("lookback_ns must not be negative")
        with self._tables() as tables:
            alerts = tables.as_of(at_ns, at_ns - lookback_ns)
        return [AlertView(alert, None, Notified(), None) for alert in alerts]

    def history(self, fingerprint: str | None = None, limit: int = 100) -> list[HistoryEntry]:
        """History entries, newest first, of one alert or of all."""
        with self._tables() as tables:
            return tables.history(fingerprint, limit)

    def counts_by_status(self) -> dict[str, int]:
        """How many alerts are in each state (every state listed, for /metrics)."""
        with self._tables() as tables:
            counts = tables.counts()
        return {status.value: counts.get(status.value, 0) for status in AlertStatus}

    def add_silence(
        self,
        matchers: Iterable[Matcher],
        starts_at_ns: int,
        ends_at_ns: int,
        created_by: str,
        comment: str = "",
        now_ns: int | None = None,
    ) -> Silence:
        """Store a new silence; raises SilenceError for one that cannot be or is already over."""
        now = self._now(now_ns)
        if ends_at_ns <= max(starts_at_ns, now):
            raise SilenceError("a silence must end after it starts and after now")
        silence = Silence(uuid.uuid4().hex, tuple(matchers), starts_at_ns, ends_at_ns,
                          created_by, comment)
        with self._tables() as tables:
            tables.add_silence(silence, now)
        self._tell((ALL,))
        return silence

    def silences(self, include_expired: bool = False, now_ns: int | None = None) -> list[Silence]:
        """Silences, latest start first; expired ones too when asked (who silenced what)."""
        with self._tables() as tables:
            return tables.silences(None if include_expired else self._now(now_ns))

    def expire_silence(self, silence_id: str, now_ns: int | None = None) -> Silence:
        """End a silence now (an expired one is returned as it is). Raises UnknownSilence.

        Then call `refresh_after_silence_change` to tell what it kept back.
        """
        now = self._now(now_ns)
        with self._tables() as tables:
            tables.serialize(f"silence:{silence_id}")  # two expiries of one silence take turns
            silence = tables.silence(silence_id)
            if silence is None:
                raise UnknownSilence(f"no silence has id {silence_id!r}")
            if silence.expired(now):
                return silence
            # A silence that had not started yet ends before it begins, as in Alertmanager.
            silence = replace(silence, starts_at_ns=min(silence.starts_at_ns, now), ends_at_ns=now)
            tables.set_silence_times(silence.id, silence.starts_at_ns, silence.ends_at_ns)
        self._tell((ALL,))
        return silence

    def silenced(self, labels: Mapping[str, str], now_ns: int | None = None) -> Silence | None:
        """The active silence covering these labels, if any."""
        now = self._now(now_ns)
        with self._tables() as tables:
            return silencing(tables.silences(now), labels, now)

    def prune(self, older_than_ns: int) -> Pruned:
        """Forget history, resolved alerts and expired silences from before `older_than_ns`."""
        with self._tables() as tables:
            return tables.prune(older_than_ns)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._backend.close()

    @contextmanager
    def _tables(self) -> Iterator[AlertTables]:
        """One transaction on the book's tables: committed at the end, rolled back on error."""
        with self._backend.begin() as tx:
            yield AlertTables(tx)

    def _now(self, now_ns: int | None) -> int:
        return self._clock_ns() if now_ns is None else now_ns

    def _record(
        self,
        tables: AlertTables,
        row: AlertRow,
        change: str,
        decision: Decision,
        now_ns: int,
        silence: Silence | None,
        *,
        history: bool = True,
        note: str = "",
    ) -> Notification | None:
        """Save the row with what operators now know, and the decision in the history; when
        it pages, the notification, handed to `send` first (in this transaction)."""
        alert = row.alert
        told = None
        if decision.page:
            told = notification(alert, decision.reason, row.told)
            sent_to = self._sent_to(told)
            status: NotifiedStatus = "resolved" if decision.reason == "resolved" else "firing"
            # Whoever hears that it fires is owed its end; once told the end, nothing more.
            receivers = frozenset() if status == "resolved" else row.told | sent_to
            row = replace(row, notified=Notified(status, content_digest(alert), now_ns),
                          withheld=None, told=receivers)
        elif alert.status is AlertStatus.FIRING and decision.reason in _WITHHELD:
            row = replace(row, withheld=decision.reason)
        else:
            row = replace(row, withheld=None)
        tables.save(row, now_ns)
        if history:
            if silence is not None:
                note = "; ".join(filter(None, (note, f"silence {silence.id}")))
            tables.add_history(alert, change, recorded_at_ns=now_ns, paged=decision.page,
                               reason=decision.reason, note=note)
        return told

    def _sent_to(self, told: Notification) -> frozenset[str]:
        """Hand `told` to `send`; the receivers it went to, as far as `send` says."""
        if self._send is None:
            return frozenset()
        receivers = self._send(told)
        return frozenset() if receivers is None else frozenset(receivers)

    def _view(self, row: AlertRow, silences: Sequence[Silence], now_ns: int) -> AlertView:
        silence = silencing(silences, row.alert.labels, now_ns)
        return AlertView(row.alert, row.ack, row.notified, None if silence is None else silence.id)


def _held_back(row: AlertRow, silences: Sequence[Silence], now_ns: int) -> bool:
    """A firing alert a silence kept back that no silence covers any more."""
    return row.withheld == "silenced" and silencing(silences, row.alert.labels, now_ns) is None


def _outdated(alert: Alert, stored: Alert) -> bool:
    """Whether `alert` is an older copy than the book's: another status, or judged earlier."""
    return alert.status is not stored.status or alert.evaluated_at_ns < stored.evaluated_at_ns
