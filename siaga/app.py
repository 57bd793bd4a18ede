"""The service: wires every part on one exit stack and runs its loops in one task group."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING

from devices.registry import Registry, load_catalog
from devices.topics import TopicScheme
from ingest.deadletters import DeadLetter, DeadLetterStore
from ingest.decode import Decoder
from ingest.frigate import FrigateMapper
from ingest.influx import V1Writer, Writer
from ingest.lorawan import ChirpStackUplinks, ThingsStackUplinks
from ingest.pipeline import Pipeline
from ingest.settings import InfluxSettings
from ingest.spool import Spool
from ingest.stats import IngestStats
from ingest.storage import Storage, StorageStats
from ingest.subscriber import Subscriber
from ingest.watchlist import Watchlist
from reports.book import ReportBook
from rules.alerting import Alerting, Cluster
from rules.config import RulesFile, load_rules
from siaga.api.context import ApiContext
from siaga.api.server import serve_api
from siaga.citizens import CitizenDesk
from siaga.console.context import ConsoleContext
from siaga.console.hub import ConsoleHub
from siaga.console.mount import mount
from siaga.console.series import make_reader
from siaga.settings import Settings
from siaga_core.redaction import redact_userinfo

if TYPE_CHECKING:
    from ingest.amqp import AmqpSubscriber

log = logging.getLogger(__name__)

READY_POLL_S = 0.5  # how often start-up looks for a stop while waiting for the broker
SPOOL_NEARLY_FULL = 0.9  # past 90 % of its budget the spool may refuse the next batch
# Collections once started (`settle_heap`): the youngest generation every 50,000 net new
# tracked objects, the middle one every 20 of those, the oldest every 10 of the middle's
# (CPython: 700, 10, 10).
SETTLED_GC_THRESHOLDS: tuple[int, int, int] = (50_000, 20, 10)
BUILD_COMMIT_ENV = "SIAGA_BUILD_COMMIT"  # the commit siaga_build_info shows, set at build time


def make_writer(settings: InfluxSettings) -> Writer:
    if settings.api == "v1":
        return V1Writer(settings.url, settings.database, username=settings.username,
                        password=settings.password, timeout_s=settings.timeout_s,
                        create_database=settings.create_database)
    from ingest.influx2 import V2Writer  # only v2 deployments pay for influxdb-client

    return V2Writer(settings.url, settings.org, settings.bucket, token=settings.token,
                    timeout_s=settings.timeout_s)


class Service:
    """Ingest, store, evaluate and notify: one `run` from start to graceful stop."""

    def __init__(self, settings: Settings, registry: Registry | None = None,
                 clock_ns: Callable[[], int] = time.time_ns,
                 rules: RulesFile | None = None) -> None:
        self.settings = settings
        self.registry = registry or load_catalog(settings.catalog_path)
        self.rules = rules or load_rules(settings.rules_path, self.registry)
        self.stats = IngestStats()
        self.clock_ns = clock_ns
        self.ready = asyncio.Event()
        self.http_port: int | None = None  # the bound port, once the API listens
        self.alerting: Alerting | None = None
        self.desk: CitizenDesk | None = None  # residents' reports, once the book is open
        self._storage: Storage | None = None
        self._subscriber: Subscriber | AmqpSubscriber | None = None
        self._subscriptions: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then stop consuming, flush, acknowledge and return."""
        settings = self.settings
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        topics = TopicScheme(settings.mqtt.topic_prefix)
        self._subscriptions = topics.subscriptions()
        async with AsyncExitStack() as stack:
            dead_letters = stack.enter_context(DeadLetterStore(data_dir / "deadletters.sqlite"))
            writer: Writer = await stack.enter_async_context(make_writer(settings.influx))
            spool = Spool(data_dir / "spool", settings.spool.max_bytes)
            storage = Storage(writer, spool, on_rejected=self._on_drain_rejected(dead_letters))
            self._storage = storage
            watchlist = (None if settings.cameras.watchlist_file is None
                         else Watchlist.load(settings.cameras.watchlist_file))
            frigate = (FrigateMapper(settings.frigate, self.registry)
                       if settings.frigate.enabled else None)
            networks = self._reading_sources()
            # Frigate's and the LoRaWAN servers' topics, as the broker's ACL grants them.
            self._subscriptions += settings.foreign_topics()
            alerting = await stack.enter_async_context(Alerting(
                self.rules, self.registry, data_dir, webhook_url=settings.webhook_url,
                external_url=self._external_url(),
                clock_ns=self.clock_ns,
                plate_labels=None if watchlist is None else watchlist.labels_of,
                alertmanagers=settings.alertmanagers, cluster=self._cluster()))
            self.alerting = alerting
            reports = settings.report_book
            book = stack.enter_context(ReportBook.open(reports, data_dir,
                                                       clock_ns=self.clock_ns))
            desk = CitizenDesk(book, CitizenDesk.photo_store(reports, data_dir, book),
                               reports, alerting, clock_ns=self.clock_ns)
            self.desk = desk
            desk.sweep()  # before the API listens: no upload is under way yet
            hub = ConsoleHub(self.registry, alerting, desk, settings.console,
                             clock_ns=self.clock_ns)
            reader = make_reader(settings.influx)  # None: no query language to read charts
            if reader is not None:
                await stack.enter_async_context(reader)
            console = ConsoleContext(settings.console, hub, self.rules, reader)
            # The API starts before the subscriber, so /healthz answers while the broker is
            # awaited, and stops after it (the exit stack unwinds in reverse). The console
            # shares its port.
            self.http_port = await stack.enter_async_context(serve_api(
                self._api_context(alerting, dead_letters, desk), settings.http.host,
                settings.http.port, extend=partial(mount, console)))
            subscriber = await stack.enter_async_context(
                self._make_subscriber(alerting.broker_connection_changed,
                                      alerting.ownership_changed))
            self._subscriber = subscriber
            decoder = Decoder(self.registry, topics,
                              unknown_devices=settings.ingest.unknown_devices,
                              max_future_s=settings.ingest.max_future_s,
                              watchlist=watchlist, frigate=frigate, sources=networks)
            pipeline = Pipeline(subscriber, decoder, storage, dead_letters,
                                self.stats, settings.ingest, alerting, self.clock_ns,
                                on_durability=alerting.durability_changed)
            log.info("Siaga ingest started: %d devices, %d rules, %s, InfluxDB %s %s, "
                     "reports in %s, API http://%s:%s, data in %s", len(self.registry),
                     len(self.rules.rules), self._describe_input(),
                     writer.describe(), settings.influx.api, book.describe(),
                     settings.http.host, self.http_port, data_dir)
            drain_stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                group.create_task(storage.drain(drain_stop))
                # Notifications are delivered until the very end, after the last flush.
                group.create_task(alerting.run(drain_stop))
                group.create_task(desk.run(drain_stop))
                group.create_task(hub.run(drain_stop))
                group.create_task(self._mark_ready(subscriber, stop))
                await pipeline.run(stop)
                drain_stop.set()
            log.info("Siaga ingest stopped: %s", self.snapshot())

    def _make_subscriber(self, on_connection: Callable[[bool], None],
                         on_takeover: Callable[[], None],
                         ) -> contextlib.AbstractAsyncContextManager[Subscriber | AmqpSubscriber]:
        """The input `ingest.input` names: the MQTT broker, or RabbitMQ's partitions.

        Over AMQP the same topics arrive (bound from amq.topic), but RabbitMQ does not
        replay retained messages to AMQP consumers: a device's last status is known once it
        publishes again after a restart, not at once.
        """
        settings = self.settings
        if settings.ingest.input == "amqp":
            # Imported here: aiormq and pamqp are 2 MB of a process that reads MQTT.
            from ingest.amqp import AmqpSubscriber

            # A partition that may have moved here: its devices' state comes from the book.
            return AmqpSubscriber(settings.amqp, self._subscriptions, self.clock_ns,
                                  on_connection=on_connection, on_takeover=on_takeover)
        return Subscriber(settings.mqtt, self._subscriptions, self.clock_ns,
                          on_connection=on_connection)

    def _describe_input(self) -> str:
        settings = self.settings
        if settings.ingest.input == "amqp":
            amqp = settings.amqp
            return (f"AMQP {amqp.name} ({amqp.partitions} partitions) on "
                    f"{', '.join(redact_userinfo(url) for url in amqp.urls)}")
        return f"MQTT {settings.mqtt.host}:{settings.mqtt.port}"

    def _cluster(self) -> Cluster | None:
        """One of several instances when the alert book is a shared PostgreSQL (issue 18)."""
        url = self.settings.alerting.database_url
        if url is None:
            return None
        return Cluster(url.get_secret_value())

    async def _mark_ready(self, subscriber: Subscriber | AmqpSubscriber,
                          stop: asyncio.Event) -> None:
        """Ready once the broker confirmed the subscriptions: from then on nothing is missed."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscriber.subscribed.wait(), READY_POLL_S)
                self.ready.set()
                log.info("Siaga ingest ready: subscribed to %s", ", ".join(self._subscriptions))
                return

    def _reading_sources(self) -> list[ChirpStackUplinks | ThingsStackUplinks]:
        """The LoRaWAN network servers whose uplinks are readings (`lorawan:`)."""
        lorawan = self.settings.lorawan
        sources: list[ChirpStackUplinks | ThingsStackUplinks] = []
        if lorawan.chirpstack.enabled:
            sources.append(ChirpStackUplinks(lorawan.chirpstack, self.registry))
        if lorawan.things_stack.enabled:
            sources.append(ThingsStackUplinks(lorawan.things_stack, self.registry))
        return sources

    def _external_url(self) -> str:
        http = self.settings.http
        return (http.external_url or f"http://{http.host}:{http.port}").rstrip("/")

    def _api_context(self, alerting: Alerting, dead_letters: DeadLetterStore,
                     desk: CitizenDesk) -> ApiContext:
        return ApiContext(
            registry=self.registry, alerts=alerting.book, dead_letters=dead_letters,
            outbox=alerting.outbox, ingest_stats=self.stats, storage_stats=self._storage_stats,
            readiness=self.readiness, token=self.settings.http.token,
            devices_seen=alerting.devices_seen, latest=alerting.latest, clock_ns=self.clock_ns,
            desk=desk, external_url=self.settings.http.external_url,
            alerting_metrics=alerting.metrics,
            # Set by whoever builds the package or image: a wheel does not know its commit.
            build_commit=os.environ.get(BUILD_COMMIT_ENV, "unknown"))

    def readiness(self) -> list[str]:
        """What keeps the service from being ready (GET /readyz); empty when it is."""
        reasons = []
        if self._subscriber is None or not self._subscriber.subscribed.is_set():
            reasons.append("not subscribed to MQTT" if self.settings.ingest.input == "mqtt"
                           else "not consuming the AMQP partitions")
        stats, budget = self._storage_stats(), self.settings.spool.max_bytes
        if stats is None:
            reasons.append("storage not open")
        else:
            if stats.spool_bytes >= SPOOL_NEARLY_FULL * budget:
                reasons.append(f"spool nearly full ({stats.spool_bytes} of {budget} bytes):"
                               " InfluxDB has not been taking writes")
            if stats.unavailable_reason is not None:
                # The disk may fill long before the budget: only a refused store tells.
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                      time.gmtime(stats.unavailable_since or 0.0))
                reasons.append(f"cannot make readings durable since {since}:"
                               f" {stats.unavailable_reason}")
        return reasons

    def _storage_stats(self) -> StorageStats | None:
        return None if self._storage is None else self._storage.stats

    def snapshot(self) -> dict[str, int]:
        """Totals since start: received, stored, dead-lettered, spooled, spool depth."""
        totals = self.stats.snapshot()
        if self._storage is not None:
            storage = self._storage.stats
            totals |= {"stored": storage.written_total, "spooled": storage.spooled_total,
                       "spool_segments": storage.spool_segments,
                       "dead_lettered": totals["dead_lettered"] + storage.rejected_total}
        if self.desk is not None:
            totals["reports"] = self.desk.received
        return totals

    def _on_drain_rejected(self, store: DeadLetterStore) -> Callable[[list[tuple[str, str]]], None]:
        """Storage counts these (`rejected_total`); this only records them."""

        def record(rejected: list[tuple[str, str]]) -> None:
            now = self.clock_ns()
            store.add_many([DeadLetter("(spool)", line.encode(), f"InfluxDB refused: {reason}",
                                       now, "rejected-by-influxdb") for line, reason in rejected])

        return record


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT, so shutdown runs the same path as any stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings, registry: Registry | None = None,
                rules: RulesFile | None = None) -> None:
    """`siaga run`: the service until SIGTERM/SIGINT (catalog and rules loaded if not given)."""
    async with stop_on_signals() as stop:
        service = Service(settings, registry, rules=rules)
        settle_heap()
        await service.run(stop)


def settle_heap() -> None:
    """Take what start-up made out of the garbage collector's passes, before the service
    starts; then collect the youngest generation less often.

    After start-up about 50,000 objects live for good (modules, functions, types, the
    catalog, the rules), and every full collection walked them again: 30 to 50 ms of CPU
    about once a second at 51,000 readings/s, most of the alert latency's tail.
    `gc.freeze` moves them to a generation no collection visits; what start-up left as
    garbage is collected first. Frozen before any connection, inbox or alert exists: a
    frozen object that later dies in a reference cycle is never reclaimed, and those
    die and are replaced (a reconnect, a takeover's reload).

    The youngest generation is then collected every 50,000 net new tracked objects, not
    every 700: a batch's readings live until InfluxDB has them (tens of ms), so at 700 each
    was walked twice on its way to the oldest generation, where reference counting frees
    it anyway. The oldest generation keeps CPython's 10, so cyclic garbage that outlived
    a younger pass is still reclaimed. Figures: docs/scaling.md section 1.

    Process-wide settings, made here in `siaga run`'s own process and not by `Service`,
    which tests run in theirs.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SETTLED_GC_THRESHOLDS)
    log.info("heap settled: %d start-up objects frozen", gc.get_freeze_count())
