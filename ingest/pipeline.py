"""Batching: decode as messages arrive, flush on size, on interval and at shutdown, then ack.

One collector task decodes and encodes messages into the current batch; one flusher task
makes each batch durable (dead letters to SQLite, readings to InfluxDB or the spool) and
only then acknowledges its messages. Cameras' detections ride the same batches (measurement
`camera_event`), so they too are durable before their messages are acknowledged. A queue
of a few batches between them lets the collector fill the next batches while the flusher
writes one; when the flusher falls behind, the collector waits, the subscriber's inbox
fills, the subscriber stops reading the socket, and the broker keeps the rest
(backpressure without unbounded memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby, repeat
from operator import attrgetter
from typing import Protocol

from devices.detections import Detection
from devices.kinds import EVENT_MEASUREMENT, MEASUREMENTS, Kind
from devices.readings import NUMERIC_FIELDS, Reading, StatusUpdate
from ingest.deadletters import DeadLetter, DeadLetterStore
from ingest.decode import Decoded, Decoder
from ingest.inbox import Message
from ingest.lineprotocol import (
    encode_event,
    encode_many,
    encode_plain_keyed,
    event_series_key,
    plain_names,
    series_key,
)
from ingest.settings import IngestSettings
from ingest.stats import IngestStats
from ingest.storage import NotDurable, Storage, StoreOutcome

log = logging.getLogger(__name__)

# Batches queued for the writer: how far the rules may run ahead of a slow write. With 2,
# a burst of messages of 100 readings left the collector waiting 5-12 % of the time on
# InfluxDB's slower answers; with 4, a drain of 3.9 million readings ran at 104,500 and
# 98,400/s against 97,800 and 93,600/s. With 4 (80,000 readings, under a second at
# 92,700 readings/s), a write of InfluxDB's slow seconds on a shared machine stopped the
# collector, and a flood reading waited in the inbox behind the rest: the alert p99 of
# the benchmark's probes was 83 to 408 ms in three runs; with 12, 97 to 131 ms
# (alternated runs; three later ones 95 to 357 ms, Siaga's core shared with InfluxDB's
# threads). The bound, 12 batches of at most `batch_size` readings (240,000 by default),
# is memory only a slow InfluxDB fills: a queued batch keeps its lines alone.
QUEUED_BATCHES = 12
# On stop, InfluxDB has this long in all for the batches collected; those after it go to
# the spool (written at the next start, in order). Without it a slow InfluxDB, answering
# each write just inside its time-out, held a stop for up to 14 writes.
STOP_WRITES_S = 10.0
COLLECT_POLL_S = 0.2  # how often the collector looks at the stop flag while idle
BUSY_POLL_S = 0.01  # how often a lingering batch looks whether the writer is done
UNAVAILABLE_RETRY_MAX_S = 30.0  # backoff cap while neither InfluxDB nor the spool takes data
SERIES_CACHE_MAX = 200_000  # device series keys kept; bounded for `unknown_devices: accept`
# Messages, and readings, decoded per step at most: the loop gets a turn (socket reads,
# acks, the writer's HTTP) between steps. A step of 5,000 readings (50 messages of 100)
# took 60 ms, and the writer's answers waited behind it: batches of 100 landed at 64,000
# readings/s with the collector blocked a quarter of the time; steps of 500 to 2,000
# readings gave 84,800 to 87,600/s.
TAKE_CHUNK = 256
TAKE_READINGS = 512
# Detections remembered to hand each (device, event id, type) to the rules once. A QoS 1
# redelivery comes within seconds or minutes (the broker resends on reconnect); 100,000
# keys are 20 minutes of 5,000 cameras at one event a minute, about 20 MB.
RECENT_EVENTS_MAX = 100_000
EventKey = tuple[str, str, str, str | None]  # device_id, label, type, zone: one series
# Groups a step's readings into one series key's runs: an unknown device (accepted by
# policy) may send under two kinds, each its own measurement.
_SERIES_RUN = attrgetter("device_id", "kind")
# The kinds whose readings `encode_plain` may write: a reading's values are its model's
# fields (devices.readings), so their names are known here. Every kind today.
_PLAIN_KINDS = frozenset(kind for kind, names in NUMERIC_FIELDS.items() if plain_names(names))


class Inbox(Protocol):
    """Where messages wait to be taken, and where they are acknowledged once durable.

    `ingest.subscriber.Subscriber` is the one in service; its inbox fills as MQTT delivers.
    """

    async def wait(self, seconds: float) -> None:
        """Return once messages are waiting, or after `seconds`."""

    def take(self, limit: int) -> list[Message]:
        """Take up to `limit` waiting messages, oldest first."""

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge `messages`, which are durable; return how many were acknowledged."""


class Observer(Protocol):
    """Sees every valid reading and status update as soon as it is decoded."""

    def observe(self, readings: Sequence[Reading], statuses: Sequence[StatusUpdate],
                received_ns: int) -> None: ...

    def observe_detections(self, detections: Sequence[Detection], received_ns: int) -> None:
        """Cameras' detections, each `(device_id, event_id, type)` once (`RecentEvents`)."""


class RecentEvents:
    """The keys of recent detections, so that a redelivered one reaches the rules once.

    Storage needs no such memory: a redelivered event is the same point (same series, same
    time: `lineprotocol.event_time_ns`) and InfluxDB keeps one. The rules would count it
    twice. Bounded: the least recently seen key is forgotten first.
    """

    def __init__(self, size: int = RECENT_EVENTS_MAX) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[str, str, str, int], None] = OrderedDict()

    def fresh(self, detections: Sequence[Detection]) -> list[Detection]:
        """The detections whose key was not seen recently (nor earlier in `detections`).

        The key has the detection's time: Frigate sends many updates of one event, each of
        its own frame, and each must reach the rules (a listed plate read at the third
        update, a car seen for an hour); a redelivered one has the same time."""
        seen, fresh = self._seen, []
        for detection in detections:
            key = (detection.device_id, detection.event_id, detection.type, detection.ts_ns)
            if key in seen:
                seen.move_to_end(key)
                continue
            seen[key] = None
            if len(seen) > self._size:
                seen.popitem(last=False)
            fresh.append(detection)
        return fresh


@dataclass(slots=True)
class Batch:
    """Messages, what they decoded to, and the line protocol of their readings."""

    messages: list[Message] = field(default_factory=list)
    decoded: Decoded = field(default_factory=Decoded)
    lines: list[str] = field(default_factory=list)
    line_topics: list[str] = field(default_factory=list)  # the topic each line came from
    started: float = 0.0  # time.monotonic() of its first message


class Pipeline:
    """Moves messages from the inbox to storage, acknowledging what is durable."""

    def __init__(
        self,
        inbox: Inbox,
        decoder: Decoder,
        storage: Storage,
        dead_letters: DeadLetterStore,
        stats: IngestStats,
        settings: IngestSettings,
        observer: Observer,
        clock_ns: Callable[[], int] = time.time_ns,
        *,
        on_durability: Callable[[str | None], None] | None = None,
        stop_writes_s: float = STOP_WRITES_S,
    ) -> None:
        """`on_durability` hears why readings cannot be made durable, or None once they can.

        It is called on changes only, and once on the first store after start, so a state
        left behind by an earlier run (an alert still firing) is corrected.
        """
        self._observer = observer
        self._inbox = inbox
        self._decoder = decoder
        self._registry = decoder.registry
        self._storage = storage
        self._dead_letters = dead_letters
        self._stats = stats
        self._settings = settings
        self._clock_ns = clock_ns
        self._series: dict[str, tuple[Kind, str]] = {}
        self._event_series: dict[EventKey, str] = {}
        self._recent_events = RecentEvents()
        self._per_message = 1.0  # lines per message in the latest step
        self._writing = False  # the flusher is making a batch durable
        self._on_durability = on_durability
        self._durable: bool | None = None  # as last told to `on_durability`; None: not yet
        self._stop_writes_s = stop_writes_s
        self._spool_after: float | None = None  # monotonic; set when the flusher sees stop

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then flush what was collected and return."""
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=QUEUED_BATCHES)
        async with asyncio.TaskGroup() as group:
            flusher = group.create_task(self._flush_loop(queue, stop))
            try:
                await self._collect(queue, stop)
            finally:
                # A flusher that died (a store failed) consumes nothing: waiting to hand it
                # the end mark would hang the service. The group then raises its error, the
                # service exits, and the broker redelivers what was not acknowledged.
                if not flusher.done():
                    await queue.put(None)

    async def _collect(self, queue: asyncio.Queue[Batch | None], stop: asyncio.Event) -> None:
        size = self._settings.batch_size
        batch = Batch()
        while not stop.is_set():
            await self._inbox.wait(self._patience(batch, queue))
            messages = self._inbox.take(self._take_limit(batch, size))
            if messages:
                if not batch.messages:
                    batch.started = time.monotonic()
                self._add(batch, messages)
                await asyncio.sleep(0)
            if batch.messages and self._due(batch, size, queue):
                await queue.put(batch)
                batch = Batch()
        if batch.messages:
            await queue.put(batch)

    def _due(self, batch: Batch, size: int, queue: asyncio.Queue[Batch | None]) -> bool:
        """Full, or old enough: `linger_s` while the writer is idle, else `flush_interval_s`.

        An idle writer takes a batch after a short linger, so readings are queryable
        within tens of milliseconds at a modest rate; a busy one lets the next batch grow,
        so a high rate gets large batches and InfluxDB few requests.
        """
        if len(batch.lines) >= size or len(batch.messages) >= self._settings.batch_messages:
            return True
        age = time.monotonic() - batch.started
        settings = self._settings
        return age >= settings.flush_interval_s or (
            age >= settings.linger_s and self._writer_idle(queue))

    def _patience(self, batch: Batch, queue: asyncio.Queue[Batch | None]) -> float:
        """How long the collector may wait for messages before looking at its batch again."""
        if not batch.messages:
            return COLLECT_POLL_S
        settings, age = self._settings, time.monotonic() - batch.started
        if self._writer_idle(queue):
            due_in = min(settings.linger_s, settings.flush_interval_s) - age
        else:  # it may become due when the write ends: look again every linger or so
            due_in = min(settings.flush_interval_s - age, max(settings.linger_s, BUSY_POLL_S))
        return max(0.0, min(COLLECT_POLL_S, due_in))

    def _writer_idle(self, queue: asyncio.Queue[Batch | None]) -> bool:
        return not self._writing and queue.empty()

    def _take_limit(self, batch: Batch, size: int) -> int:
        # Judged by the latest messages' readings: a step stays short (TAKE_READINGS), and
        # messages of 100 readings do not overshoot the batch by 100x the messages taken.
        room = max(1.0, min(size - len(batch.lines), TAKE_READINGS))
        messages = self._settings.batch_messages - len(batch.messages)
        return max(1, min(TAKE_CHUNK, int(room / self._per_message), messages))

    def _add(self, batch: Batch, messages: list[Message]) -> None:
        decode, decoded = self._decoder.decode, batch.decoded
        readings, lines, line_topics = decoded.readings, batch.lines, batch.line_topics
        detections = decoded.detections
        decoded_before, statuses_before = len(readings), len(decoded.statuses)
        detections_before, unlisted_before = len(detections), decoded.plates_unlisted
        listed_before = decoded.plates_listed
        lines_before = len(lines)
        # The step's readings are made lines at once (one orjson call for many devices'
        # single readings, `_encode_readings`); a camera's detections take their place in
        # message order, so the readings before them are made lines first.
        unencoded = decoded_before
        for message in messages:
            first, first_detection = len(readings), len(detections)
            decode(message.topic, message.payload, message.received_ns, decoded)
            if len(readings) > first:
                line_topics.extend(repeat(message.topic, len(readings) - first))
            if len(detections) > first_detection:
                if len(readings) > unencoded:
                    self._encode_readings(readings[unencoded:], lines)
                    unencoded = len(readings)
                self._encode_detections(detections[first_detection:], message.topic, batch)
        if len(readings) > unencoded:
            self._encode_readings(readings[unencoded:], lines)
        batch.messages.extend(messages)
        self._per_message = max(1.0, (len(lines) - lines_before) / len(messages))
        stats = self._stats
        stats.messages += len(messages)
        stats.readings += len(readings) - decoded_before
        stats.detections += len(detections) - detections_before
        stats.plates_listed += decoded.plates_listed - listed_before
        stats.plates_unlisted += decoded.plates_unlisted - unlisted_before
        # Rules run on receipt, not after the storage flush: alerts do not wait for InfluxDB.
        received_ns = messages[-1].received_ns
        self._observer.observe(readings[decoded_before:], decoded.statuses[statuses_before:],
                               received_ns)
        if len(detections) > detections_before:
            fresh = self._recent_events.fresh(detections[detections_before:])
            if fresh:
                self._observer.observe_detections(fresh, received_ns)
        # The rules have the step's readings and detections, and they are lines now: a
        # batch waits for its write with its lines, not these objects (a reading with its
        # values dict was most of the 440 bytes a queued reading held).
        del readings[decoded_before:], detections[detections_before:]
        stats.rules_latency.observe_ages(self._clock_ns(), (m.received_ns for m in messages))

    def _encode_readings(self, readings: list[Reading], lines: list[str]) -> None:
        """Append one line per reading (an empty one when no field is left), in order."""
        # A run per device and kind, one series key each (a message is one device's as a
        # rule; a step, many messages): the plain kinds' runs, in order, take one
        # `encode_plain_keyed` call between the others' runs, so a step of single readings
        # is one call, not one a reading.
        keys: list[str] = []
        plain: list[Reading] = []
        for _, run in groupby(readings, _SERIES_RUN):
            points = list(run)
            head = points[0]
            cached = self._series.get(head.device_id)
            key = cached[1] if cached is not None and cached[0] is head.kind else (
                self._series_key(head))
            if head.kind in _PLAIN_KINDS:
                keys += repeat(key, len(points))
                plain += points
                continue
            if plain:
                lines.extend(encode_plain_keyed(keys, plain))
                keys, plain = [], []
            lines.extend(encode_many(key, points))
        if plain:
            lines.extend(encode_plain_keyed(keys, plain))

    def _encode_detections(self, detections: Sequence[Detection], topic: str,
                           batch: Batch) -> None:
        for detection in detections:
            series = (detection.device_id, detection.label, detection.type, detection.zone)
            key = self._event_series.get(series) or self._event_series_key(series)
            batch.lines.append(encode_event(key, detection.event_id, detection.score,
                                            detection.plate, detection.ts_ns))
            batch.line_topics.append(topic)

    def _event_series_key(self, series: EventKey) -> str:
        device_id, label, event_type, zone = series
        tags = self._registry.tags(device_id) if device_id in self._registry else {
            "device_id": device_id}
        key = event_series_key(EVENT_MEASUREMENT, tags, label, event_type, zone)
        if len(self._event_series) >= SERIES_CACHE_MAX:
            self._event_series.clear()
        self._event_series[series] = key
        return key

    def _series_key(self, reading: Reading) -> str:
        device_id = reading.device_id
        # An unknown device (accepted by policy) has no labels: device_id is its only tag.
        tags = self._registry.tags(device_id) if device_id in self._registry else {
            "device_id": device_id}
        key = series_key(MEASUREMENTS[reading.kind], tags)
        if len(self._series) >= SERIES_CACHE_MAX:
            self._series.clear()
        # With its kind: a device the catalog does not list may send under two kinds, and
        # each kind's readings go to that kind's measurement.
        self._series[reading.device_id] = (reading.kind, key)
        return key

    async def _flush_loop(self, queue: asyncio.Queue[Batch | None], stop: asyncio.Event) -> None:
        while (batch := await queue.get()) is not None:
            self._writing = True
            try:
                await self._flush(batch, stop)
            finally:
                self._writing = False

    async def _flush(self, batch: Batch, stop: asyncio.Event) -> None:
        decoded = batch.decoded
        if decoded.dead:
            await asyncio.to_thread(self._dead_letters.add_many, decoded.dead)
        if stop.is_set() and self._spool_after is None:
            self._spool_after = time.monotonic() + self._stop_writes_s
        late = self._spool_after is not None and time.monotonic() >= self._spool_after
        outcome = await self._store(batch.lines, stop, spool=late)
        if outcome is None:
            log.error("shutting down with %d messages not durable; the broker redelivers them",
                      len(batch.messages))
            return
        if outcome.rejected:
            await asyncio.to_thread(self._dead_letters.add_many, self._rejected(batch, outcome))
        stats = self._stats
        stats.durable_latency.observe_ages(self._clock_ns(),
                                           (m.received_ns for m in batch.messages))
        stats.acked += self._inbox.ack(batch.messages)
        stats.statuses += len(decoded.statuses)
        stats.flushes += 1
        stats.count_ignored(decoded.ignored_fields)
        for letter in decoded.dead:
            stats.dead_letters[letter.code] += 1

    async def _store(self, lines: list[str], stop: asyncio.Event, *,
                     spool: bool = False) -> StoreOutcome | None:
        """Store the lines (`spool`: to the spool only); while neither InfluxDB nor the
        spool takes them, wait and retry.

        Waiting here holds back the acks, so the broker keeps the messages: nothing is lost
        and nothing is acknowledged that is not durable. Returns None if stopped first.
        `on_durability` hears when this starts and when it ends.
        """
        delay = 1.0
        tell = self._on_durability
        while True:
            try:
                outcome = await (self._storage.spool(lines) if spool
                                 else self._storage.store(lines))
            except NotDurable as exc:
                log.error("cannot make readings durable (%s); retrying in %.0f s", exc, delay)
                reason = exc.reason
            else:
                # A batch without lines stores nothing, so it proves nothing either way.
                if tell is not None and lines and self._durable is not True:
                    self._durable = True
                    tell(None)
                return outcome
            # Told outside the `except`: an error of its own is not logged as caused by this.
            if tell is not None and self._durable is not False:
                self._durable = False
                tell(reason)
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return None
            except TimeoutError:
                delay = min(delay * 2, UNAVAILABLE_RETRY_MAX_S)

    def _rejected(self, batch: Batch, outcome: StoreOutcome) -> list[DeadLetter]:
        topic_of = dict(zip(batch.lines, batch.line_topics, strict=True))
        now = self._clock_ns()
        return [
            DeadLetter(topic_of.get(line, ""), line.encode(), f"InfluxDB refused: {reason}",
                       now, "rejected-by-influxdb")
            for line, reason in outcome.rejected
        ]
