"""Where the alert book keeps its tables: SQLite in the data directory, or a shared PostgreSQL.

Both schemas are here, each versioned by its migrations (never edit a released one: add);
`rules.alertstore.AlertTables` runs the same SQL on either through `siaga_core.sqlbackend`.
PostgreSQL's driver is imported only when a URL names one.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Final

from siaga_core import sqlbackend
from siaga_core.sqlbackend import Backend, SharedStore, SqliteBackend

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER,
    active_at INTEGER NOT NULL,
    evaluated_at INTEGER NOT NULL,
    acked_at INTEGER,
    acked_by TEXT,
    ack_comment TEXT,
    notified_status TEXT CHECK (notified_status IN ('firing', 'resolved')),
    notified_at INTEGER,
    notified_digest TEXT,
    withheld TEXT,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    paged INTEGER NOT NULL,
    reason TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_fingerprint ON history (fingerprint, id);
CREATE INDEX IF NOT EXISTS history_recorded ON history (recorded_at);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS silences_ends ON silences (ends_at);
"""

# 2: the console's history mode asks "which alerts were active at T" by event time (`at`);
# a history row keeps what the alert said then (annotations) and when its episode began.
# Rows from before have NULL there, and `as_of` falls back on the alert's current record.
# The table is rebuilt rather than altered: a file whose version was lost (set back to 0)
# may already have the columns, and ADD COLUMN has no IF NOT EXISTS. Such a file keeps its
# rows but loses what its rows said in the two new columns (the rebuild copies the first
# version's columns): history then shows the alert's current summary for them.
_HISTORY_AT = """
CREATE TABLE history_2 (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    paged INTEGER NOT NULL,
    reason TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    annotations TEXT,
    starts_at INTEGER
);
INSERT INTO history_2 (id, fingerprint, change, status, severity, labels, at, recorded_at,
                       paged, reason, note)
    SELECT id, fingerprint, change, status, severity, labels, at, recorded_at, paged, reason,
           note FROM history;
DROP TABLE history;
ALTER TABLE history_2 RENAME TO history;
CREATE INDEX history_fingerprint ON history (fingerprint, id);
CREATE INDEX history_recorded ON history (recorded_at);
CREATE INDEX history_at ON history (at);
"""
# 3: a partition's new owner restores the alerts of its devices (`rows(subjects=...)`).
_SUBJECT_INDEX = "CREATE INDEX IF NOT EXISTS alerts_subject ON alerts (subject)"
# 4 (PostgreSQL's 2): the instance taking a camera's detections over reads its hotspots and
# plates (`rows_under`: two rules, subjects by prefix). A LIKE cannot use a text index under
# a database's usual collation; the rule can, so the scan is of those two rules' rows only.
_RULE_INDEX = "CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule)"
# 5 (PostgreSQL's 3): `told`, the receivers told an alert fires in its episode (a JSON list:
# its changes, repeats and end go to them whatever its labels say later), and
# `acked_severity`, the severity an ack was given at (the ack holds while the alert is no
# worse). NULL in the rows from before: nobody told yet, and the ack's severity taken as
# the row's. Rebuilt, as 2 was, for a file whose version was set back (ADD COLUMN would
# fail on the columns it already has; it keeps its rows but loses what they said there).
_TOLD = """
CREATE TABLE alerts_5 (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER,
    active_at INTEGER NOT NULL,
    evaluated_at INTEGER NOT NULL,
    acked_at INTEGER,
    acked_by TEXT,
    ack_comment TEXT,
    notified_status TEXT CHECK (notified_status IN ('firing', 'resolved')),
    notified_at INTEGER,
    notified_digest TEXT,
    withheld TEXT,
    updated_at INTEGER NOT NULL,
    told TEXT,
    acked_severity TEXT
);
INSERT INTO alerts_5 (fingerprint, rule, subject, status, severity, labels, annotations,
                      starts_at, ends_at, active_at, evaluated_at, acked_at, acked_by,
                      ack_comment, notified_status, notified_at, notified_digest, withheld,
                      updated_at)
    SELECT fingerprint, rule, subject, status, severity, labels, annotations, starts_at,
           ends_at, active_at, evaluated_at, acked_at, acked_by, ack_comment, notified_status,
           notified_at, notified_digest, withheld, updated_at FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_5 RENAME TO alerts;
CREATE INDEX alerts_status ON alerts (status);
CREATE INDEX alerts_subject ON alerts (subject);
CREATE INDEX alerts_rule ON alerts (rule);
"""
_POSTGRES_TOLD = """
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS told TEXT;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS acked_severity TEXT;
"""

# PostgreSQL, shared by several instances, starts at the schema SQLite reached in three steps.
# Times are nanoseconds since the epoch: BIGINT, as SQLite's INTEGER is 64-bit already.
_POSTGRES_SCHEMA = """
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT,
    active_at BIGINT NOT NULL,
    evaluated_at BIGINT NOT NULL,
    acked_at BIGINT,
    acked_by TEXT,
    ack_comment TEXT,
    notified_status TEXT CHECK (notified_status IN ('firing', 'resolved')),
    notified_at BIGINT,
    notified_digest TEXT,
    withheld TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX alerts_status ON alerts (status);
CREATE INDEX alerts_subject ON alerts (subject);
CREATE TABLE history (
    id {serial},
    fingerprint TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    paged INTEGER NOT NULL,
    reason TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    annotations TEXT,
    starts_at BIGINT
);
CREATE INDEX history_fingerprint ON history (fingerprint, id);
CREATE INDEX history_recorded ON history (recorded_at);
CREATE INDEX history_at ON history (at);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX silences_ends ON silences (ends_at);
"""
POSTGRES_MIGRATIONS: Final[tuple[str, ...]] = (_POSTGRES_SCHEMA, _RULE_INDEX, _POSTGRES_TOLD)
SCHEMA_TABLE = "alert_book_schema"  # PostgreSQL's stand-in for SQLite's user_version
LOCK_PREFIX = "siaga.alerts"  # keeps the book's advisory locks apart from other stores'
SETTING = "alerting.database_url"


class AlertStore(SqliteBackend):
    """The alert book in one SQLite file, the default (its SQL: `rules.alertstore.AlertTables`).

    What operators were told is committed before the notification leaves: hence the shell's
    synchronous=FULL, so a power loss cannot make the book forget a page it sent.
    """

    # 1: the schema as first written; IF NOT EXISTS, so a file from before versions (0)
    # just gains version 1. 2: history by event time, and what an alert said then.
    # 3: alerts by subject, for restoring one partition's devices. 4: alerts by rule.
    # 5: who was told an alert fires, and the severity of its ack.
    MIGRATIONS: ClassVar[tuple[str, ...]] = (
        _SCHEMA, _HISTORY_AT, _SUBJECT_INDEX, _RULE_INDEX, _TOLD)


def open_backend(database_url: str | None, path: Path) -> Backend:
    """PostgreSQL when a URL is given (several instances share the book), else SQLite at
    `path`. Raises ConfigurationError naming `alerting.database_url` for a malformed URL."""
    return sqlbackend.open_backend(database_url, lambda: AlertStore(path), SharedStore(
        "the alert book", POSTGRES_MIGRATIONS, SCHEMA_TABLE, LOCK_PREFIX, SETTING))
