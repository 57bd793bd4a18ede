"""The SQL behind the alert book's tables (alert records, their history, silences), written once
for SQLite and PostgreSQL (their schemas: `rules.alertschema`)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from rules.alert import Alert, AlertStatus, Severity
from rules.silences import Matcher, Silence, parse_matcher
from siaga_core.sqlbackend import Tx

NotifiedStatus = Literal["firing", "resolved"]
_NOTIFIED_STATUS: dict[str, NotifiedStatus] = {"firing": "firing", "resolved": "resolved"}

# Subjects per query of a restore: under SQLite's oldest limit of 999 parameters.
_SUBJECTS_PER_QUERY = 900
# Subject prefixes per query (`rows_under`): each is a LIKE, so fewer than subjects.
_PREFIXES_PER_QUERY = 300
# LIKE's escape character in `rows_under`: device ids may hold `_`, a LIKE wildcard.
_LIKE_ESCAPE = "!"
# The last history row of each alert within [since, at] by event time (the id breaks ties:
# rows are written in order), with the alert's current record for what history lacks.
_AS_OF = """
WITH last AS (
    SELECT fingerprint, status, severity, labels, annotations, starts_at, at,
           ROW_NUMBER() OVER (PARTITION BY fingerprint ORDER BY at DESC, id DESC) AS n
    FROM history WHERE at BETWEEN ? AND ?
)
SELECT last.fingerprint, a.rule, a.subject, last.status, last.severity, last.labels,
       last.annotations, a.annotations, last.starts_at, a.starts_at, last.at
FROM last LEFT JOIN alerts AS a ON a.fingerprint = last.fingerprint
WHERE last.n = 1 AND last.status IN ('pending', 'firing')
ORDER BY last.at DESC, last.fingerprint
"""

_ALERT_COLUMNS = (
    "fingerprint, rule, subject, status, severity, labels, annotations, starts_at, ends_at,"
    " active_at, evaluated_at, acked_at, acked_by, ack_comment, acked_severity, notified_status,"
    " notified_at, notified_digest, withheld, told"
)
_HISTORY_COLUMNS = (
    "id, fingerprint, change, status, severity, labels, at, recorded_at, paged, reason, note"
)
_SILENCE_COLUMNS = "id, matchers, starts_at, ends_at, created_by, comment"
# One row per alert, written whole: an upsert, which SQLite and PostgreSQL both speak.
_ALERT_WRITTEN = [*_ALERT_COLUMNS.split(", "), "updated_at"]
_UPSERT = (
    f"INSERT INTO alerts ({', '.join(_ALERT_WRITTEN)})"
    f" VALUES ({', '.join('?' * len(_ALERT_WRITTEN))}) ON CONFLICT (fingerprint) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _ALERT_WRITTEN[1:])
)


def content_digest(alert: Alert) -> str:
    """What a notification says about an alert (severity and labels), to compare later.

    Annotations are left out: they carry the latest value, which changes with every reading.
    """
    body = orjson.dumps([alert.severity.value, dict(alert.labels)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Notified:
    """What operators were last told of an alert: nothing yet, that it fires, or that it ended."""

    status: NotifiedStatus | None = None
    digest: str | None = None  # content_digest of the alert as last notified
    at_ns: int | None = None  # wall clock


@dataclass(frozen=True, slots=True)
class Ack:
    """An operator's acknowledgement: someone is on it, so stop repeating."""

    at_ns: int  # wall clock
    by: str
    comment: str
    severity: Severity  # the alert's when acknowledged: the ack holds while it is no worse


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert as the book keeps it: the record, what operators know, and any ack."""

    alert: Alert
    notified: Notified = Notified()
    ack: Ack | None = None
    withheld: str | None = None  # why the current firing state was not paged: silenced, stale
    # The receivers told, in this episode, that it fires: its later news goes to them too,
    # whatever its labels say by then (`rules.paging`: a fire told is always told to be out).
    told: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of an alert's history: a change, a repeat or an ack, and what was decided."""

    id: int
    fingerprint: str
    change: str
    status: AlertStatus
    severity: Severity
    labels: Mapping[str, str]
    at_ns: int  # event time of the alert's latest signal
    recorded_at_ns: int  # wall clock
    paged: bool
    reason: str
    note: str


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows `prune` removed from each table."""

    history: int
    alerts: int
    silences: int


class AlertTables:
    """The SQL behind the alert book, run in one transaction (`Backend.begin()`'s `Tx`).

    Written once, with `?` placeholders, in SQL that SQLite and PostgreSQL both speak. The
    book makes several of these calls in one transaction, serializing first (`serialize`)
    where it reads a row to write it back, so that instances sharing a PostgreSQL book
    take turns on one alert as threads on one SQLite file do.
    """

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    def serialize(self, key: str) -> None:
        """Hold `key` (a fingerprint, or a book-wide job) until the transaction ends."""
        self._tx.serialize(key)

    def row(self, fingerprint: str) -> AlertRow | None:
        found = self._tx.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE fingerprint = ?", (fingerprint,))
        return None if not found else _alert_row(found[0])

    def rows(self, statuses: Sequence[AlertStatus] = (), limit: int | None = None
             ) -> list[AlertRow]:
        """Alert rows, newest episode first; only the given statuses when any are given;
        at most `limit` (counted by the database, so a long book is not decoded to be cut)."""
        query = f"SELECT {_ALERT_COLUMNS} FROM alerts"
        if statuses:
            query += f" WHERE status IN ({_marks(len(statuses))})"
        query += " ORDER BY starts_at DESC, fingerprint"
        params: list[object] = [status.value for status in statuses]
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [_alert_row(found) for found in self._tx.execute(query, params)]

    def rows_of(self, subjects: Collection[str], statuses: Sequence[AlertStatus]
                ) -> list[AlertRow]:
        """The rows of these subjects in these statuses (both non-empty), newest episode
        first: one query per 900 subjects, on the subject index."""
        chosen = sorted(set(subjects))
        found: list[AlertRow] = []
        for start in range(0, len(chosen), _SUBJECTS_PER_QUERY):
            chunk = chosen[start:start + _SUBJECTS_PER_QUERY]
            query = (f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE subject IN ({_marks(len(chunk))})"
                     f" AND status IN ({_marks(len(statuses))})")
            params = [*chunk, *(status.value for status in statuses)]
            found += (_alert_row(row) for row in self._tx.execute(query, params))
        # The order `rows` gives, across chunks: later start first, then fingerprint.
        found.sort(key=lambda row: row.alert.fingerprint)
        found.sort(key=lambda row: row.alert.starts_at_ns, reverse=True)
        return found

    def last_judged(self, subjects: Collection[str], rules: Collection[str]) -> dict[str, int]:
        """Per subject, the newest `evaluated_at` of its alerts of `rules` (non-empty), in
        any status; subjects with none are left out."""
        chosen = sorted(set(subjects))
        found: dict[str, int] = {}
        for start in range(0, len(chosen), _SUBJECTS_PER_QUERY):
            chunk = chosen[start:start + _SUBJECTS_PER_QUERY]
            query = (f"SELECT subject, MAX(evaluated_at) FROM alerts WHERE subject IN"
                     f" ({_marks(len(chunk))}) AND rule IN ({_marks(len(rules))})"
                     " GROUP BY subject")
            rows = self._tx.execute(query, [*chunk, *rules])
            found.update((subject, int(at_ns)) for subject, at_ns in rows)
        return found

    def rows_under(self, prefixes: Collection[str], rules: Collection[str]) -> list[AlertRow]:
        """The rows of `rules` (non-empty), in any status, whose subject starts with one of
        `prefixes` (`camera-id/`: a camera's hotspots and plates); one query per 300."""
        chosen = sorted(set(prefixes))
        found: list[AlertRow] = []
        for start in range(0, len(chosen), _PREFIXES_PER_QUERY):
            chunk = chosen[start:start + _PREFIXES_PER_QUERY]
            likes = " OR ".join([f"subject LIKE ? ESCAPE '{_LIKE_ESCAPE}'"] * len(chunk))
            query = (f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule IN ({_marks(len(rules))})"
                     f" AND ({likes})")
            params = [*rules, *(_like_prefix(prefix) for prefix in chunk)]
            found += (_alert_row(row) for row in self._tx.execute(query, params))
        return found

    def changed_since(self, since_ns: int, limit: int) -> list[str]:
        """The fingerprints with a history entry recorded after `since_ns` (wall time),
        latest first (by the `history_recorded` index)."""
        query = ("SELECT fingerprint, MAX(recorded_at) AS last FROM history"
                 " WHERE recorded_at > ? GROUP BY fingerprint ORDER BY last DESC LIMIT ?")
        return [str(row[0]) for row in self._tx.execute(query, (since_ns, limit))]

    def resolved_since(self, since_ns: int, limit: int) -> list[AlertRow]:
        """Resolved alerts whose episode ended at or after `since_ns`, latest end first."""
        query = (f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status = ? AND ends_at >= ?"
                 " ORDER BY ends_at DESC, fingerprint LIMIT ?")
        found = self._tx.execute(query, (AlertStatus.RESOLVED.value, since_ns, limit))
        return [_alert_row(row) for row in found]

    def save(self, row: AlertRow, now_ns: int) -> None:
        a, n, ack = row.alert, row.notified, row.ack
        self._tx.execute(
            _UPSERT,
            (
                a.fingerprint, a.rule, a.subject, a.status.value, a.severity.value,
                _json(a.labels), _json(a.annotations), a.starts_at_ns, a.ends_at_ns,
                a.active_at_ns, a.evaluated_at_ns,
                None if ack is None else ack.at_ns, None if ack is None else ack.by,
                None if ack is None else ack.comment, None if ack is None else ack.severity.value,
                n.status, n.at_ns, n.digest, row.withheld,
                orjson.dumps(sorted(row.told)).decode(), now_ns,
            ),
        )

    def counts(self) -> dict[str, int]:
        found = self._tx.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status")
        return {str(status): int(count) for status, count in found}

    def add_history(
        self, alert: Alert, change: str, *, recorded_at_ns: int, paged: bool, reason: str,
        note: str = "",
    ) -> None:
        self._tx.execute(
            "INSERT INTO history (fingerprint, change, status, severity, labels, at, recorded_at,"
            " paged, reason, note, annotations, starts_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?)",
            (
                alert.fingerprint, change, alert.status.value, alert.severity.value,
                _json(alert.labels), alert.evaluated_at_ns, recorded_at_ns, int(paged), reason,
                note, _json(alert.annotations), alert.starts_at_ns,
            ),
        )

    def as_of(self, at_ns: int, since_ns: int) -> list[Alert]:
        """The alerts pending or firing at `at_ns` (event time) by their last history row
        since `since_ns`, as they were then; newest change first.

        An alert whose last row before `since_ns` said it fired, and that has had none
        since, is not found: the caller's look-back bounds how far back an episode reaches.
        """
        return [_past_alert(found) for found in self._tx.execute(_AS_OF, (since_ns, at_ns))]

    def history(self, fingerprint: str | None, limit: int) -> list[HistoryEntry]:
        """The newest entries first, of one alert or of all."""
        query = f"SELECT {_HISTORY_COLUMNS} FROM history"
        params: list[object] = []
        if fingerprint is not None:
            query += " WHERE fingerprint = ?"
            params.append(fingerprint)
        query += " ORDER BY id DESC LIMIT ?"
        return [_history_entry(found) for found in self._tx.execute(query, [*params, limit])]

    def add_silence(self, silence: Silence, now_ns: int) -> None:
        self._tx.execute(
            f"INSERT INTO silences ({_SILENCE_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                silence.id, _matchers_json(silence.matchers), silence.starts_at_ns,
                silence.ends_at_ns, silence.created_by, silence.comment, now_ns,
            ),
        )

    def silence(self, silence_id: str) -> Silence | None:
        found = self._tx.execute(
            f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = ?", (silence_id,))
        return None if not found else _silence(found[0])

    def silences(self, ending_after_ns: int | None = None) -> list[Silence]:
        """Silences, latest start first; only those not expired by then, when given."""
        query = f"SELECT {_SILENCE_COLUMNS} FROM silences"
        params: list[object] = []
        if ending_after_ns is not None:
            query += " WHERE ends_at > ?"
            params.append(ending_after_ns)
        query += " ORDER BY starts_at DESC, id"
        return [_silence(found) for found in self._tx.execute(query, params)]

    def set_silence_times(self, silence_id: str, starts_at_ns: int, ends_at_ns: int) -> None:
        self._tx.execute(
            "UPDATE silences SET starts_at = ?, ends_at = ? WHERE id = ?",
            (starts_at_ns, ends_at_ns, silence_id),
        )

    def prune(self, older_than_ns: int) -> Pruned:
        """Forget history, resolved alerts and expired silences from before `older_than_ns`."""
        # RETURNING counts what went, in both databases (a cursor's rowcount is SQLite's).
        history = self._tx.execute(
            "DELETE FROM history WHERE recorded_at < ? RETURNING id", (older_than_ns,))
        # A resolved alert operators still believe firing is kept: its resolution is owed.
        alerts = self._tx.execute(
            "DELETE FROM alerts WHERE status = 'resolved' AND updated_at < ?"
            " AND (notified_status IS NULL OR notified_status = 'resolved')"
            " RETURNING fingerprint",
            (older_than_ns,),
        )
        silences = self._tx.execute(
            "DELETE FROM silences WHERE ends_at < ? RETURNING id", (older_than_ns,))
        return Pruned(len(history), len(alerts), len(silences))


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the text starting with `prefix`, its wildcards escaped."""
    escaped = "".join(_LIKE_ESCAPE + char if char in f"%_{_LIKE_ESCAPE}" else char
                      for char in prefix)
    return escaped + "%"


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _json(mapping: Mapping[str, str]) -> str:
    return orjson.dumps(dict(mapping), option=orjson.OPT_SORT_KEYS).decode()


def _labels(text: str) -> dict[str, str]:
    loaded: dict[str, str] = orjson.loads(text)
    return loaded


def _alert_row(found: tuple[object, ...]) -> AlertRow:
    (fp, rule, subject, status, severity, labels, annotations, starts_at, ends_at, active_at,
     evaluated_at, acked_at, acked_by, ack_comment, acked_severity, n_status, n_at, n_digest,
     withheld, told) = found
    alert = Alert(
        fingerprint=str(fp), rule=str(rule), subject=str(subject),
        status=AlertStatus(str(status)), severity=Severity(str(severity)),
        labels=_labels(str(labels)), annotations=_labels(str(annotations)),
        starts_at_ns=_int(starts_at), ends_at_ns=None if ends_at is None else _int(ends_at),
        active_at_ns=_int(active_at), evaluated_at_ns=_int(evaluated_at),
    )
    ack = None if acked_at is None else Ack(
        _int(acked_at), str(acked_by), str(ack_comment),
        # An ack from before migration 5: the row's severity is the best guess left.
        alert.severity if acked_severity is None else Severity(str(acked_severity)))
    notified = Notified(
        status=_NOTIFIED_STATUS.get(str(n_status)),
        digest=None if n_digest is None else str(n_digest),
        at_ns=None if n_at is None else _int(n_at),
    )
    return AlertRow(alert, notified, ack, None if withheld is None else str(withheld),
                    _names(told))


def _names(text: object) -> frozenset[str]:
    """A stored JSON list of receiver names; NULL (a row from before migration 5) is none."""
    if text is None:
        return frozenset()
    loaded: list[str] = orjson.loads(str(text))
    return frozenset(loaded)


def _past_alert(found: tuple[object, ...]) -> Alert:
    (fp, rule, subject, status, severity, labels, annotations, current_annotations, starts_at,
     current_starts_at, at) = found
    labels_then = _labels(str(labels))
    at_ns = _int(at)
    if starts_at is None:  # a row from before migration 2: the current episode's, if earlier
        current = _int_or(current_starts_at, at_ns)
        starts_at = current if current <= at_ns else at_ns
    if annotations is None:
        annotations = current_annotations if current_annotations is not None else "{}"
    return Alert(
        fingerprint=str(fp),
        # The record is gone only once pruned, with its history: these are a last resort.
        rule=labels_then.get("alertname", "") if rule is None else str(rule),
        subject=labels_then.get("device_id", "") if subject is None else str(subject),
        status=AlertStatus(str(status)), severity=Severity(str(severity)), labels=labels_then,
        annotations=_labels(str(annotations)), starts_at_ns=_int(starts_at), ends_at_ns=None,
        active_at_ns=at_ns, evaluated_at_ns=at_ns,
    )


def _int_or(value: object, default: int) -> int:
    return default if value is None else _int(value)


def _history_entry(found: tuple[object, ...]) -> HistoryEntry:
    (id_, fp, change, status, severity, labels, at, recorded_at, paged, reason, note) = found
    return HistoryEntry(
        id=_int(id_), fingerprint=str(fp), change=str(change), status=AlertStatus(str(status)),
        severity=Severity(str(severity)), labels=_labels(str(labels)), at_ns=_int(at),
        recorded_at_ns=_int(recorded_at), paged=bool(paged), reason=str(reason), note=str(note),
    )


def _matchers_json(matchers: Sequence[Matcher]) -> str:
    # Stored as operators write them; parse_matcher reads back exactly what str() wrote.
    return orjson.dumps([str(matcher) for matcher in matchers]).decode()


def _silence(found: tuple[object, ...]) -> Silence:
    id_, matchers, starts_at, ends_at, created_by, comment = found
    return Silence(
        id=str(id_),
        matchers=tuple(parse_matcher(text) for text in orjson.loads(str(matchers))),
        starts_at_ns=_int(starts_at), ends_at_ns=_int(ends_at),
        created_by=str(created_by), comment=str(comment),
    )


def _int(value: object) -> int:
    # INTEGER (SQLite) and BIGINT (PostgreSQL) columns come back as int; anything else means
    # the database was tampered with.
    if not isinstance(value, int):
        raise TypeError(f"expected an integer column, got {value!r}")
    return value
