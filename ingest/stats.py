"""Counters of the ingest path (storage keeps its own), read by the live line, logs and /metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from siaga_core.histogram import Histogram

# Distinct (device, field) pairs counted one by one; past this, a firmware sending random
# field names would grow memory and /metrics series without bound, so the rest is folded.
IGNORED_FIELDS_MAX = 10_000
OTHER = ("(other)", "(other)")


@dataclass(slots=True)
class IngestStats:
    """Monotonic totals since start; rates are differences between two snapshots."""

    messages: int = 0  # MQTT messages received
    readings: int = 0  # valid readings decoded
    detections: int = 0  # valid camera events decoded (redeliveries included)
    plates_listed: int = 0  # plates on the watch list: kept
    plates_unlisted: int = 0  # every other plate: counted, never kept (SPEC section 7)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason code
    ignored_fields: Counter[tuple[str, str]] = field(default_factory=Counter)  # device, field
    statuses: int = 0
    acked: int = 0
    flushes: int = 0
    # Per message, in seconds, from its receipt: to its acknowledgement-worthy durability
    # (written to InfluxDB or the spool), and to the rules having seen its readings.
    durable_latency: Histogram = field(default_factory=Histogram)
    rules_latency: Histogram = field(default_factory=Histogram)

    def count_ignored(self, fields: Mapping[tuple[str, str], int]) -> None:
        counted = self.ignored_fields
        for key, count in fields.items():
            if key not in counted and len(counted) >= IGNORED_FIELDS_MAX:
                key = OTHER
            counted[key] += count

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    def snapshot(self) -> dict[str, int]:
        """The totals the live line and the logs show."""
        return {
            "messages": self.messages,
            "readings": self.readings,
            "dead_lettered": self.dead_lettered,
            "acked": self.acked,
        }
