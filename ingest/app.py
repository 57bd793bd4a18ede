"""The service: wires every part on one exit stack and runs its loops in one task group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

from devices.registry import Registry, load_catalog
from devices.topics import TopicScheme
from ingest.deadletters import DeadLetter, DeadLetterStore
from ingest.decode import Decoder
from ingest.influx import V1Writer, V2Writer, Writer
from ingest.pipeline import Pipeline
from ingest.settings import InfluxSettings, Settings
from ingest.spool import Spool
from ingest.stats import IngestStats
from ingest.storage import Storage
from ingest.subscriber import Subscriber

log = logging.getLogger(__name__)

READY_POLL_S = 0.5  # how often start-up looks for a stop while waiting for the broker


def make_writer(settings: InfluxSettings) -> V1Writer | V2Writer:
    if settings.api == "v1":
        return V1Writer(settings.url, settings.database, username=settings.username,
                        password=settings.password, timeout_s=settings.timeout_s,
                        create_database=settings.create_database)
    return V2Writer(settings.url, settings.org, settings.bucket, token=settings.token,
                    timeout_s=settings.timeout_s)


class Service:
    """Ingest, store and (later) evaluate: one `run` from start to graceful stop."""

    def __init__(self, settings: Settings, registry: Registry | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.registry = registry or load_catalog(settings.catalog_path)
        self.stats = IngestStats()
        self.clock_ns = clock_ns
        self.ready = asyncio.Event()
        self._storage: Storage | None = None
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
            subscriber = await stack.enter_async_context(
                Subscriber(settings.mqtt, self._subscriptions, self.clock_ns))
            decoder = Decoder(self.registry, topics,
                              unknown_devices=settings.ingest.unknown_devices,
                              max_future_s=settings.ingest.max_future_s)
            pipeline = Pipeline(subscriber, decoder, self.registry, storage, dead_letters,
                                self.stats, settings.ingest, self.clock_ns)
            log.info("Siaga ingest started: %d devices, MQTT %s:%s, InfluxDB %s %s, data in %s",
                     len(self.registry), settings.mqtt.host, settings.mqtt.port,
                     writer.describe(), settings.influx.api, data_dir)
            drain_stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                group.create_task(storage.drain(drain_stop))
                group.create_task(self._mark_ready(subscriber, stop))
                await pipeline.run(stop)
                drain_stop.set()
            log.info("Siaga ingest stopped: %s", self.snapshot())

    async def _mark_ready(self, subscriber: Subscriber, stop: asyncio.Event) -> None:
        """Ready once the broker confirmed the subscriptions: from then on nothing is missed."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscriber.subscribed.wait(), READY_POLL_S)
                self.ready.set()
                log.info("Siaga ingest ready: subscribed to %s", ", ".join(self._subscriptions))
                return

    def snapshot(self) -> dict[str, int]:
        """Totals since start: received, stored, dead-lettered, spooled, spool depth."""
        totals = self.stats.snapshot()
        if self._storage is not None:
            storage = self._storage.stats
            totals |= {"stored": storage.written_total, "spooled": storage.spooled_total,
                       "spool_segments": storage.spool_segments,
                       "dead_lettered": totals["dead_lettered"] + storage.rejected_total}
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


async def serve(settings: Settings) -> None:
    """`siaga run`: the service until SIGTERM/SIGINT."""
    async with stop_on_signals() as stop:
        await Service(settings).run(stop)
