"""Siaga's Prometheus metrics: one registry per service, its collectors read at each scrape."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ingest.stats import IngestStats
from ingest.storage import UNAVAILABLE_CAUSES, StorageStats
from rules.alertbook import AlertBook
from rules.alerting import ONLINE, AlertingMetrics
from rules.outbox import Outbox
from siaga_core.histogram import Snapshot

# What `generate_latest` writes with its default (underscore) escaping is the 0.0.4 text
# format; the library's own handlers say so too when the scraper does not negotiate.
# (Its CONTENT_TYPE_LATEST claims 1.0.0, meant for an escaping agreed through Accept.)
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
REJECTED_CODE: Final = "rejected-by-influxdb"  # the dead-letter code storage counts itself
# States the alert family always shows, so a series never vanishes at 0.
ALERT_STATUSES: Final = ("pending", "firing", "resolved")
UNKNOWN: Final = "unknown"  # a build_info label nobody set
DISTRIBUTION: Final = "siaga"  # the package whose installed version build_info shows


def counter(name: str, help_text: str, value: float | None = None) -> CounterMetricFamily:
    """An unlabelled counter; an unknown value is left out rather than shown as 0 (absent is
    not the same as none)."""
    return CounterMetricFamily(name, help_text, value=value)


def gauge(name: str, help_text: str, value: float | None = None) -> GaugeMetricFamily:
    """An unlabelled gauge; an unknown value is left out, as with `counter`."""
    return GaugeMetricFamily(name, help_text, value=value)


def by(family: CounterMetricFamily | GaugeMetricFamily, counts: Mapping[str, int],
       always: Iterable[str] = ()) -> CounterMetricFamily | GaugeMetricFamily:
    """`family` with one sample per key of `counts` (its single label), `always` at 0."""
    for key, count in sorted((dict.fromkeys(always, 0) | dict(counts)).items()):
        family.add_metric([key], count)
    return family


def histogram(name: str, help_text: str, snapshot: Snapshot | None) -> HistogramMetricFamily:
    """An unlabelled histogram; before anything is observed it has no samples."""
    family = HistogramMetricFamily(name, help_text)
    if snapshot is not None:
        family.add_metric([], _buckets(snapshot), snapshot.total)
    return family


def _buckets(snapshot: Snapshot) -> list[tuple[str, float]]:
    # `le` written as Prometheus' own clients write it ("0.005", "1.0", "+Inf"), so series
    # keep one label value across clients and restarts.
    # (`prometheus_client.utils.floatToGoString` is untyped; these bounds are plain floats.)
    return [("+Inf" if math.isinf(bound) else repr(bound), count)
            for bound, count in snapshot.buckets]


def ingest_families(stats: IngestStats, storage: StorageStats | None) -> list[Metric]:
    """The ingest path: messages, readings, dead letters, ignored fields, storage, spool."""
    dead = dict(stats.dead_letters)
    if storage is not None and storage.rejected_total:
        # Storage counts the lines InfluxDB refused; the decoder never sees them.
        dead[REJECTED_CODE] = dead.get(REJECTED_CODE, 0) + storage.rejected_total
    plates = CounterMetricFamily(
        "siaga_camera_plates_total",
        "Plates seen by cameras: listed (on the watch list, kept) or unlisted (counted, "
        "never kept).", labels=["list"])
    plates.add_metric(["listed"], stats.plates_listed)
    plates.add_metric(["unlisted"], stats.plates_unlisted)
    ignored = CounterMetricFamily(
        "siaga_ignored_fields_total",
        "Reading fields ignored because the SPEC does not name them, by device and field.",
        labels=["device_id", "field"])
    for (device_id, name), count in sorted(stats.ignored_fields.items()):
        ignored.add_metric([device_id, name], count)
    return [
        counter("siaga_mqtt_messages_received_total",
                "MQTT messages received (telemetry and status).", stats.messages),
        counter("siaga_mqtt_messages_acked_total",
                "MQTT messages acknowledged to the broker once durable.", stats.acked),
        counter("siaga_readings_received_total",
                "Valid readings decoded from telemetry messages.", stats.readings),
        counter("siaga_camera_detections_received_total",
                "Valid camera detections decoded from events (redeliveries included).",
                stats.detections),
        plates,
        by(CounterMetricFamily("siaga_dead_letters_total",
                               "Messages or readings kept as dead letters, by reason code.",
                               labels=["code"]), dead),
        ignored,
        histogram("siaga_ingest_durable_latency_seconds",
                  "Per MQTT message, from its receipt to its readings durable (written to "
                  "InfluxDB or the spool), when it may be acknowledged.",
                  stats.durable_latency.snapshot()),
        histogram("siaga_rules_latency_seconds",
                  "Per MQTT message, from its receipt to its readings evaluated by the rules "
                  "(which run on receipt, before storage).", stats.rules_latency.snapshot()),
        *storage_families(storage),
    ]


def storage_families(storage: StorageStats | None) -> list[Metric]:
    """Storage and spool; before storage starts, the same families without samples."""
    if storage is None:
        families = storage_families(StorageStats(0, 0, 0, 0, 0, 0, None))
        for family in families:
            family.samples.clear()
        return families
    s = storage
    return [
        counter("siaga_readings_written_total",
                "Readings written to InfluxDB, directly or drained from the spool.",
                s.written_total),
        counter("siaga_readings_spooled_total",
                "Readings appended to the disk spool while InfluxDB was unavailable.",
                s.spooled_total),
        counter("siaga_influxdb_retryable_errors_total",
                "InfluxDB writes that failed in a way worth retrying (network, 5xx, 429).",
                s.retryable_errors_total),
        gauge("siaga_spool_segments", "Segments waiting in the disk spool.", s.spool_segments),
        gauge("siaga_spool_bytes", "Bytes waiting in the disk spool.", s.spool_bytes),
        gauge("siaga_spool_max_bytes", "The disk spool's budget (spool.max_bytes); past it "
              "acks are withheld.", s.spool_max_bytes),
        histogram("siaga_influxdb_write_duration_seconds",
                  "Duration of each InfluxDB write that succeeded.", s.write_duration),
        gauge("siaga_influxdb_last_write_latency_seconds",
              "Duration of the latest successful InfluxDB write.", s.last_write_latency_s),
        by(CounterMetricFamily(
            "siaga_storage_unavailable_total",
            "Attempts to store a batch refused as neither InfluxDB nor the spool took it "
            "(its acks withheld, the batch retried), by cause: spool-full, disk-error.",
            labels=["cause"]), s.unavailable_total, UNAVAILABLE_CAUSES),
        gauge("siaga_storage_unavailable",
              "1 while readings cannot be made durable (acks withheld), else 0.",
              int(s.unavailable)),
    ]


def alert_families(
    alerts: Mapping[str, int], deliveries: Mapping[str, int], pending: int,
    oldest_pending_age_s: float | None = None,
) -> list[Metric]:
    """Alerts by status, and delivery outcomes and backlog, from their SQLite stores."""
    return [
        gauge("siaga_outbox_depth",
              "Webhook deliveries waiting in the outbox (as siaga_deliveries_pending).",
              pending),
        gauge("siaga_outbox_oldest_age_seconds",
              "Age of the oldest delivery waiting in the outbox; 0 when none waits.",
              oldest_pending_age_s or 0.0),
        by(GaugeMetricFamily("siaga_alerts", "Alerts in the alert book, by status.",
                             labels=["status"]), alerts, ALERT_STATUSES),
        by(CounterMetricFamily(
            "siaga_deliveries_total",
            "Webhook delivery outcomes: delivered, retried (failed attempts), dead.",
            labels=["outcome"]), deliveries),
        gauge("siaga_deliveries_pending",
              "Webhook deliveries not yet delivered nor given up.", pending),
    ]


def alerting_families(metrics: AlertingMetrics | None) -> list[Metric]:
    """Notification latency, Alertmanager counts, and devices online/offline by kind."""
    latency = HistogramMetricFamily(
        "siaga_notification_latency_seconds",
        "From an alert's notification being made (raised, changed, resolved) to its "
        "receiver taking it: webhook (2xx, retries included) or alertmanager.",
        labels=["channel"])
    sent = CounterMetricFamily(
        "siaga_alertmanager_notifications_sent_total",
        "Alerts an Alertmanager took (each re-send counts again).", labels=["alertmanager"])
    failed = CounterMetricFamily(
        "siaga_alertmanager_notifications_failed_total",
        "Alerts in POSTs an Alertmanager did not take (no answer, or not 2xx).",
        labels=["alertmanager"])
    online = GaugeMetricFamily(
        "siaga_devices_online", "Catalog devices heard from and not offline, by kind.",
        labels=["kind"])
    offline = GaugeMetricFamily(
        "siaga_devices_offline",
        "Catalog devices offline (status topic, or silent past their grace), by kind.",
        labels=["kind"])
    if metrics is not None:
        for channel, snapshot in sorted(metrics.notification_latency.items()):
            latency.add_metric([channel], _buckets(snapshot), snapshot.total)
        for counts in metrics.forwarders:
            sent.add_metric([counts.alertmanager], counts.sent)
            failed.add_metric([counts.alertmanager], counts.failed)
        for (kind, state), count in sorted(metrics.devices.items()):
            (online if state == ONLINE else offline).add_metric([kind], count)
    return [latency, sent, failed, online, offline]


def service_families(ready: bool, devices: int, devices_seen: int) -> list[Metric]:
    """The service itself: readiness and how many devices it knows and has heard from."""
    return [
        gauge("siaga_ready", "1 when subscribed to MQTT and storage is usable, else 0.",
              int(ready)),
        gauge("siaga_devices", "Devices in the registry.", devices),
        gauge("siaga_devices_seen", "Devices heard from since the service started.",
              devices_seen),
    ]


def build_family(version: str, commit: str) -> GaugeMetricFamily:
    """Always 1; its labels say which build is running, for joins and dashboards."""
    family = GaugeMetricFamily("siaga_build_info", "The running Siaga's version and commit.",
                               labels=["version", "commit"])
    family.add_metric([version, commit], 1)
    return family


def installed_version() -> str:
    """The version of the installed package, or "unknown" when run from an uninstalled tree."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN


@dataclass(frozen=True, slots=True, eq=False)  # a registry keys its collectors by identity
class ServiceCollector(Collector):
    """What lives in memory (readiness, devices, ingest, storage, the build), read at each
    scrape on the event loop, where the service changes it."""

    ingest_stats: IngestStats
    storage_stats: Callable[[], StorageStats | None]
    readiness: Callable[[], Sequence[str]]
    devices: Callable[[], int]
    devices_seen: Callable[[], int]
    version: str = field(default_factory=installed_version)
    commit: str = UNKNOWN
    alerting: Callable[[], AlertingMetrics | None] = lambda: None

    def collect(self) -> Iterable[Metric]:
        yield build_family(self.version, self.commit)
        yield from service_families(not self.readiness(), self.devices(), self.devices_seen())
        yield from ingest_families(self.ingest_stats, self.storage_stats())
        yield from alerting_families(self.alerting())


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """The counts the SQLite stores hold, read together."""

    alerts: Mapping[str, int] = field(default_factory=dict)
    deliveries: Mapping[str, int] = field(default_factory=dict)
    pending: int = 0
    oldest_pending_ns: int | None = None


class StoreCollector(Collector):
    """Alerts and deliveries from SQLite. `collect` runs on the event loop, so the stores are
    read off it by `refresh`, just before each scrape renders."""

    def __init__(self, alerts: AlertBook, outbox: Outbox,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._alerts = alerts
        self._outbox = outbox
        self._clock_ns = clock_ns
        self._counts = StoreCounts()

    async def refresh(self) -> None:
        self._counts = await asyncio.to_thread(self._read)

    def _read(self) -> StoreCounts:
        # One thread, one read after another, as the stores expect.
        return StoreCounts(self._alerts.counts_by_status(), self._outbox.counts_by_outcome(),
                           self._outbox.pending_count(), self._outbox.oldest_pending_ns())

    def collect(self) -> Iterable[Metric]:
        counts = self._counts
        oldest = counts.oldest_pending_ns
        age = None if oldest is None else max(0, self._clock_ns() - oldest) / 1e9
        return alert_families(counts.alerts, counts.deliveries, counts.pending, age)


class Exposition:
    """One service's registry (never the process-wide default: tests run several services in
    one process) and its text for GET /metrics."""

    def __init__(self, service: ServiceCollector, stores: StoreCollector) -> None:
        self.registry = CollectorRegistry()
        self._stores = stores
        self.registry.register(service)
        self.registry.register(stores)

    async def render(self) -> bytes:
        await self._stores.refresh()
        return generate_latest(self.registry)
