"""`amqp.reader: wire` against the 3-node RabbitMQ cluster: what the broker does to a
consumer (redelivery, cancel, closing the connection) and what the subscriber must do in
return. The service-level tests (nothing lost across a node's kill, several instances) are
in tests/integration/test_amqp_input.py, with this reader (the default) and aiormq's.

Messages are published over AMQP to amq.topic, with the routing key the MQTT plugin would
give them, and confirmed, so each test knows they are in the partitions before it reads.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import json
import termios
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiormq
import pytest

from ingest import amqp as amqp_input
from ingest import amqpwire
from ingest.amqp import (
    TOPIC_EXCHANGE,
    AmqpSubscriber,
    _WireLink,
    declare_partitions,
    routing_key,
)
from ingest.amqpwire import WireConnection, WireError
from ingest.inbox import INBOX_MAX, Message
from ingest.settings import AmqpSettings
from siaga.sandbox.rabbitmq import RabbitCluster
from tests.integration.support import unique_name
from tests.polling import a_few_loop_iterations, eventually, wait_until

WITHIN_S = 120  # a ceiling for a 3-node broker on a loaded 2-core machine (elections)
# RabbitMQ 3.10 sent no Basic.Cancel in 5 of about 400 deletions of a partition we read
# (the partitions' look-up notices it within 30 s): a test of what follows a cancel repeats
# the deletion when none came.
CANCEL_ATTEMPTS = 3


async def publish(cluster: RabbitCluster, topics_and_bodies: list[tuple[str, bytes]]) -> None:
    async with aiormq.connect(cluster.amqp_url(2)) as connection:
        channel = await connection.channel()  # publisher confirms: each publish awaits its
        for topic, body in topics_and_bodies:
            await channel.basic_publish(body, exchange=TOPIC_EXCHANGE,
                                        routing_key=routing_key(topic))


def settings(cluster: RabbitCluster, partitions: int = 2) -> AmqpSettings:
    return AmqpSettings(urls=[cluster.amqp_url(1)], name=unique_name("wire"),
                        partitions=partitions, replicas=len(cluster.nodes), reader="wire",
                        reconnect_max_s=2, standby_after_s=0)


@asynccontextmanager
async def subscribed(s: AmqpSettings, prefix: str) -> AsyncIterator[AmqpSubscriber]:
    async with AmqpSubscriber(s, [f"{prefix}/#"], time.time_ns) as subscriber:
        await asyncio.wait_for(subscriber.subscribed.wait(), WITHIN_S)
        yield subscriber


async def take(subscriber: AmqpSubscriber, count: int) -> list[Message]:
    taken: list[Message] = []

    def more() -> bool:
        taken.extend(subscriber.take(10_000))
        return len(taken) >= count

    await eventually(more, WITHIN_S, f"{count} deliveries")
    return taken


def bodies(messages: list[Message]) -> list[bytes]:
    return [message.payload for message in messages]


def queue_depths(cluster: RabbitCluster, name: str) -> dict[str, int]:
    rows = json.loads(cluster.rabbitmqctl(1, "list_queues", "name", "messages", "--formatter",
                                          "json"))
    return {row["name"]: row["messages"] for row in rows if row["name"].startswith(f"{name}.p")}


async def wait_depth(cluster: RabbitCluster, queue: str, messages: int) -> None:
    """Wait (rabbitmqctl in a thread) until `queue` holds `messages` unacknowledged or ready."""
    name = queue.rsplit(".p", 1)[0]
    await asyncio.to_thread(wait_until, lambda: queue_depths(cluster, name)[queue] == messages,
                            WITHIN_S, f"{messages} messages in {queue}", 0.25)


async def test_deliveries_come_whole_and_in_order_and_acknowledged_ones_are_gone(
        rabbit_cluster: RabbitCluster) -> None:
    prefix, s = unique_name("wd"), settings(rabbit_cluster, partitions=1)
    sent = [(f"{prefix}/water-level/d1/telemetry", f'{{"seq":{n}}}'.encode()) for n in range(300)]
    sent += [(f"{prefix}/camera/c1/snapshot", bytes(range(256)) * 1200)]  # bodies > frame_max
    sent += [(f"{prefix}/water-level/d1/status", b"")]
    async with subscribed(s, prefix) as subscriber:
        await publish(rabbit_cluster, sent)
        messages = await take(subscriber, len(sent))
        assert [(m.topic, m.payload) for m in messages] == sent
        assert [m.mid for m in messages] == list(range(1, len(sent) + 1))
        assert subscriber.ack(messages) == len(sent)
    # The last acknowledgement went out before the goodbye: nothing is left to redeliver.
    await wait_depth(rabbit_cluster, f"{s.name}.p0", 0)


async def test_unacknowledged_deliveries_come_again_in_order_after_the_server_closes_us(
        rabbit_cluster: RabbitCluster) -> None:
    prefix, s = unique_name("wc"), settings(rabbit_cluster, partitions=1)
    sent = [(f"{prefix}/water-level/d1/telemetry", f'{{"seq":{n}}}'.encode()) for n in range(20)]
    async with subscribed(s, prefix) as subscriber:
        await publish(rabbit_cluster, sent)
        first = await take(subscriber, len(sent))
        subscriber.ack(first[:5])  # 6.. are not durable yet when the connection goes
        await wait_depth(rabbit_cluster, f"{s.name}.p0", 15)  # the first five acknowledged
        # Connection.Close from the server, as on a node's shutdown or an operator's command.
        await asyncio.to_thread(rabbit_cluster.rabbitmqctl, 1, "close_all_connections",
                                "test closes it")
        again = await take(subscriber, 15)
        assert subscriber.connects == 2
        assert bodies(again) == bodies(first[5:])  # the same, in the same order
        assert {m.generation for m in again} != {m.generation for m in first}
        assert subscriber.ack(first[5:]) == 0  # the old channel's tags are void
        assert subscriber.ack(again) == 15
        await wait_depth(rabbit_cluster, f"{s.name}.p0", 0)  # the redelivered acknowledged


async def started_over_reading_both(cluster: RabbitCluster, subscriber: AmqpSubscriber,
                                    s: AmqpSettings, prefix: str) -> None:
    """After `{name}.p1` was deleted: a new connection, the partition declared again, and
    messages of both partitions read."""
    await eventually(lambda: subscriber.connects == 2 and subscriber.subscribed.is_set(),
                     WITHIN_S, "a new connection, the partitions declared again")
    sent = [(f"{prefix}/water-level/d{n}/telemetry", b"{}") for n in range(40)]
    await publish(cluster, sent)
    messages = await take(subscriber, len(sent))
    assert sorted(m.topic for m in messages) == sorted(topic for topic, _ in sent)
    assert subscriber.reading == {f"{s.name}.p0", f"{s.name}.p1"}


async def test_a_consumer_cancelled_by_the_server_makes_the_subscriber_start_over(
        rabbit_cluster: RabbitCluster) -> None:
    prefix, s = unique_name("wx"), settings(rabbit_cluster, partitions=2)
    async with subscribed(s, prefix) as subscriber:
        # Deleting a queue cancels its consumers (Basic.Cancel, consumer_cancel_notify).
        await asyncio.to_thread(rabbit_cluster.rabbitmqctl, 1, "delete_queue", f"{s.name}.p1")
        await started_over_reading_both(rabbit_cluster, subscriber, s, prefix)


async def test_the_wire_connection_refuses_a_wrong_password(
        rabbit_cluster: RabbitCluster) -> None:
    url = rabbit_cluster.amqp_url(1).replace("@", "x@", 1)  # the password with an x more
    with pytest.raises(WireError, match="ACCESS_REFUSED"):
        await WireConnection.connect(url, 10)


def ignore(key: str, body: bytes, tag: int, redelivered: bool) -> None:
    """A consumer's callback for a test that reads nothing."""


async def test_a_reply_abandoned_by_a_cancelled_call_answers_no_later_call(
        rabbit_cluster: RabbitCluster) -> None:
    name = unique_name("wr")
    async with aiormq.connect(rabbit_cluster.amqp_url(1)) as connection:
        await declare_partitions(await connection.channel(), ["wr/#"], name=name, partitions=2,
                                 replicas=len(rabbit_cluster.nodes))
    wire = await WireConnection.connect(rabbit_cluster.amqp_url(1), 10)
    transport = wire._transport
    assert transport is not None
    try:
        # The server's replies are held in the socket (not read) while the calls are made, so
        # the reply to the cancelled call comes after the next call is sent, as it may on a
        # loaded node.
        transport.pause_reading()
        first = asyncio.create_task(wire.consume(f"{name}.p0", "c0", ignore))
        await eventually(lambda: wire._reply is not None, WITHIN_S, "Basic.Consume sent")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(wire.consume(f"{name}.p1", "c1", ignore))
        await eventually(lambda: second.done() or wire._calls.locked(), WITHIN_S,
                         "the second call made")
        transport.resume_reading()
        # The first ConsumeOk to come is c0's: it must not pass for c1's.
        with pytest.raises(WireError, match="cancelled"):
            await asyncio.wait_for(second, WITHIN_S)
        assert wire.is_closed
    finally:
        wire.abort()


async def test_acknowledgements_due_when_the_server_cancels_a_consumer_are_sent_first(
        rabbit_cluster: RabbitCluster) -> None:
    prefix, s = unique_name("wa"), settings(rabbit_cluster, partitions=2)
    sent = [(f"{prefix}/water-level/d1/telemetry", f'{{"seq":{n}}}'.encode()) for n in range(10)]
    async with subscribed(s, prefix) as subscriber:
        await publish(rabbit_cluster, sent)  # one topic: all in one partition
        messages = await take(subscriber, len(sent))
        depths: dict[str, int] = {}

        def counted() -> bool:  # the queues' counts lag behind (statistics come every few s)
            depths.update(queue_depths(rabbit_cluster, s.name))
            return len(sent) in depths.values()

        await asyncio.to_thread(wait_until, counted, WITHIN_S, "the partition's count", 0.25)
        (home,) = [queue for queue, depth in depths.items() if depth == len(sent)]
        (other,) = [queue for queue in depths if queue != home]
        told: list[str] = []  # the consumer tags the server cancelled
        for attempt in range(CANCEL_ATTEMPTS):
            link = subscriber._link
            assert isinstance(link, _WireLink)
            wire = link._wire
            on_cancel = wire.on_cancel
            assert on_cancel is not None

            def cancelled(consumer_tag: str, on_cancel: Callable[[str], None] = on_cancel,
                          due: list[Message] = messages) -> None:
                # The pipeline makes the messages durable just as the server's cancel comes
                # (its acknowledgement lands after the subscriber has begun to start over).
                told.append(consumer_tag)
                on_cancel(consumer_tag)
                asyncio.get_running_loop().call_soon(subscriber.ack, due)

            wire.on_cancel = cancelled
            # Deleting the other partition cancels our consumer there (Basic.Cancel); the
            # connection is still open, so the due acknowledgement can and must go out.
            await asyncio.to_thread(rabbit_cluster.rabbitmqctl, 1, "delete_queue", other)
            await eventually(lambda connects=attempt + 2: subscriber.connects == connects
                             and subscriber.subscribed.is_set(), WITHIN_S, "a new connection")
            if told:
                break
            # RabbitMQ said nothing (see below) and the partitions' look-up started over: the
            # ten come again, unacknowledged, to the new connection. Once more with them.
            messages = await take(subscriber, len(sent))
        assert told, f"RabbitMQ cancelled no consumer in {CANCEL_ATTEMPTS} deletions"
        # Unacknowledged, the ten would come again to the new connection and stay there.
        await wait_depth(rabbit_cluster, home, 0)
        assert subscriber.take(100) == []


def unread_bytes(subscriber: AmqpSubscriber) -> int:
    """Bytes the server sent that wait in the wire connection's socket, not yet read."""
    link = subscriber._link
    assert isinstance(link, _WireLink) and link._wire._transport is not None
    waiting = array.array("i", [0])
    sock = link._wire._transport.get_extra_info("socket")
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting)
    return waiting[0]


BOUND = 500_000  # the inbox's bytes in these tests: ten of their messages


@asynccontextmanager
async def paused(cluster: RabbitCluster, tag: str,
                 ) -> AsyncIterator[tuple[AmqpSubscriber, str, list[tuple[str, bytes]]]]:
    """A subscriber whose inbox filled (60 messages of 50 kB, 3 MB, against BOUND) and
    paused, with nothing taken yet; yields it, its partition queue and what was sent."""
    prefix, s = unique_name(tag), settings(cluster, partitions=1)
    sent = [(f"{prefix}/water-level/d1/telemetry", str(n).encode() + b" " * 50_000)
            for n in range(60)]
    async with AmqpSubscriber(s, [f"{prefix}/#"], time.time_ns, inbox_max=INBOX_MAX,
                              inbox_max_bytes=BOUND) as subscriber:
        await asyncio.wait_for(subscriber.subscribed.wait(), WITHIN_S)
        await publish(cluster, sent)
        await eventually(lambda: subscriber.pauses == 1, WITHIN_S, "the inbox pausing")
        yield subscriber, f"{s.name}.p0", sent


async def test_a_full_inbox_leaves_the_socket_unread_until_the_pipeline_takes(
        rabbit_cluster: RabbitCluster) -> None:
    # RabbitMQ implements neither prefetch_size nor channel.flow: the prefetch (1000 here)
    # would let all 3 MB in; the inbox's byte bound must hold them in the socket instead.
    async with paused(rabbit_cluster, "wf") as (subscriber, queue, sent):
        await eventually(lambda: unread_bytes(subscriber) > 0, WITHIN_S,
                         "deliveries waiting unread in the socket")
        waiting = subscriber._inbox.bytes
        await a_few_loop_iterations()  # a reader still registered would be called in them
        assert subscriber._inbox.bytes == waiting
        # What crossed the bound came in the same read (asyncio reads 256 KiB at most).
        assert BOUND <= waiting < BOUND + 256 * 1024 + 50_100
        assert subscriber.backlog < len(sent)
        messages = await take(subscriber, len(sent))  # taking half resumes reading
        assert bodies(messages) == [body for _, body in sent]
        assert subscriber.connects == 1
        assert subscriber.ack(messages) == len(sent)
    await wait_depth(rabbit_cluster, queue, 0)


async def test_a_pause_ends_by_itself_before_the_server_would_drop_the_connection(
        rabbit_cluster: RabbitCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # RabbitMQ drops a connection it could not write to for 30 s; the reader pauses for
    # MAX_PAUSE_S at most (here 0.5 s), then the prefetch bounds the inbox.
    monkeypatch.setattr(amqpwire, "MAX_PAUSE_S", 0.5)
    async with paused(rabbit_cluster, "wp") as (subscriber, queue, sent):
        # Nothing is taken, yet every delivery reaches the inbox: reading resumed by itself.
        await eventually(lambda: subscriber.backlog == len(sent), WITHIN_S,
                         "every delivery read without the pipeline taking")
        assert subscriber.pauses == 1  # not paused again before the pipeline took half
        messages = await take(subscriber, len(sent))
        assert bodies(messages) == [body for _, body in sent]
        assert subscriber.connects == 1
        assert subscriber.ack(messages) == len(sent)
    await wait_depth(rabbit_cluster, queue, 0)


async def test_stopping_while_paused_still_says_goodbye(rabbit_cluster: RabbitCluster) -> None:
    # The server's CloseOk comes behind deliveries left unread: the reader reads again to
    # take it, rather than waiting out GOODBYE_S and dropping the connection.
    async with paused(rabbit_cluster, "wg") as (subscriber, queue, sent):
        await eventually(lambda: unread_bytes(subscriber) > 0, WITHIN_S,
                         "deliveries waiting unread in the socket")
        link = subscriber._link
        assert isinstance(link, _WireLink)
        wire = link._wire
    assert wire.is_closed
    assert wire.goodbye_answered
    assert wire.error is None
    await wait_depth(rabbit_cluster, queue, len(sent))  # none acknowledged: all kept


async def test_a_partition_deleted_without_a_word_is_noticed_and_declared_again(
        rabbit_cluster: RabbitCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # RabbitMQ 3.10 told the channel nothing in 5 of about 400 deletions; here the
    # subscriber's cancel handler is made deaf to stand for it. The periodic look-up
    # (CHECK_S, here 0.5 s) finds the queue gone, and the connection starts over.
    monkeypatch.setattr(amqp_input, "CHECK_S", 0.5)
    prefix, s = unique_name("wn"), settings(rabbit_cluster, partitions=2)
    async with subscribed(s, prefix) as subscriber:
        link = subscriber._link
        assert isinstance(link, _WireLink)
        link._wire.on_cancel = ignore_cancel
        await asyncio.to_thread(rabbit_cluster.rabbitmqctl, 1, "delete_queue", f"{s.name}.p1")
        await started_over_reading_both(rabbit_cluster, subscriber, s, prefix)


def ignore_cancel(consumer_tag: str) -> None:
    """A Basic.Cancel nobody hears, as when the server sends none."""
