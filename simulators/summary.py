"""What a simulator run sent and the broker acknowledged, by kind and fault, and its progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from simulators.calendar import WIB
from simulators.connection import Acks

Key = tuple[str, str | None]  # (kind, fault); fault None for a faithful message
EVENT_KEY: Key = ("camera-events", None)  # cameras' detections, apart from their counts


@dataclass(frozen=True, slots=True)
class Count:
    """Messages and the readings they carried."""

    messages: int = 0
    readings: int = 0

    def __add__(self, other: Count) -> Count:
        return Count(self.messages + other.messages, self.readings + other.readings)


def total(counts: Iterable[Count]) -> Count:
    return sum(counts, Count())


@dataclass(slots=True)
class Tally:
    """Running counts by (kind, fault): what was handed to a connection."""

    messages: Counter[Key] = field(default_factory=Counter)
    readings: Counter[Key] = field(default_factory=Counter)

    def add(self, key: Key, readings: int) -> None:
        self.messages[key] += 1
        self.readings[key] += readings

    def counts(self) -> dict[Key, Count]:
        return {key: Count(self.messages[key], self.readings[key]) for key in self.messages}


def merge_acks(acks: Iterable[Acks]) -> tuple[dict[Key, Count], int, int]:
    """Acknowledged counts by key over connections; and the rejected and status totals."""
    messages: Counter[Key] = Counter()
    readings: Counter[Key] = Counter()
    rejected = statuses = 0
    for one in acks:
        messages.update(one.messages)  # type: ignore[arg-type]  # tags are Keys here
        readings.update(one.readings)  # type: ignore[arg-type]
        rejected += one.rejected
        statuses += one.status_messages
    return {key: Count(messages[key], readings[key]) for key in messages}, rejected, statuses


@dataclass(frozen=True, slots=True)
class Summary:
    """A run so far or in the end: sent (handed to paho) and acknowledged (by the broker)."""

    sent: Mapping[Key, Count]
    acknowledged: Mapping[Key, Count]
    status_messages: int  # `online`/`offline` messages acknowledged
    rejected: int  # messages the broker refused (MQTT 5 only), or lost offline at QoS 0
    elapsed_s: float  # wall-clock seconds
    sim_time_s: float | None = None  # the simulated time reached (scenario playback)
    finished: bool = False

    @property
    def messages(self) -> int:
        return total(self.sent.values()).messages

    @property
    def readings(self) -> int:
        return total(self.sent.values()).readings

    @property
    def acknowledged_messages(self) -> int:
        return total(self.acknowledged.values()).messages

    @property
    def acknowledged_readings(self) -> int:
        return total(self.acknowledged.values()).readings

    @property
    def rate(self) -> float:
        """Acknowledged readings per wall-clock second: the rate actually achieved."""
        return self.acknowledged_readings / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def message_rate(self) -> float:
        return self.acknowledged_messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def by_kind(self, acknowledged: bool = False) -> dict[str, Count]:
        return _group(self.acknowledged if acknowledged else self.sent, 0)

    def by_fault(self, acknowledged: bool = False) -> dict[str, Count]:
        """Counts per fault; faithful messages under "none"."""
        return _group(self.acknowledged if acknowledged else self.sent, 1)

    def sent_with(self, faults: Iterable[str | None]) -> Count:
        """What was sent with one of `faults` (None: faithful), over all kinds."""
        wanted = set(faults)
        return total(count for (_, fault), count in self.sent.items() if fault in wanted)

    def __str__(self) -> str:
        lines = [
            f"{self.acknowledged_messages:,} of {self.messages:,} messages acknowledged "
            f"({self.acknowledged_readings:,} of {self.readings:,} readings) in "
            f"{self.elapsed_s:.1f} s: {self.rate:,.0f} readings/s, {self.message_rate:,.0f} "
            f"messages/s; {self.status_messages:,} status messages"
            + (f"; {self.rejected:,} rejected" if self.rejected else "")]
        if self.sim_time_s is not None:
            lines.append(f"  simulated time reached {format_sim_time(self.sim_time_s)}")
        lines.append(f"  {'':<22}{'messages':>12}{'readings':>12}")
        for title, groups in (("by kind", self.by_kind()), ("by fault", self.by_fault())):
            lines.append(f"  {title}")
            lines.extend(f"    {name:<20}{count.messages:>12,}{count.readings:>12,}"
                         for name, count in sorted(groups.items()))
        return "\n".join(lines)


def _group(counts: Mapping[Key, Count], part: int) -> dict[str, Count]:
    grouped: dict[str, Count] = {}
    for key, count in counts.items():
        name = key[part] or "none"
        grouped[name] = grouped.get(name, Count()) + count
    return grouped


def format_sim_time(sim_time_s: float) -> str:
    """A simulated instant as Jakarta reads it."""
    return datetime.fromtimestamp(sim_time_s, UTC).astimezone(WIB).strftime("%Y-%m-%d %H:%M WIB")


def progress_line(now: Summary, before: Summary | None) -> str:
    """One line: simulated time, messages sent and acknowledged, and the recent rate."""
    if before is None or now.elapsed_s <= before.elapsed_s:
        rate = now.message_rate
    else:
        rate = ((now.acknowledged_messages - before.acknowledged_messages)
                / (now.elapsed_s - before.elapsed_s))
    when = "" if now.sim_time_s is None else f"sim {format_sim_time(now.sim_time_s)}  "
    elapsed = int(now.elapsed_s)
    return (f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {when}sent {now.messages:,} messages "
            f"({now.readings:,} readings), acknowledged {now.acknowledged_messages:,}, "
            f"{rate:,.0f} messages/s")
