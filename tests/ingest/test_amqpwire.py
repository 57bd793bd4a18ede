"""amqpwire's frame reader, fed bytes as a socket may hand them over.

The frames are made by pamqp, aiormq's codec, so the reader is checked against another
implementation of the protocol. The broker's side (handshake, consumers, cancel, close)
is in tests/integration/test_amqp_wire.py; a peer that stops reading, which a real broker
cannot be made into on demand, is a small server here that speaks the handshake only."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pframe
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from ingest.amqpwire import (
    CHANNEL,
    GOODBYE_S,
    Deliver,
    FrameReader,
    WireConnection,
    WireError,
    ack_frame,
    tls_context,
)
from tests.polling import eventually

Delivered = tuple[str, str, bytes, int]  # consumer, routing key, body, delivery tag


def delivery(consumer: str, key: str, body: bytes, tag: int, *, frame_max: int = 131072,
             redelivered: bool = False) -> bytes:
    """One delivery's frames, the body cut into frames of `frame_max` bytes at most."""
    frames = [pframe.marshal(spec.Basic.Deliver(consumer_tag=consumer, delivery_tag=tag,
                                                redelivered=redelivered, exchange="siaga.p",
                                                routing_key=key), CHANNEL),
              pframe.marshal(ContentHeader(body_size=len(body), properties=spec.Basic.Properties(
                  delivery_mode=2, headers={"x-mqtt-publish-qos": 1})), CHANNEL)]
    frames += [pframe.marshal(ContentBody(body[at:at + frame_max]), CHANNEL)
               for at in range(0, len(body), frame_max)]
    return b"".join(frames)


HEARTBEAT = pframe.marshal(Heartbeat(), 0)


class Recorder:
    def __init__(self, consumers: tuple[str, ...] = ("c0", "c1")) -> None:
        self.delivered: list[Delivered] = []
        self.redelivered: list[bool] = []  # each delivery's bit, in order
        self.methods: list[tuple[int, Frame]] = []
        self.reader = FrameReader(lambda channel, method: self.methods.append((channel, method)))
        for consumer in consumers:
            self.reader.consumers[consumer] = self._consumer(consumer)

    def _consumer(self, consumer: str) -> Deliver:
        def deliver(key: str, body: bytes, tag: int, redelivered: bool) -> None:
            self.delivered.append((consumer, key, body, tag))
            self.redelivered.append(redelivered)
        return deliver

    def feed(self, data: bytes, *cuts: int) -> None:
        """Feed `data` in pieces cut at `cuts`."""
        edges = [0, *cuts, len(data)]
        for start, end in itertools.pairwise(edges):
            self.reader.feed(data[start:end])


STREAM = b"".join([
    delivery("c0", "siaga.water-level.a.telemetry", b'{"seq":1}', 1),
    HEARTBEAT,
    delivery("c1", "siaga.water-level.b.telemetry", b'{"seq":2}', 2, redelivered=True),
    pframe.marshal(spec.Basic.Cancel(consumer_tag="c1", nowait=True), CHANNEL),
    delivery("c0", "siaga.water-level.a.status", b"", 3),
])
EXPECTED = [("c0", "siaga.water-level.a.telemetry", b'{"seq":1}', 1),
            ("c1", "siaga.water-level.b.telemetry", b'{"seq":2}', 2),
            ("c0", "siaga.water-level.a.status", b"", 3)]


def test_several_frames_in_one_read_are_delivered_in_order() -> None:
    recorder = Recorder()
    recorder.feed(STREAM)
    assert recorder.delivered == EXPECTED
    assert recorder.redelivered == [False, True, False]
    assert [(channel, type(method)) for channel, method in recorder.methods] == [
        (CHANNEL, spec.Basic.Cancel)]


def test_a_read_may_end_at_any_byte() -> None:
    for cut in range(1, len(STREAM)):
        recorder = Recorder()
        recorder.feed(STREAM, cut)
        assert recorder.delivered == EXPECTED, cut
        assert len(recorder.methods) == 1, cut


def test_bytes_coming_one_at_a_time_are_read_alike() -> None:
    recorder = Recorder()
    recorder.feed(STREAM, *range(1, len(STREAM)))
    assert recorder.delivered == EXPECTED


def test_nothing_is_delivered_before_its_body_has_come() -> None:
    frames = delivery("c0", "k", b"abc", 7)
    recorder = Recorder()
    recorder.feed(frames[:-1])
    assert recorder.delivered == []
    recorder.feed(frames[-1:])
    assert recorder.delivered == [("c0", "k", b"abc", 7)]


def test_a_body_in_several_frames_is_joined() -> None:
    body = bytes(range(256)) * 40  # 10,240 bytes in frames of 1000
    recorder = Recorder()
    recorder.feed(delivery("c0", "k", body, 9, frame_max=1000) + delivery("c1", "j", b"x", 10),
                  4321)
    assert recorder.delivered == [("c0", "k", body, 9), ("c1", "j", b"x", 10)]


def test_a_heartbeat_between_a_header_and_its_body_changes_nothing() -> None:
    frames = delivery("c0", "k", b"body", 5)
    body_at = frames.index(b"body") - 7  # the body frame's own head
    recorder = Recorder()
    recorder.feed(frames[:body_at] + HEARTBEAT + frames[body_at:])
    assert recorder.delivered == [("c0", "k", b"body", 5)]


def test_connection_and_channel_methods_go_to_their_handler() -> None:
    recorder = Recorder()
    recorder.feed(pframe.marshal(spec.Connection.Close(reply_code=320, reply_text="shutdown",
                                                       class_id=0, method_id=0), 0)
                  + pframe.marshal(spec.Channel.Close(reply_code=406, reply_text="nope",
                                                     class_id=60, method_id=20), 1))
    (zero, closing), (one, closed) = recorder.methods
    assert isinstance(closing, spec.Connection.Close) and isinstance(closed, spec.Channel.Close)
    assert (zero, closing.reply_code) == (0, 320)
    assert (one, closed.reply_text) == (1, "nope")


def test_a_frame_without_its_end_octet_is_refused() -> None:
    frames = bytearray(delivery("c0", "k", b"abc", 1))
    frames[-1] = 0
    with pytest.raises(WireError, match="end octet"):
        Recorder().feed(bytes(frames))


def test_a_delivery_for_an_unknown_consumer_is_refused() -> None:
    with pytest.raises(WireError, match="unknown consumer"):
        Recorder(consumers=()).feed(delivery("c0", "k", b"abc", 1))


def test_an_acknowledgement_is_the_frame_pamqp_would_send() -> None:
    for multiple in (True, False):
        assert ack_frame(123456789, multiple=multiple) == pframe.marshal(
            spec.Basic.Ack(delivery_tag=123456789, multiple=multiple), CHANNEL)


@given(st.lists(st.tuples(st.text(max_size=40).map(lambda t: t.replace(".", "/")),
                          st.binary(max_size=300), st.integers(1, 2**63 - 1), st.booleans()),
                max_size=8),
       st.lists(st.integers(0, 4000), max_size=6), st.integers(1, 120))
def test_any_deliveries_cut_anywhere_come_out_as_pamqp_wrote_them(
        messages: list[tuple[str, bytes, int, bool]], cuts: list[int], frame_max: int) -> None:
    data = b"".join(delivery("c0", key, body, tag, frame_max=frame_max, redelivered=again)
                    for key, body, tag, again in messages)
    recorder = Recorder()
    recorder.feed(data, *sorted({cut for cut in cuts if 0 < cut < len(data)}))
    assert recorder.delivered == [("c0", key, body, tag) for key, body, tag, _ in messages]
    assert recorder.redelivered == [again for *_, again in messages]


def test_a_routing_key_that_is_not_utf8_is_delivered_escaped() -> None:
    # RabbitMQ's MQTT plugin takes such a topic. Refused, it would end every connection
    # the quorum queue redelivers it to; escaped, the decoder dead-letters it.
    poison = delivery("c0", "siaga.water-level.XY.telemetry", b"{}", 1).replace(
        b".XY.", b".\xff\xfe.")  # the same length
    recorder = Recorder()
    recorder.feed(poison + delivery("c0", "siaga.water-level.a.telemetry", b"{}", 2))
    assert recorder.delivered == [("c0", "siaga.water-level.\\xff\\xfe.telemetry", b"{}", 1),
                                  ("c0", "siaga.water-level.a.telemetry", b"{}", 2)]


async def test_a_failing_consumer_ends_the_connection_with_the_reason() -> None:
    connection = WireConnection("amqp://guest:guest@127.0.0.1:1/", prefetch=10)

    def broken(key: str, body: bytes, tag: int, redelivered: bool) -> None:
        raise ValueError("the pipeline refused")

    connection._reader.consumers["c0"] = broken
    connection.data_received(delivery("c0", "k", b"x", 1))
    assert connection.ended.done() and connection.is_closed
    assert connection.error is not None and "the pipeline refused" in connection.error


class Transport(asyncio.Transport):
    """A socket that records how it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


def unterminated(consumer: str, tag: int) -> bytes:
    frames = bytearray(delivery(consumer, "k", b"x", tag))
    frames[-1] = 0  # the body frame's end octet
    return bytes(frames)


@pytest.mark.parametrize(("failing", "reason"), [
    (lambda consumer, tag: delivery(consumer, "k", b"x", tag), "on_takeover failed"),
    (unterminated, "end octet"),
])
async def test_a_failed_read_drops_the_connection_and_hands_nothing_over_again(
        failing: Callable[[str, int], bytes], reason: str) -> None:
    connection = WireConnection("amqp://guest:guest@127.0.0.1:1/", prefetch=10)
    transport = Transport()
    connection.connection_made(transport)
    tags: list[int] = []

    def deliver(key: str, body: bytes, tag: int, redelivered: bool) -> None:
        tags.append(tag)
        if tag == 3:
            raise RuntimeError("on_takeover failed")

    connection._reader.consumers["c0"] = deliver
    connection.data_received(delivery("c0", "k", b"a", 1) + delivery("c0", "k", b"b", 2)
                             + failing("c0", 3))
    assert connection.is_closed and reason in (connection.error or "")
    # Dropped, not closed gracefully: the peer is out of step, or we are.
    assert transport.aborted and not transport.closed
    # What the socket had read already comes before connection_lost: none of it is read.
    connection.data_received(delivery("c0", "k", b"d", 4))
    assert tags == ([1, 2, 3] if reason == "on_takeover failed" else [1, 2])


def test_amqps_options_are_read_as_aiormq_reads_them() -> None:
    lax = tls_context(urlsplit("amqps://siaga:pw@rabbit:5671/?no_verify_ssl=1"))
    assert (lax.check_hostname, lax.verify_mode) == (False, ssl.CERT_NONE)
    strict = tls_context(urlsplit("amqps://siaga:pw@rabbit:5671/"))
    assert (strict.check_hostname, strict.verify_mode) == (True, ssl.CERT_REQUIRED)
    with pytest.raises(FileNotFoundError):  # the CA file named is the one loaded
        tls_context(urlsplit("amqps://rabbit/?cafile=/nonexistent/ca.pem"))


# The handshake's replies, by what the client sends (AMQP 0-9-1 2.2.4).
HANDSHAKE: dict[type[Frame], Frame] = {
    spec.Connection.StartOk: spec.Connection.Tune(channel_max=2047, frame_max=131072,
                                                  heartbeat=0),
    spec.Connection.Open: spec.Connection.OpenOk(),
    spec.Channel.Open: spec.Channel.OpenOk(),
    spec.Basic.Qos: spec.Basic.QosOk(),
}


@asynccontextmanager
async def deaf_peer() -> AsyncIterator[str]:
    """A server that shakes hands and then reads nothing more (a half-dead broker): what
    the client writes then stays in its buffer. Yields the URL to connect to."""
    done = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readexactly(8)  # the protocol header
        writer.write(pframe.marshal(spec.Connection.Start(mechanisms="PLAIN",
                                                          locales="en_US"), 0))
        while True:
            head = await reader.readexactly(7)
            rest = await reader.readexactly(struct.unpack_from(">I", head, 3)[0] + 1)
            _, channel, method = pframe.unmarshal(head + rest)
            reply = HANDSHAKE.get(type(method)) if isinstance(method, Frame) else None
            if reply is not None:
                writer.write(pframe.marshal(reply, channel))
            if isinstance(method, spec.Basic.Qos):
                break
        await done.wait()  # the StreamReader stops reading the socket once its buffer is full

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"amqp://guest:guest@127.0.0.1:{port}/"
    finally:
        done.set()
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


def stuff(connection: WireConnection) -> None:
    """Write until the socket's buffers are full and the transport holds the rest."""
    transport = connection._transport
    assert transport is not None
    for _ in range(64):  # 8 MB of heartbeats at a time, until the sockets take no more
        connection._write(HEARTBEAT * (1 << 20))
        if transport.get_write_buffer_size() > 0:
            return
    pytest.fail("512 MB went into the socket buffers: the peer reads after all")


async def test_abort_drops_the_connection_at_once_with_writes_still_buffered() -> None:
    async with deaf_peer() as url:
        connection = await WireConnection.connect(url, prefetch=10)
        stuff(connection)
        connection.abort()
        # A graceful close would wait for the buffer to drain, for as long as the peer lives.
        await eventually(lambda: connection._transport is None, GOODBYE_S,
                         "the socket closed (connection_lost)")
        assert connection.is_closed and connection.error is None


async def test_a_goodbye_without_reply_drops_the_connection() -> None:
    async with deaf_peer() as url:
        connection = await WireConnection.connect(url, prefetch=10)
        stuff(connection)
        await connection.close(goodbye_s=0.5)  # Connection.Close is stuck behind the buffer
        await eventually(lambda: connection._transport is None, GOODBYE_S,
                         "the socket closed (connection_lost)")
        assert connection.is_closed
        assert connection.error is None  # our own close, however it went
