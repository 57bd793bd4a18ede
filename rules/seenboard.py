"""When each device was last heard, shared by every instance of a cluster (issue 18).

Each instance hears only the devices of the partitions it reads, but silent devices and
dark areas must be judged for the whole city, by the leader (`siaga_core.leader`). So every
instance writes what it heard to this table every few seconds, and the leader reads it
before each check. The rows are small and change at most once per publish interval per
device: 5,000 devices cost one upsert of 5,000 rows every few seconds, however many
readings they send.

PostgreSQL only: a single instance judges from its own tracker and needs no board.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from siaga_core.sqlbackend import SharedStore, Tx

SETTING = "alerting.database_url"
_SCHEMA = """
CREATE TABLE device_seen (
    device_id TEXT PRIMARY KEY,
    seen_ns BIGINT,
    status_online BOOLEAN,
    status_ns BIGINT
)
"""
# The newer of what the row holds and what comes: two instances may both have heard a
# device around a partition's move, and the board must never go back in time.
_UPSERT = """
INSERT INTO device_seen AS d (device_id, seen_ns, status_online, status_ns)
SELECT * FROM unnest(?::text[], ?::bigint[], ?::boolean[], ?::bigint[])
ON CONFLICT (device_id) DO UPDATE SET
    seen_ns = GREATEST(d.seen_ns, EXCLUDED.seen_ns),
    status_online = CASE WHEN EXCLUDED.status_ns IS NOT NULL
        AND (d.status_ns IS NULL OR EXCLUDED.status_ns >= d.status_ns)
        THEN EXCLUDED.status_online ELSE d.status_online END,
    status_ns = GREATEST(d.status_ns, EXCLUDED.status_ns)
"""


@dataclass(frozen=True, slots=True)
class Heard:
    """What one instance heard from a device since its last publish."""

    seen_ns: int | None = None  # its latest message
    status: tuple[bool, int] | None = None  # its latest status (online?, when)


class SeenBoard:
    """The shared `device_seen` table on the cluster's PostgreSQL (blocking calls)."""

    def __init__(self, url: str) -> None:
        # psycopg (some 20 MB of a process) is loaded only by an instance of a cluster.
        from siaga_core.postgres import PostgresBackend

        self._backend = PostgresBackend(url, SharedStore(
            "the device board", (_SCHEMA,), "device_seen_schema", "siaga.seen", SETTING))

    def publish(self, heard: Mapping[str, Heard]) -> None:
        """Record what this instance heard, in one statement."""
        if not heard:
            return
        ids = list(heard)
        seen = [heard[d].seen_ns for d in ids]
        statuses = [heard[d].status for d in ids]
        online = [None if status is None else status[0] for status in statuses]
        status_ns = [None if status is None else status[1] for status in statuses]

        def upsert(tx: Tx) -> None:
            tx.execute(_UPSERT, (ids, seen, online, status_ns))

        self._backend.run(upsert)

    def read(self) -> dict[str, Heard]:
        """Every device any instance heard, as the board has it."""
        rows = self._backend.read(
            "SELECT device_id, seen_ns, status_online, status_ns FROM device_seen")
        return {device_id: Heard(seen_ns, None if status_ns is None else (online, status_ns))
                for device_id, seen_ns, online, status_ns in rows}

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> SeenBoard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
