"""The subscriber against a real Mosquitto: buffered reads, the bounded inbox, batched acks.

ingest/subscriber.py drives paho-mqtt from the event loop and overrides private parts of
it (buffered `_sock_recv`, the direct message hand-off, raw PUBACK packets); these tests
are what would fail if a paho release changed them.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import itertools
import socket
import termios
from contextlib import AsyncExitStack

import pytest

from ingest.inbox import INBOX_MAX, INBOX_MAX_BYTES, Message
from ingest.settings import MqttSettings
from ingest.subscriber import Subscriber
from siaga.sandbox.mosquitto import ADMIN_USER, Mosquitto
from tests.integration.support import Publisher, unique_name
from tests.polling import a_few_loop_iterations, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def topic() -> str:
    return f"{unique_name('sub')}/x/telemetry"


@pytest.fixture
def settings(mosquitto: Mosquitto, topic: str) -> MqttSettings:
    return MqttSettings(url=mosquitto.url_for(ADMIN_USER), client_id=unique_name("c"),
                        topic_prefix=topic.split("/")[0], keepalive_s=5, reconnect_max_s=2)


async def started(stack: AsyncExitStack, settings: MqttSettings, topic: str, *,
                  inbox_max: int = INBOX_MAX, inbox_max_bytes: int = INBOX_MAX_BYTES
                  ) -> Subscriber:
    subscriber = await stack.enter_async_context(
        Subscriber(settings, [topic], clock_ns=lambda: 0, inbox_max=inbox_max,
                   inbox_max_bytes=inbox_max_bytes))
    await asyncio.wait_for(subscriber.subscribed.wait(), 10)
    return subscriber


async def take_all(subscriber: Subscriber, count: int, within: float = 20.0) -> list[Message]:
    taken: list[Message] = []

    async def fill() -> None:
        while len(taken) < count:
            await subscriber.wait(0.2)
            taken.extend(subscriber.take(1000))

    await asyncio.wait_for(fill(), within)
    return taken


def unread(subscriber: Subscriber) -> bool:
    """Whether the subscriber has bytes it could read now: in paho's buffer or the socket."""
    client = subscriber._client
    if client.buffered:
        return True
    sock = client.socket()
    if sock is None:
        return False
    waiting = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting)
    return waiting[0] > 0


def publish_numbered(broker: Mosquitto, topic: str, count: int, size: int = 0,
                     first: int = 0) -> None:
    publisher = Publisher(broker, user=ADMIN_USER)
    try:
        for number in range(first, first + count):
            publisher.publish(topic, str(number).encode() + b" " * size)
        publisher.wait_acked(count)
    finally:
        publisher.close()


async def test_many_small_messages_arrive_whole_and_in_order(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    # Thousands of messages share each 64 KiB read: packets straddle the chunk borders.
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 5000, 37)
        taken = await take_all(subscriber, 5000)
    assert [int(m.payload.split()[0]) for m in taken] == list(range(5000))
    assert all(len(m.payload) == len(str(i)) + 37 for i, m in enumerate(taken))
    assert {m.topic for m in taken} == {topic}


async def test_a_full_inbox_stops_reading_until_the_pipeline_takes(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic, inbox_max=100)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 1000)
        await eventually(lambda: subscriber.backlog >= 100, what="a full inbox")
        # More messages wait to be read; were the subscriber still reading, the loop would
        # hand them to it at its next iteration and the backlog would grow past 100.
        await eventually(lambda: unread(subscriber) or subscriber.backlog > 100,
                         what="messages waiting unread")
        await a_few_loop_iterations()
        assert subscriber.backlog == 100
        assert unread(subscriber)
        assert subscriber.pauses == 1
        taken = await take_all(subscriber, 1000)
    assert [int(m.payload) for m in taken] == list(range(1000))


async def test_large_payloads_fill_the_inbox_by_bytes(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic, inbox_max_bytes=100_000)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 50, 10_000)
        await eventually(lambda: subscriber.pauses == 1, what="the inbox pausing")
        assert subscriber.backlog == 10  # the tenth message crossed 100,000 bytes
        taken = await take_all(subscriber, 50)
    assert [int(m.payload.split()[0]) for m in taken] == list(range(50))


async def test_a_pause_longer_than_the_keepalive_keeps_the_connection(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    # Paused, PINGRESPs wait unread: paho alone would call the broker dead after 2 x 5 s.
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic, inbox_max=10)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 20)
        await eventually(lambda: subscriber.pauses == 1, what="the inbox pausing")
        # The fault's duration: paused past the broker's 1.5 x keepalive and paho's 2 x, the
        # connection must survive it. Only time passing can show that.
        await asyncio.sleep(13)
        assert subscriber.connected.is_set()
        taken = await take_all(subscriber, 20)
        assert subscriber.connects == 1
    assert [int(m.payload) for m in taken] == list(range(20))


async def test_acks_of_a_batch_settle_exactly_those_messages(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    # Acknowledge the first 300 of 500 in one write, leave: the broker redelivers the rest.
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 500)
        taken = await take_all(subscriber, 500)
        assert subscriber.ack(taken[:300]) == 300
        # The PUBACKs leave with the next loop iterations: written, they reach the broker
        # before the DISCONNECT that closes this connection.
        await eventually(lambda: not subscriber._client.want_write(), what="the PUBACKs sent")
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic)
        # A later message is delivered after every redelivery: once it is here, all are.
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 1, 0, 500)
        again = await take_all(subscriber, 201)
        assert int(again[-1].payload) == 500
        assert subscriber.ack(again) == 201
    assert sorted(int(m.payload) for m in again[:-1]) == list(range(300, 500))


async def test_acks_from_an_earlier_connection_are_dropped(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 3)
        taken = await take_all(subscriber, 3)
        # Kick the connection: a second client with the same id takes the session over.
        await stack.enter_async_context(Subscriber(settings, [topic], lambda: 0))
        await eventually(lambda: subscriber.connects >= 2 or not subscriber.connected.is_set(),
                         what="the first connection kicked")
        assert subscriber.ack(taken) == 0


async def test_qos_0_messages_and_empty_payloads_arrive_and_need_no_ack(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    settings = settings.model_copy(update={"qos": 0})
    async with AsyncExitStack() as stack:
        subscriber = await started(stack, settings, topic)
        publisher = Publisher(mosquitto, user=ADMIN_USER)
        try:
            for body in (b"", b"x" * 200, "ü".encode()):
                publisher.publish(topic, body, qos=0)
            taken = await take_all(subscriber, 3)
        finally:
            publisher.close()
    assert [(m.payload, m.qos, m.mid) for m in taken] == [
        (b"", 0, 0), (b"x" * 200, 0, 0), ("ü".encode(), 0, 0)]
    assert subscriber.ack(taken) == 0


async def test_a_message_a_lost_connection_left_unacknowledged_keeps_its_first_time(
    mosquitto: Mosquitto, settings: MqttSettings, topic: str,
) -> None:
    # A reading without `ts` is stamped with its time of receipt: its redelivered copy must
    # get the first copy's, or it is stored again as a second point (as the review found).
    ticks = itertools.count(1_000)
    async with AsyncExitStack() as stack:
        subscriber = await stack.enter_async_context(
            Subscriber(settings, [topic], clock_ns=lambda: next(ticks)))
        await asyncio.wait_for(subscriber.subscribed.wait(), 10)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 10)
        for _ in range(2):  # one payload twice, as a device without ts or seq may send it
            await asyncio.to_thread(publish_numbered, mosquitto, topic, 1, 0, 11)
        first = await take_all(subscriber, 12)
        assert subscriber.ack(first[:4]) == 4
        await eventually(lambda: not subscriber._client.want_write(), what="the PUBACKs sent")
        sock = subscriber._client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # the connection is lost with 6 in the pipeline
        await eventually(lambda: subscriber.connects >= 2 and subscriber.subscribed.is_set(),
                         what="connected again")
        # After the redeliveries: a new message, and one whose payload an acknowledged
        # message had (its copy is no replay).
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 1, 0, 10)
        await asyncio.to_thread(publish_numbered, mosquitto, topic, 1, 0, 2)
        again = await take_all(subscriber, 10)
        assert subscriber.ack(again) == 10
    # The copies, in order, each with its own first time (the two 11s' apart).
    assert [(m.payload, m.received_ns) for m in again[:8]] == [
        (m.payload, m.received_ns) for m in first[4:]]
    newest = max(m.received_ns for m in first)
    assert [m.payload for m in again[8:]] == [b"10", b"2"]
    assert all(m.received_ns > newest for m in again[8:])
