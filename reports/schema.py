"""The report book's schema: one set of tables for SQLite and PostgreSQL, versioned by migrations.

Written once in the SQL both speak. The one word they spell differently is an id that a
sequence hands out (`{serial}`), filled in by `siaga_core.sqlbackend.render`. Times are UTC
nanoseconds (BIGINT: SQLite's INTEGER is 64-bit too); a report's `status` (`open`/`closed`)
is stored beside its state, although derived from it, because GeoReport filters on it and an
index needs a column.
"""

from __future__ import annotations

from typing import Final

# MIGRATIONS[i] takes a database from version i to i + 1. Never edit a released one: add.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE reports (
        id {serial},
        service_code TEXT NOT NULL,
        agency TEXT NOT NULL,
        lat DOUBLE PRECISION NOT NULL,
        lon DOUBLE PRECISION NOT NULL,
        description TEXT NOT NULL,
        address TEXT,
        attributes TEXT NOT NULL,
        contact TEXT NOT NULL,
        photo TEXT,
        media_url TEXT,
        key_name TEXT NOT NULL,
        requested_ns BIGINT NOT NULL,
        received_ns BIGINT NOT NULL,
        updated_ns BIGINT NOT NULL,
        state TEXT NOT NULL,
        status TEXT NOT NULL,
        status_notes TEXT,
        first_response_ns BIGINT,
        closed_ns BIGINT,
        duplicate_of BIGINT REFERENCES reports (id)
    );
    CREATE INDEX reports_requested ON reports (requested_ns, id);
    -- Covers the yearly statistics' query: a year's rows read from the index alone.
    CREATE INDEX reports_year ON reports (requested_ns, service_code, agency, state,
                                          first_response_ns, closed_ns);
    CREATE INDEX reports_category ON reports (service_code, status, requested_ns);
    CREATE INDEX reports_state ON reports (state, received_ns);
    CREATE INDEX reports_updated ON reports (updated_ns);
    CREATE INDEX reports_place ON reports (lat, lon);

    CREATE TABLE updates (
        id {serial},
        report_id BIGINT NOT NULL REFERENCES reports (id),
        state TEXT NOT NULL,
        note TEXT NOT NULL,
        officer TEXT NOT NULL,
        at_ns BIGINT NOT NULL
    );
    CREATE INDEX updates_at ON updates (at_ns, id);
    CREATE INDEX updates_report ON updates (report_id, at_ns);

    CREATE TABLE alert_links (
        report_id BIGINT NOT NULL REFERENCES reports (id),
        fingerprint TEXT NOT NULL,
        linked_ns BIGINT NOT NULL,
        PRIMARY KEY (report_id, fingerprint)
    );
    CREATE INDEX alert_links_fingerprint ON alert_links (fingerprint);

    CREATE TABLE api_keys (
        id {serial},
        name TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        created_ns BIGINT NOT NULL,
        revoked_ns BIGINT
    );
    -- One active key per name; a revoked name may be given a new key.
    CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_ns IS NULL;
    """,
    # A key's own rate limit (an aggregator app forwarding a whole city); NULL: the default.
    """
    ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute INTEGER;
    """,
    # Residents' photos, cleaned (reports.photos), by name (their content's SHA-256): in a
    # book several instances share, an instance serving a photo another took finds it here.
    # A book in SQLite (one instance) keeps its photos on disk alone and this table empty.
    """
    CREATE TABLE photos (
        name TEXT PRIMARY KEY,
        body {blob} NOT NULL,
        stored_ns BIGINT NOT NULL
    );
    """,
    # Each API key's token bucket (reports.ratelimit), in a book several instances share: a
    # key's limit holds whichever instance takes its reports. One instance keeps its
    # buckets in memory and this table empty.
    """
    CREATE TABLE rate_buckets (
        key_name TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        at_ns BIGINT NOT NULL
    );
    """,
)
