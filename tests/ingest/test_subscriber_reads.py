"""The subscriber's own reading of PUBLISH packets (`_Client.read_publishes`) against paho's.

The same byte stream, cut anywhere, must deliver the same messages in the same order whether
the whole PUBLISHes at the head of the read buffer are read by `read_publishes` or every
packet by paho's state machine (as before it existed), with other packets, QoS 0 and 1,
lengths of 1 to 3 bytes and packets longer than a read between them. Real sockets carry the
bytes (a socketpair, as the broker's TCP connection would); the test writes the broker's
side of MQTT 3.1.1 itself. tests/integration/test_subscriber.py runs the same code against
a real Mosquitto.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import MQTTv311
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ingest.subscriber import READ_CHUNK, _Client
from siaga.broker.config import remaining_length

PINGRESP = b"\xd0\x00"  # another packet type between the PUBLISHes: paho reads it
Delivered = tuple[bytes, bytes, int, int, bool]  # topic, payload, packet id, QoS, DUP


def publish(topic: bytes, payload: bytes, qos: int, mid: int, flags: int = 0) -> bytes:
    """A PUBLISH as a broker sends it; `flags`: DUP (0x08) and RETAIN (0x01) bits."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    body += payload
    return bytes([0x30 | qos << 1 | flags]) + remaining_length(len(body)) + body


@contextlib.contextmanager
def client_on_socket(delivered: list[Delivered], stop_after: int | None = None
                     ) -> Iterator[tuple[_Client, socket.socket]]:
    """A client reading one end of a socketpair (set where paho's connect sets it); the
    other end is the broker's."""
    def deliver(topic: bytes, payload: bytes, mid: int, qos: int, dup: bool) -> bool:
        delivered.append((topic, payload, mid, qos, dup))
        return stop_after is not None and len(delivered) % stop_after == 0

    client = _Client(deliver, callback_api_version=CallbackAPIVersion.VERSION2,
                     client_id="reads", protocol=MQTTv311, manual_ack=True)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    broker.setblocking(False)
    client._sock = ours  # paho's own attribute, as its connect sets it
    try:
        yield client, broker
    finally:
        client._sock = None
        ours.close()
        broker.close()


def read(client: _Client, *, own_reads: bool) -> MQTTErrorCode:
    """What `Subscriber._on_readable` does with what the socket holds now, or paho alone."""
    while True:
        client.exhausted = False
        if own_reads:
            client.read_publishes(1_000_000)
        code = client.loop_read()
        if code != MQTTErrorCode.MQTT_ERR_SUCCESS or client.exhausted:
            return code


def stream_through(stream: bytes, cuts: list[int], *, own_reads: bool
                   ) -> tuple[list[Delivered], MQTTErrorCode]:
    """Send `stream` in pieces cut at `cuts`, reading after each; what was delivered."""
    delivered: list[Delivered] = []
    code = MQTTErrorCode.MQTT_ERR_SUCCESS
    with client_on_socket(delivered) as (client, broker):
        bounds = [0, *sorted(set(cuts)), len(stream)]
        for start, end in itertools.pairwise(bounds):
            piece = memoryview(stream)[start:end]
            while piece:
                # When the socket's buffer is full: read, then send the rest.
                with contextlib.suppress(BlockingIOError):
                    piece = piece[broker.send(piece):]
                code = read(client, own_reads=own_reads)
                if code != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return delivered, code
    return delivered, code


SIZES = st.one_of(st.integers(0, 200), st.sampled_from(
    [125, 126, 127, 128, 16_380, 16_383, 16_384, READ_CHUNK - 10, READ_CHUNK + 10]))
PACKETS = st.lists(st.one_of(
    st.tuples(st.binary(min_size=1, max_size=80), SIZES, st.integers(0, 1),
              st.integers(1, 65_535), st.sampled_from([0, 0x01, 0x08])),
    st.just(PINGRESP)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(packets=PACKETS, cuts=st.lists(st.integers(0, 400_000), max_size=8))
def test_the_same_stream_delivers_the_same_messages_as_paho_alone(
        packets: list[tuple[bytes, int, int, int, int] | bytes], cuts: list[int]) -> None:
    stream, expected = b"", []
    for index, packet in enumerate(packets):
        if isinstance(packet, bytes):
            stream += packet
            continue
        topic, size, qos, mid, flags = packet
        payload = index.to_bytes(2, "big") * (size // 2) + b"x" * (size % 2)
        stream += publish(topic, payload, qos, mid, flags)
        expected.append((topic, payload, mid if qos else 0, qos, bool(flags & 0x08)))
    cuts = [cut for cut in cuts if cut < len(stream)]

    ours, our_code = stream_through(stream, cuts, own_reads=True)
    theirs, their_code = stream_through(stream, cuts, own_reads=False)
    assert our_code == their_code == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert ours == theirs == expected


def test_a_malformed_publish_is_refused_as_paho_refuses_it() -> None:
    good = publish(b"a/b", b"1", 1, 7)
    # A topic length past the packet's end: paho's decoder calls it a protocol error.
    bad = bytes([0x32, 3]) + (200).to_bytes(2, "big") + b"t"
    for own_reads in (True, False):
        delivered, code = stream_through(good + bad + good, [], own_reads=own_reads)
        assert delivered == [(b"a/b", b"1", 7, 1, False)]
        assert code == MQTTErrorCode.MQTT_ERR_PROTOCOL


def test_reading_stops_when_the_inbox_fills_and_goes_on_from_there() -> None:
    delivered: list[Delivered] = []
    with client_on_socket(delivered, stop_after=3) as (client, broker):
        broker.send(b"".join(publish(b"t", bytes([n]), 1, n + 1) for n in range(7)))
        client.loop_read()  # paho reads the first and fills the buffer with the rest
        assert client.read_publishes(100) == 2  # the inbox was full at the third
        assert client.read_publishes(100) == 3
        assert client.read_publishes(100) == 1
        assert client.read_publishes(100) == 0 and not client.buffered
    assert [payload for _, payload, _, _, _ in delivered] == [bytes([n]) for n in range(7)]


def test_qos_2_and_other_packets_are_left_to_paho() -> None:
    delivered: list[Delivered] = []
    with client_on_socket(delivered) as (client, broker):
        broker.send(publish(b"t", b"0", 1, 1) + publish(b"t", b"2", 2, 2) + PINGRESP)
        client.loop_read()  # paho reads the first and fills the buffer with the rest
        assert client.read_publishes(100) == 0 and client.buffered  # QoS 2: paho's
        assert delivered == [(b"t", b"0", 1, 1, False)]


def test_nothing_read_before_the_connection_closed_is_delivered_after_it() -> None:
    # paho closes the socket on a lost keepalive or a failed write, while a read of the
    # buffer may still be scheduled: what is left belongs to the closed connection (the
    # broker redelivers it on the next), and no generation of the next may carry it.
    delivered: list[Delivered] = []
    with client_on_socket(delivered) as (client, broker):
        broker.send(b"".join(publish(b"t", bytes([n]), 1, n + 1) for n in range(50)))
        client.loop_read()
        assert client.read_publishes(10) == 10 and client.buffered
        client._sock_close()
        assert not client.buffered
        assert client.read_publishes(100) == 0
    assert len(delivered) == 11  # paho's first, then ten
