"""The AMQP side of the service: devices' messages read from RabbitMQ's partition queues.

Devices still publish MQTT, to RabbitMQ's MQTT plugin, which hands each message to
`amq.topic` with the topic as routing key. From there (docs/plans/issue-18.md):

    amq.topic --(one binding per subscription filter)--> {name}.partitions
        (x-consistent-hash: one routing key, so one device's topic, always one queue)
    --> {name}.p0 ... {name}.p{N-1}: quorum queues, single-active-consumer

`declare_partitions` declares all of it, idempotently (the service on every connect, the
sandbox for its tests). `AmqpSubscriber` is a drop-in for `ingest.subscriber.Subscriber`
as the pipeline (`Inbox`) and the service use it: it consumes every partition on one
channel with manual acknowledgement, and acknowledges only what the pipeline has made
durable, in delivery order (`AckWindow`). A lost connection is a new generation: what the
old channel delivered can no longer be acknowledged and RabbitMQ delivers it again (to us
or to a standby consumer), in order; messages of the old channel not yet taken are
dropped from the inbox, since they come again.

It connects to the first reachable of `amqp.urls` (several nodes of a cluster), and to the
next one when its node goes away.

Several instances (`amqp.instance` of `amqp.instances`): RabbitMQ 3.10's single-active-
consumer makes the first consumer registered on a queue its reader and never rebalances;
the others wait, in order, and the next one takes over when the reader's channel dies (its
unacknowledged messages come again, in order, to the new reader). So each channel consumes
its home partitions (p % instances == instance) at once and the others `standby_after_s`
later, as a standby: instances started together each read their own share, and one that
dies has its partitions read by the others. What is not done: an instance that comes back
while the others read its home partitions stands by on them until one of those instances'
channels ends (RabbitMQ 3.12 lets consumer priorities move a partition back; 3.10 does not).

Taking partitions over: AMQP does not tell a waiting consumer that it became the reader;
its first delivery does. So `on_takeover()` is called, in the event loop, before the first
delivery of each partition on each channel reaches the inbox: when a new channel (after a
start or a reconnect) first receives from a partition, and when a standby consumer first
receives, because the partition's reader went away. A partition with nothing to deliver
causes no call until its first message. Each call comes before any message of that
partition on that channel is in the inbox, but messages of other partitions, or of the
same partition on an older channel, may already be waiting or in the pipeline's batch.

A partition may also move away from a channel and come back to it without a word to the
channel: RabbitMQ moves a single active consumer to the waiting list when it loses the
link to the consumer's node for a while, and makes it the reader again once the reader
that took over goes. What that reader had not acknowledged then comes again, marked
redelivered, where on a channel that kept the partition a message comes once only. So a
redelivered message after one that was not also calls `on_takeover()` (once for a run of
redelivered messages): messages of that partition from before it moved away may then still
be waiting. A partition that comes back with nothing redelivered is not noticed.

The inbox is bounded as the MQTT input's (ingest.inbox: 20,000 messages or 16 MiB):
RabbitMQ's prefetch counts messages only (it implements neither `prefetch_size` nor
`channel.flow`), so when the inbox is full the wire reader leaves its socket unread until
the pipeline has taken half, and TCP flow control holds the rest: for 20 s at most
(`amqpwire.MAX_PAUSE_S`), since RabbitMQ drops a connection it cannot write to for 30 s.
A longer stall (InfluxDB and the spool both refusing) is bounded by the prefetch, as it
was before. aiormq's reader is bounded by the prefetch alone.

Every CHECK_S the partitions are looked up on the channel (a passive declare each): a
partition deleted without a Basic.Cancel (RabbitMQ 3.10 did that in tests, rarely) ends
the channel with a 404, and the connection starts over, declaring it again.

Differences from MQTT a deployment sees:
- Retained messages (devices' last statuses) are not replayed: RabbitMQ keeps retained
  messages for MQTT subscribers only, so after a restart a device's status is known once
  it publishes again.
- The routing key is the MQTT topic with `/` made `.` (`mqtt_topic` undoes it); a `.` in a
  topic is kept as it is by RabbitMQ 3.10, so it cannot be told from a level separator and
  comes back as `/`. Siaga's device ids, kinds and channels have no `.`; the settings
  refuse a topic prefix or an input topic with one when the input is AMQP.
- The consistent hash spreads routing keys, not devices: one device's telemetry and status
  topics may land in different partitions, so their relative order is not kept (each
  topic's own order is).

Why aiormq and not aio-pika's API: aio-pika (pyproject) is built on aiormq and wraps each
delivery in an `IncomingMessage` with a decoded header; the pipeline needs the routing
key, body and delivery tag only, so this reads aiormq's `DeliveredMessage` directly.
By default (`amqp.reader: wire`) ingest.amqpwire reads them instead (a connection of its
own, deliveries parsed from large reads: aiormq's task and three frame reads per delivery
were 80 % of a single-reading drain); `amqp.reader: aiormq` keeps aiormq's channel. The
partitions are declared through aiormq either way. Both are behind `_Link`, what
consuming needs of a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from ingest.amqpwire import Deliver, WireConnection, WireError
from ingest.inbox import INBOX_MAX, INBOX_MAX_BYTES, Inbox, Message
from ingest.settings import AmqpSettings
from siaga_core.redaction import redact_userinfo

log = logging.getLogger(__name__)

TOPIC_EXCHANGE = "amq.topic"  # where RabbitMQ's MQTT plugin publishes (mqtt.exchange)
HASH_EXCHANGE_TYPE = "x-consistent-hash"  # plugin rabbitmq_consistent_hash_exchange
# The weight of each partition on the hash ring. The exchange hashes with jump consistent
# hashing, where equal weights give equal shares; "1" is the smallest ring.
PARTITION_WEIGHT = "1"
CONNECT_TIMEOUT_S = 10.0  # a node that accepts TCP but does not answer AMQP: try the next
CLOSE_TIMEOUT_S = 5.0  # the goodbye to a node at shutdown; past it the socket is just closed
# A session that consumed for less than this backs off before the next, as a refused
# connection does. A node that goes away after serving for a while is rare, and its
# successor is tried at once; a session that ends within seconds each time is more likely
# ended by what it reads (a message that ends every connection it comes to, redelivered
# to each), and reconnecting at once would spin every instance against the broker.
BRIEF_SESSION_S = 5.0
# How often the partitions consumed are looked up on the channel (a passive declare each).
# In tests, RabbitMQ 3.10 told the channel nothing in 5 of about 400 deletions of a quorum
# queue just consumed (no Basic.Cancel, no Channel.Close) and kept no consumer: without a
# look, the instance stays connected and reads nothing from that partition again.
CHECK_S = 30.0
QOS = 1  # AMQP with manual acknowledgement is at least once, as MQTT QoS 1
# What a channel or connection going away raises; RuntimeError is aiormq's "channel/
# connection closed" (the node went meanwhile).
_GONE = (aiormq.exceptions.AMQPError, WireError, OSError, TimeoutError, RuntimeError)

# RabbitMQ 3.10's MQTT plugin (rabbit_mqtt_util:to_amqp) turns a topic's `/` into `.` and
# `+` into `*`; a `.` in a topic stays a `.`, so it comes back as a level separator (see
# the module docstring). `+` cannot be in a published topic, so a `*` in a routing key
# was a `*` in the topic.
_TO_MQTT = str.maketrans(".", "/")
_TO_AMQP = str.maketrans("/", ".")
_FILTER = str.maketrans({"/": ".", "+": "*"})  # `#` is the same in both


def mqtt_topic(routing_key: str) -> str:
    """The MQTT topic a message was published on, from its AMQP routing key (exact for a
    topic without `.`)."""
    return routing_key.translate(_TO_MQTT)


def routing_key(topic: str) -> str:
    """The routing key RabbitMQ's MQTT plugin gives a message published on `topic`."""
    return topic.translate(_TO_AMQP)


def binding_key(topic_filter: str) -> str:
    """The AMQP topic binding that matches what the MQTT filter `topic_filter` matches."""
    return topic_filter.translate(_FILTER)


@dataclass(frozen=True, slots=True)
class Partitions:
    """The declared topology: where devices' messages go and the queues to read them from."""

    exchange: str
    queues: tuple[str, ...]
    binding_keys: tuple[str, ...]  # on amq.topic, e.g. "siaga.*.*.telemetry"


def partition_names(name: str, partitions: int) -> tuple[str, tuple[str, ...]]:
    """The hash exchange's name and the partition queues' names for `name`."""
    return f"{name}.partitions", tuple(f"{name}.p{n}" for n in range(partitions))


async def declare_partitions(channel: AbstractChannel, topic_filters: Sequence[str], *,
                             name: str, partitions: int, replicas: int) -> Partitions:
    """Declare the partitions for messages published on `topic_filters` (MQTT filters).

    The `{name}.partitions` x-consistent-hash exchange, bound from amq.topic on each
    filter, and `partitions` quorum queues `{name}.p0`... (`replicas` members each,
    single-active-consumer) bound to it with weight PARTITION_WEIGHT. Declaring again with
    the same arguments changes nothing; other arguments for an existing queue are refused
    by RabbitMQ (PRECONDITION_FAILED), so every instance must be configured alike.
    """
    exchange, queues = partition_names(name, partitions)
    keys = tuple(dict.fromkeys(binding_key(topic) for topic in topic_filters))
    await channel.exchange_declare(exchange, exchange_type=HASH_EXCHANGE_TYPE, durable=True)
    for key in keys:
        await channel.exchange_bind(exchange, TOPIC_EXCHANGE, key)
    for queue in queues:
        await channel.queue_declare(queue, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-quorum-initial-group-size": replicas,
            "x-single-active-consumer": True,
        })
        await channel.queue_bind(queue, exchange, PARTITION_WEIGHT)
    return Partitions(exchange, queues, keys)


class AckWindow:
    """The delivery tags of one channel, acknowledged up to the highest contiguous one.

    AMQP's `basic.ack(multiple=True)` acknowledges every tag up to the one given, so a tag
    may be sent only once all below it are durable. Tags count from 1 on each channel.
    """

    def __init__(self) -> None:
        self.upto = 0  # every tag up to this one is durable
        self.sent = 0  # the broker has been told up to this one
        self._ahead: set[int] = set()  # durable, but above a gap

    def acknowledge(self, tags: Iterable[int]) -> None:
        upto, ahead = self.upto, self._ahead
        ahead.update(tag for tag in tags if tag > upto)
        while upto + 1 in ahead:
            upto += 1
            ahead.remove(upto)
        self.upto = upto

    def unsent(self) -> int | None:
        """The tag to acknowledge (multiple) now, if any; it counts as sent from here."""
        if self.upto <= self.sent:
            return None
        self.sent = self.upto
        return self.upto


class _Link(Protocol):
    """What consuming needs of a connection: one channel's consumers and acknowledgements."""

    @property
    def is_closed(self) -> bool: ...

    def ends(self) -> list[asyncio.Future[Any]]:
        """Futures done when the channel or connection is gone (the caller may cancel them)."""
        ...

    async def consume(self, queue: str, consumer_tag: str, deliver: Deliver) -> None: ...

    async def queue_exists(self, queue: str) -> None:
        """Look `queue` up on the channel (passive declare); a missing one ends the channel."""
        ...

    async def ack(self, tag: int, *, wait: bool = False) -> None:
        """Acknowledge every delivery up to `tag` (multiple); `wait` until it is written."""
        ...

    async def close(self) -> None: ...

    def abort(self) -> None:
        """Close at once, without a goodbye (the task is being cancelled)."""
        ...

    def pause(self) -> bool:
        """Stop reading deliveries for a while (the inbox is full); `resume` reads again.
        Whether it paused."""
        ...

    def resume(self) -> None: ...


class _AiormqLink:
    """aiormq's channel (the reference reader)."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel,
                 on_cancel: Callable[[str], None]) -> None:
        self._connection, self._channel = connection, channel
        channel.on_consumer_cancel_callbacks.add(
            lambda frame: on_cancel(frame.consumer_tag or ""))

    @property
    def is_closed(self) -> bool:
        return self._channel.is_closed

    def ends(self) -> list[asyncio.Future[Any]]:
        return [self._channel.closing, self._connection.closing]

    async def consume(self, queue: str, consumer_tag: str, deliver: Deliver) -> None:
        async def on_message(message: DeliveredMessage) -> None:
            # aiormq runs this as a task per delivery, in delivery order; it never awaits.
            delivery = message.delivery
            assert isinstance(delivery, spec.Basic.Deliver)  # basic_consume gives no other
            deliver(delivery.routing_key or "", message.body, delivery.delivery_tag or 0,
                    bool(delivery.redelivered))

        await self._channel.basic_consume(queue, on_message, no_ack=False,
                                          consumer_tag=consumer_tag)

    async def queue_exists(self, queue: str) -> None:
        await self._channel.queue_declare(queue, passive=True)

    async def ack(self, tag: int, *, wait: bool = False) -> None:
        await self._channel.basic_ack(tag, multiple=True, wait=wait)

    async def close(self) -> None:
        pass  # the connection is closed by the session

    def abort(self) -> None:
        pass  # likewise

    # The reference reader is bounded by the prefetch alone: aiormq reads through a
    # StreamReader, which resumes a transport it paused itself, and would resume ours.
    def pause(self) -> bool:
        return False

    def resume(self) -> None:
        pass


class _WireLink:
    """ingest.amqpwire's connection (`amqp.reader: wire`)."""

    def __init__(self, wire: WireConnection, on_cancel: Callable[[str], None]) -> None:
        self._wire = wire
        wire.on_cancel = on_cancel

    @property
    def is_closed(self) -> bool:
        return self._wire.is_closed

    def ends(self) -> list[asyncio.Future[Any]]:
        return [self._wire.ended]

    async def consume(self, queue: str, consumer_tag: str, deliver: Deliver) -> None:
        await self._wire.consume(queue, consumer_tag, deliver)

    async def queue_exists(self, queue: str) -> None:
        await self._wire.queue_exists(queue)

    async def ack(self, tag: int, *, wait: bool = False) -> None:
        self._wire.ack(tag)  # on the socket before anything sent later, such as the goodbye

    async def close(self) -> None:
        await self._wire.close()

    def abort(self) -> None:
        self._wire.abort()

    def pause(self) -> bool:
        return self._wire.pause_reading()

    def resume(self) -> None:
        self._wire.resume_reading()


class AmqpSubscriber:
    """Reads the partition queues; messages are acknowledged by the caller once durable."""

    def __init__(self, settings: AmqpSettings, topics: list[str], clock_ns: Callable[[], int],
                 on_connection: Callable[[bool], None] | None = None,
                 on_takeover: Callable[[], None] | None = None, *,
                 inbox_max: int = INBOX_MAX, inbox_max_bytes: int = INBOX_MAX_BYTES) -> None:
        self._settings = settings
        self._topics = topics  # MQTT filters: the bindings from amq.topic
        self._clock_ns = clock_ns
        self._on_connection = on_connection  # called in the event loop: up (True) or down
        # Called in the event loop before the first delivery of each partition on each
        # channel reaches the inbox: see "Taking partitions over" in the module docstring.
        # An attribute, so the service may set it once the rules exist.
        self.on_takeover = on_takeover
        # Bounded as the MQTT input's (ingest.inbox): the wire reader stops reading its
        # socket when full. The prefetch alone bounds messages, not bytes, and a partition
        # taken over brings its own prefetch.
        self._inbox = Inbox(inbox_max, inbox_max_bytes)
        self._paused: _Link | None = None  # the link left unread until the inbox drains
        self.pauses = 0  # times the inbox filled and reading paused
        self._generation = 0
        self._link: _Link | None = None
        self._window = AckWindow()
        self._ack_due = asyncio.Event()
        self._closing = False
        self._stack = AsyncExitStack()
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()  # set once every home partition has our consumer
        self.standing_by = asyncio.Event()  # set once every partition has our consumer
        # The partitions (queue names) that delivered to the current channel: those this
        # instance reads now (one that is ours but has had no message yet is not here).
        self.reading: set[str] = set()
        self.connects = 0
        self.url: str | None = None  # the node connected to, credentials redacted

    async def __aenter__(self) -> AmqpSubscriber:
        group = await self._stack.enter_async_context(asyncio.TaskGroup())
        # The first connection is retried like any other, so the service starts (and
        # acknowledges nothing) even while the broker is down.
        self._connection_task = group.create_task(self._keep_connected())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._closing = True
        if self._link is not None:
            await self._flush_acks(self._link)  # the pipeline's last flush acknowledged these
        self._connection_task.cancel()
        await self._stack.aclose()

    # --- connection -------------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        s = self._settings
        delay, attempt, failures = float(s.reconnect_min_s), 0, 0
        while not self._closing:
            url = s.urls[attempt % len(s.urls)]
            attempt += 1  # the next node next time, whether this one fails now or later
            consumed_s = await self._session(url)
            if self._closing:
                return
            if consumed_s is not None and consumed_s >= BRIEF_SESSION_S:
                # A node went away: the others are likely up, try the next now.
                delay, failures = float(s.reconnect_min_s), 0
                continue
            failures += 1  # refused, or consumed only briefly (see BRIEF_SESSION_S)
            if failures % len(s.urls) == 0:  # every node refused: wait before another round
                await asyncio.sleep(delay)
                delay = min(delay * 2, float(s.reconnect_max_s))

    async def _session(self, url: str) -> float | None:
        """Connect to `url` and consume until the connection ends; for how long it consumed
        (seconds), None if it could not start."""
        try:
            connection = await asyncio.wait_for(aiormq.connect(url), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            log.warning("AMQP connection to %s failed: %s", redact_userinfo(url), exc)
            return None
        try:
            return await self._while_connected(connection, url)
        finally:
            self._lost()
            with contextlib.suppress(Exception):  # the socket is closed either way
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)

    async def _while_connected(self, connection: AbstractConnection,
                               url: str) -> float | None:
        """Declare and consume, sending acknowledgements until the channel or node is gone;
        for how long it consumed, None if it could not start consuming."""
        s = self._settings
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        _, queues = partition_names(s.name, s.partitions)
        homes = [queue for n, queue in enumerate(queues) if s.home(n)]
        others = [queue for n, queue in enumerate(queues) if not s.home(n)]
        link: _Link | None = None
        try:
            channel = await connection.channel(publisher_confirms=False)
            await declare_partitions(channel, self._topics, name=s.name,
                                     partitions=s.partitions, replicas=s.replicas)
            link = await self._open_link(connection, channel, url, lost)
            self._generation += 1
            self._link, self._window = link, AckWindow()
            self.reading = set()
            await self._consume(link, homes)
        except _GONE as exc:
            log.warning("AMQP consuming through %s failed: %s", redact_userinfo(url), exc)
            if link is not None:
                await link.close()
            return None
        except BaseException:  # cancelled while starting: no connection left behind
            if link is not None:
                link.abort()
            raise
        try:
            return await self._consuming(link, url, homes, others, lost)
        finally:
            # After a server's Basic.Cancel the connection is still open, and what the
            # pipeline made durable since the last acknowledgement (the sender is stopped)
            # is acknowledged before the goodbye, rather than delivered again.
            try:
                await self._flush_acks(link)
            finally:  # even if cancelled meanwhile: no connection left behind
                await link.close()

    async def _open_link(self, connection: AbstractConnection, channel: AbstractChannel,
                         url: str, lost: asyncio.Future[None]) -> _Link:
        """The channel to consume on, with its prefetch: aiormq's, or amqpwire's own."""
        s = self._settings

        def on_cancel(consumer_tag: str) -> None:
            self._cancelled(consumer_tag, lost)

        if s.reader == "wire":
            wire = await asyncio.wait_for(WireConnection.connect(url, s.prefetch),
                                          CONNECT_TIMEOUT_S)
            # The declaring connection is of no more use: only the wire one is watched.
            try:
                with contextlib.suppress(*_GONE):
                    await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)
            except BaseException:  # cancelled meanwhile
                wire.abort()
                raise
            return _WireLink(wire, on_cancel)
        await channel.basic_qos(prefetch_count=s.prefetch)
        return _AiormqLink(connection, channel, on_cancel)

    async def _consuming(self, link: _Link, url: str, homes: Sequence[str],
                         others: Sequence[str], lost: asyncio.Future[None]) -> float:
        s = self._settings
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.connects += 1
        self.url = redact_userinfo(url)
        log.info("AMQP instance %d of %d consuming its %d home partitions of %s through %s "
                 "(prefetch %d each)", s.instance, s.instances, len(homes), s.name,
                 self.url, s.prefetch)
        self.connected.set()
        self.subscribed.set()
        if self._on_connection is not None:
            self._on_connection(True)
        ends = [*link.ends(), lost]
        try:
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(self._send_acks(link))
                standby = group.create_task(self._stand_by(link, others))
                checker = group.create_task(self._check(link, [*homes, *others]))
                await asyncio.wait([*ends, sender], return_when=asyncio.FIRST_COMPLETED)
                sender.cancel()
                # Before stopping the standby and the checker: cancelled amid a call, either
                # ends the wire connection (its reply abandoned), and with it the chance to
                # acknowledge.
                await self._flush_acks(link)
                standby.cancel()
                checker.cancel()
        finally:
            for end in ends:  # observers of the closing: stop them, and read their errors
                if end.done() and not end.cancelled():
                    end.exception()
                end.cancel()
        if not self._closing:
            log.warning("AMQP connection through %s lost; connecting to the next node", self.url)
        return loop.time() - started

    async def _consume(self, link: _Link, queues: Sequence[str]) -> None:
        for queue in queues:
            # The tag names the instance, so `rabbitmqctl list_consumers` shows who reads what.
            await link.consume(queue, f"{queue}.i{self._settings.instance}",
                               self._receiver(self._generation, queue))

    async def _stand_by(self, link: _Link, queues: Sequence[str]) -> None:
        """Register on the partitions of the other instances, once they had time to register
        on their own (RabbitMQ makes the first consumer of a queue its reader)."""
        if queues:
            await asyncio.sleep(self._settings.standby_after_s)
            try:
                await self._consume(link, queues)
            except _GONE as exc:
                # The channel is going: its end starts the next generation, which stands by anew.
                log.warning("AMQP standby on %d partitions failed: %s", len(queues), exc)
                return
            log.info("AMQP instance %d standing by on %d partitions of other instances",
                     self._settings.instance, len(queues))
        self.standing_by.set()

    def _cancelled(self, consumer_tag: str, lost: asyncio.Future[None]) -> None:
        # A partition without our consumer would go unread: start the connection over.
        log.warning("RabbitMQ cancelled consumer %s; reconnecting", consumer_tag)
        if not lost.done():
            lost.set_result(None)

    async def _check(self, link: _Link, queues: Sequence[str]) -> None:
        """Every CHECK_S, look the partitions up on the channel: one deleted without a word
        to us ends the channel (404), and the connection starts over, declaring it again."""
        while True:
            await asyncio.sleep(CHECK_S)
            try:
                for queue in queues:
                    await link.queue_exists(queue)
            except _GONE as exc:
                log.warning("AMQP partitions looked up through %s: %s", self.url, exc)
                return  # the channel's end (ends) starts the connection over

    async def _send_acks(self, link: _Link) -> None:
        """Tell the broker what `ack` found durable, one `multiple` acknowledgement at a time."""
        window, due = self._window, self._ack_due
        while True:
            await due.wait()
            due.clear()
            tag = window.unsent()
            if tag is None:
                continue
            try:
                await link.ack(tag)
            except _GONE:
                return  # the channel is closing: its deliveries come again

    async def _flush_acks(self, link: _Link) -> None:
        """Send the acknowledgement due, if any, and wait until it is written, while `link`
        is open. Bounded: on a half-dead socket the write would wait for the heartbeat to
        fail (minutes), past a service manager's stop time-out. Unsent, they come again."""
        if link.is_closed:
            return  # its deliveries come again: their tags died with the channel
        tag = self._window.unsent()
        if tag is not None:
            with contextlib.suppress(*_GONE):
                await asyncio.wait_for(link.ack(tag, wait=True), CLOSE_TIMEOUT_S)

    def _lost(self) -> None:
        # Delivery tags belong to the channel: what it delivered can no longer be
        # acknowledged, and RabbitMQ delivers it again. What is still in the inbox comes
        # again, so it is dropped rather than decoded twice.
        self._generation += 1
        self._link = None
        self._paused = None  # the next link starts reading
        generation = self._generation
        self._inbox.keep_generation(generation)
        was_up = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        self.standing_by.clear()
        self.reading = set()
        if was_up and self._on_connection is not None:
            self._on_connection(False)

    def _took_over(self, queue: str) -> None:
        """`queue` delivers to this channel for the first time, or again after it moved
        away (see the module docstring): say so before its message."""
        self.reading.add(queue)
        log.info("AMQP partition %s now read by instance %d", queue, self._settings.instance)
        if self.on_takeover is not None:
            self.on_takeover()

    def _receiver(self, generation: int, queue: str) -> Deliver:
        clock_ns, inbox = self._clock_ns, self._inbox
        first = True
        # The last delivery was not redelivered: a redelivered one now means the partition
        # moved away and came back (see the module docstring).
        after_new = False

        def deliver(key: str, body: bytes, tag: int, redelivered: bool) -> None:
            # Called in delivery order, in the event loop; it must not block.
            nonlocal first, after_new
            if self._generation != generation or self._closing:
                # Its channel is gone, or the pipeline is: it comes again on the next one.
                return
            if first or (redelivered and after_new):
                first = False
                self._took_over(queue)
            after_new = not redelivered
            inbox.put(Message(key.translate(_TO_MQTT), body, tag, QOS, generation, clock_ns()))
            inbox.wake()
            if inbox.full:
                self._pause()

        return deliver

    # --- the pipeline's side --------------------------------------------------------------

    async def wait(self, seconds: float) -> None:
        """Wait until messages are waiting, or for `seconds`."""
        await self._inbox.wait(seconds)

    def take(self, limit: int) -> list[Message]:
        """Take up to `limit` waiting messages, oldest first."""
        inbox = self._inbox
        taken = inbox.take(limit)
        if self._paused is not None and inbox.half_empty:
            self._paused.resume()
            self._paused = None
        return taken

    def _pause(self) -> None:
        link = self._link
        if link is not None and self._paused is None and link.pause():
            # Until the pipeline has taken half (`take`), or MAX_PAUSE_S has passed and the
            # link reads again by itself: then the prefetch is the bound until `take`.
            self._paused = link
            self.pauses += 1

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge durable messages (sent in the background); how many will be.

        A message from an earlier channel is not acknowledged: its delivery tag belongs to
        that channel, and the broker delivers it again.
        """
        generation = self._generation
        tags = [message.mid for message in messages if message.generation == generation]
        if tags:
            self._window.acknowledge(tags)
            self._ack_due.set()
        return len(tags)


__all__: Sequence[str] = ("AckWindow", "AmqpSubscriber", "Partitions", "binding_key",
                          "declare_partitions", "mqtt_topic", "routing_key")
