"""Counters of the ingest path (storage keeps its own), read by the live line, logs and /metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestStats:
    """Monotonic totals since start; rates are differences between two snapshots."""

    messages: int = 0  # MQTT messages received
    readings: int = 0  # valid readings decoded
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason code
    ignored_fields: Counter[tuple[str, str]] = field(default_factory=Counter)  # device, field
    statuses: int = 0
    acked: int = 0
    flushes: int = 0

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
