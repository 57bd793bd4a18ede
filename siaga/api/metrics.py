"""Prometheus text exposition (format 0.0.4) of Siaga's counters, written by hand."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from ingest.stats import IngestStats
from ingest.storage import UNAVAILABLE_CAUSES, StorageStats

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
REJECTED_CODE: Final = "rejected-by-influxdb"  # the dead-letter code storage counts itself
# States the alert family always shows, so a series never vanishes at 0.
ALERT_STATUSES: Final = ("pending", "firing", "resolved")

_METRIC_NAME: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

MetricType = Literal["counter", "gauge"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a family, told apart from its siblings by its labels."""

    value: float
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"invalid Prometheus label name {name!r}")


@dataclass(frozen=True, slots=True)
class Family:
    """A metric: its name, type, help text and samples."""

    name: str
    type: MetricType
    help: str
    samples: Sequence[Sample] = ()

    def __post_init__(self) -> None:
        if not _METRIC_NAME.match(self.name):
            raise ValueError(f"invalid Prometheus metric name {self.name!r}")
        # The 0.0.4 convention: a counter's name says it is a total.
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")


def render(families: Iterable[Family]) -> str:
    """The text format: HELP and TYPE lines, then one line per sample; ends with a newline."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        lines.extend(
            f"{family.name}{_format_labels(s.labels)} {format_value(s.value)}"
            for s in family.samples
        )
    return "\n".join(lines) + "\n"


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (Go's float syntax for the special values)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    pairs = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items())
    return "{" + pairs + "}"


def _one(name: str, type_: MetricType, help_text: str, value: float | None) -> Family:
    # An unknown value is left out rather than shown as 0: absent is not the same as none.
    samples = () if value is None else (Sample(value),)
    return Family(name, type_, help_text, samples)


def _by(label: str, counts: Mapping[str, int], always: Iterable[str] = ()) -> list[Sample]:
    merged = dict.fromkeys(always, 0) | dict(counts)
    return [Sample(count, {label: key}) for key, count in sorted(merged.items())]


def ingest_families(stats: IngestStats, storage: StorageStats | None) -> list[Family]:
    """The ingest path: messages, readings, dead letters, ignored fields, storage, spool."""
    dead = dict(stats.dead_letters)
    if storage is not None and storage.rejected_total:
        # Storage counts the lines InfluxDB refused; the decoder never sees them.
        dead[REJECTED_CODE] = dead.get(REJECTED_CODE, 0) + storage.rejected_total
    ignored = [
        Sample(count, {"device_id": device_id, "field": name})
        for (device_id, name), count in sorted(stats.ignored_fields.items())
    ]
    return [
        _one("siaga_mqtt_messages_received_total", "counter",
             "MQTT messages received (telemetry and status).", stats.messages),
        _one("siaga_mqtt_messages_acked_total", "counter",
             "MQTT messages acknowledged to the broker once durable.", stats.acked),
        _one("siaga_readings_received_total", "counter",
             "Valid readings decoded from telemetry messages.", stats.readings),
        _one("siaga_camera_detections_received_total", "counter",
             "Valid camera detections decoded from events (redeliveries included).",
             stats.detections),
        Family("siaga_camera_plates_total", "counter",
               "Plates seen by cameras: listed (on the watch list, kept) or unlisted (counted, "
               "never kept).", [Sample(stats.plates_listed, {"list": "listed"}),
                                Sample(stats.plates_unlisted, {"list": "unlisted"})]),
        Family("siaga_dead_letters_total", "counter",
               "Messages or readings kept as dead letters, by reason code.",
               _by("code", dead)),
        Family("siaga_ignored_fields_total", "counter",
               "Reading fields ignored because the SPEC does not name them, by device and field.",
               ignored),
        *_storage_families(storage),
    ]


def _storage_families(storage: StorageStats | None) -> list[Family]:
    if storage is None:  # storage not started yet: the same families, without samples
        empty = StorageStats(0, 0, 0, 0, 0, 0, None)
        return [replace(family, samples=()) for family in _storage_families(empty)]
    s = storage
    return [
        _one("siaga_readings_written_total", "counter",
             "Readings written to InfluxDB, directly or drained from the spool.",
             s.written_total),
        _one("siaga_readings_spooled_total", "counter",
             "Readings appended to the disk spool while InfluxDB was unavailable.",
             s.spooled_total),
        _one("siaga_influxdb_retryable_errors_total", "counter",
             "InfluxDB writes that failed in a way worth retrying (network, 5xx, 429).",
             s.retryable_errors_total),
        _one("siaga_spool_segments", "gauge",
             "Segments waiting in the disk spool.", s.spool_segments),
        _one("siaga_spool_bytes", "gauge", "Bytes waiting in the disk spool.", s.spool_bytes),
        _one("siaga_influxdb_last_write_latency_seconds", "gauge",
             "Duration of the latest successful InfluxDB write.", s.last_write_latency_s),
        Family("siaga_storage_unavailable_total", "counter",
               "Attempts to store a batch refused as neither InfluxDB nor the spool took it "
               "(its acks withheld, the batch retried), by cause: spool-full, disk-error.",
               _by("cause", s.unavailable_total, UNAVAILABLE_CAUSES)),
        _one("siaga_storage_unavailable", "gauge",
             "1 while readings cannot be made durable (acks withheld), else 0.",
             int(s.unavailable)),
    ]


def alert_families(
    alerts: Mapping[str, int], deliveries: Mapping[str, int], pending: int
) -> list[Family]:
    """Alerts by status, and delivery outcomes and backlog, from their SQLite stores."""
    return [
        Family("siaga_alerts", "gauge", "Alerts in the alert book, by status.",
               _by("status", alerts, ALERT_STATUSES)),
        Family("siaga_deliveries_total", "counter",
               "Webhook delivery outcomes: delivered, retried (failed attempts), dead.",
               _by("outcome", deliveries)),
        _one("siaga_deliveries_pending", "gauge",
             "Webhook deliveries not yet delivered nor given up.", pending),
    ]


def service_families(ready: bool, devices: int, devices_seen: int) -> list[Family]:
    """The service itself: readiness and how many devices it knows and has heard from."""
    return [
        _one("siaga_ready", "gauge",
             "1 when subscribed to MQTT and storage is usable, else 0.", int(ready)),
        _one("siaga_devices", "gauge", "Devices in the registry.", devices),
        _one("siaga_devices_seen", "gauge",
             "Devices heard from since the service started.", devices_seen),
    ]
