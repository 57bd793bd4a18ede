"""A lean AMQP 0-9-1 consumer: one connection, one channel, deliveries parsed from a buffer.

`amqp.reader: wire` (issue 18). aiormq reads each frame with three `readexactly` calls, a
lock and pamqp's general decoder, and runs one task per delivery; a single-reading message
costs three frames, so the reader, not the pipeline, bounds the AMQP input. Here the socket
is read in the event loop's large chunks (`asyncio.Protocol`), frames are cut from one
buffer, and the hot path (Basic.Deliver, its content header, its body) is read with
`struct` and handed to the consumer's callback synchronously, in delivery order. Every
other method frame, in and out, goes through pamqp (aiormq's own codec).

What it speaks: the handshake (PLAIN), one channel (number 1) with a prefetch, consumers,
`basic.ack(multiple)`, heartbeats, and the server's Basic.Cancel, Channel.Close and
Connection.Close, each of which ends the connection (`ended`): the subscriber starts a new
one, as it does when aiormq's channel closes. It publishes nothing and declares nothing
(`ingest.amqp` declares the partitions through aiormq before consuming here).

`FrameReader` is the parser alone, without I/O, so tests can feed it any split of bytes.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from base64 import b64decode
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from pamqp import commands as spec
from pamqp import frame as pframe
from pamqp.base import Frame
from pamqp.header import ProtocolHeader
from pamqp.heartbeat import Heartbeat

from siaga_core.errors import DeliveryError

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8  # AMQP 0-9-1 4.2.3
FRAME_END = 0xCE
CHANNEL = 1  # the one channel this connection opens
HEARTBEAT_S = 60  # what aiormq asks for too; the server may ask for less
GOODBYE_S = 5.0  # the server's reply to our Connection.Close; past it the socket just closes
# The longest the socket is left unread. RabbitMQ (its listener, Ranch: send_timeout 30 s,
# send_timeout_close) drops a connection it could not write to for 30 s; a longer pause
# would cost the connection and redeliver every unacknowledged message.
MAX_PAUSE_S = 20.0
MISSED_HEARTBEATS = 3  # silence for this many intervals means the peer is gone
DELIVER = spec.Basic.Deliver.index  # 0x003C003C: class 60, method 60
_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_INDEX = struct.Struct(">I")  # a method frame's class and method
_TAG = struct.Struct(">QB")  # Basic.Deliver: delivery tag, the octet of its redelivered bit
_BODY_SIZE = struct.Struct(">Q")  # a content header's body size, after class and weight
_ACK = struct.Struct(">BHIIQBB")  # a whole Basic.Ack frame: head, index, tag, multiple, end
_ACK_SIZE = 4 + 8 + 1
# How the shortstrs of a delivery are decoded. RabbitMQ passes a routing key on unchecked,
# and its MQTT plugin takes a topic that is not UTF-8: decoded strictly, such a key would
# end the connection, and then each next one, of every instance, that the quorum queue
# redelivers the message to. Escaped (a byte 0xff becomes `\xff`), it cannot pass for a
# device's topic, whose levels have no backslash: the decoder dead-letters it (bad topic)
# and the pipeline acknowledges it. The consumer tag, ours, is decoded alike.
SHORT_STR_ERRORS = "backslashreplace"

F = TypeVar("F", bound=Frame)  # the reply a call expects

# The consumer's callback: routing key, body, delivery tag, redelivered (the server gave
# the message out before, to this consumer or another). It runs inside the socket's read
# and must not block; deliveries come to it in the order the server sent them.
Deliver = Callable[[str, bytes, int, bool], None]


class WireError(DeliveryError):
    """The AMQP connection cannot go on: a frame we cannot read, or the server closed it."""


class FrameReader:
    """Cuts frames out of the bytes read so far and hands each to its handler.

    Deliveries go to the callback of their consumer tag, whole (every body frame joined);
    other method frames to `on_method`; heartbeats only prove the peer alive.
    """

    def __init__(self, on_method: Callable[[int, Frame], None]) -> None:
        self.consumers: dict[str, Deliver] = {}
        self._on_method = on_method
        self._buffer = bytearray()
        # The delivery whose content is being read: callback, routing key, tag, redelivered,
        # size, parts.
        self._deliver: Deliver | None = None
        self._key = ""
        self._tag = 0
        self._redelivered = False
        self._size = 0
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Read every whole frame in what came so far; keep the rest for the next read."""
        buffer = self._buffer
        buffer += data
        view = memoryview(buffer)
        try:
            pos = self._frames(view, len(buffer))
        finally:
            view.release()
        del buffer[:pos]

    def _frames(self, buf: memoryview, n: int) -> int:
        pos = 0
        while n - pos >= 8:
            kind, channel, size = _HEAD.unpack_from(buf, pos)
            end = pos + 7 + size
            if end >= n:
                break  # the frame end octet has not come yet
            if buf[end] != FRAME_END:
                raise WireError(f"AMQP frame without its end octet at byte {pos}")
            start = pos + 7
            if kind == FRAME_METHOD:
                index = _INDEX.unpack_from(buf, start)[0]
                if index == DELIVER:
                    self._delivery(buf, start + 4)
                else:
                    self._method(channel, index, bytes(buf[start + 4:end]))
            elif kind == FRAME_HEADER:
                self._header(_BODY_SIZE.unpack_from(buf, start + 4)[0])
            elif kind == FRAME_BODY:
                self._body(bytes(buf[start:end]))
            elif kind != FRAME_HEARTBEAT:
                raise WireError(f"AMQP frame of unknown type {kind}")
            pos = end + 1
        return pos

    def _delivery(self, buf: memoryview, at: int) -> None:
        # consumer-tag shortstr, delivery-tag longlong, redelivered bit, exchange shortstr,
        # routing-key shortstr (AMQP 0-9-1, basic.deliver).
        length = buf[at]
        tag = bytes(buf[at + 1:at + 1 + length]).decode("utf-8", SHORT_STR_ERRORS)
        at += 1 + length
        self._tag, bits = _TAG.unpack_from(buf, at)
        self._redelivered = bool(bits & 1)
        at += 9
        at += 1 + buf[at]  # the exchange
        length = buf[at]
        self._key = bytes(buf[at + 1:at + 1 + length]).decode("utf-8", SHORT_STR_ERRORS)
        deliver = self.consumers.get(tag)
        if deliver is None:
            raise WireError(f"AMQP delivery for unknown consumer {tag!r}")
        self._deliver = deliver

    def _header(self, size: int) -> None:
        if self._deliver is None:
            raise WireError("AMQP content header without a delivery")
        self._size = size
        if size == 0:
            self._done(b"")

    def _body(self, part: bytes) -> None:
        if self._deliver is None:
            raise WireError("AMQP content body without a delivery")
        if not self._parts and len(part) == self._size:
            self._done(part)  # the usual case: the whole body in one frame
            return
        self._parts.append(part)
        if sum(map(len, self._parts)) >= self._size:
            body, self._parts = b"".join(self._parts), []
            self._done(body)

    def _done(self, body: bytes) -> None:
        deliver, self._deliver = self._deliver, None
        assert deliver is not None  # checked by the caller
        deliver(self._key, body, self._tag, self._redelivered)

    def _method(self, channel: int, index: int, payload: bytes) -> None:
        try:
            method = spec.INDEX_MAPPING[index]()
            method.unmarshal(payload)
        except (KeyError, struct.error, ValueError) as exc:
            raise WireError(f"AMQP method frame 0x{index:08x} unreadable: {exc}") from exc
        self._on_method(channel, method)


def tls_context(parts: SplitResult) -> ssl.SSLContext:
    """The TLS context of an amqps:// URL, from the query options aiormq reads too
    (`cafile`, `capath`, `cadata` in base64, `certfile`/`keyfile`, `no_verify_ssl=1`), so
    the declaring connection and this one trust the same servers."""
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    cadata = query.get("cadata")
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=query.get("cafile"), capath=query.get("capath"),
        cadata=b64decode(cadata) if cadata else None)
    if query.get("certfile"):
        context.load_cert_chain(query["certfile"], query.get("keyfile"))
    if query.get("no_verify_ssl", "0") != "0":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def ack_frame(tag: int, *, multiple: bool, channel: int = CHANNEL) -> bytes:
    """Basic.Ack as it goes on the wire (sent once per batch, but cheap all the same)."""
    return _ACK.pack(FRAME_METHOD, channel, _ACK_SIZE, spec.Basic.Ack.index, tag,
                     1 if multiple else 0, FRAME_END)


class WireConnection(asyncio.Protocol):
    """One AMQP connection with one consuming channel; open it with `connect`."""

    def __init__(self, url: str, prefetch: int) -> None:
        parts = urlsplit(url)
        self._user = unquote(parts.username or "guest")
        self._password = unquote(parts.password or "guest")
        self._vhost = unquote(parts.path[1:]) or "/"
        self._prefetch = prefetch
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.ended: asyncio.Future[None] = loop.create_future()  # the connection is over
        self.error: str | None = None  # why, if not our own close
        self.on_cancel: Callable[[str], None] | None = None  # the server cancelled a consumer
        self._reader = FrameReader(self._on_method)
        self._transport: asyncio.Transport | None = None
        # The reply awaited; the first, Connection.Start, may come before anyone awaits it.
        self._reply: asyncio.Future[Frame] | None = loop.create_future()
        self._closed = False  # `ended` may be cancelled by those who wait on it
        self._over: asyncio.Future[None] = loop.create_future()  # ours alone: never cancelled
        self._calls = asyncio.Lock()
        self._heard = loop.time()
        self._paused = False  # not reading the socket: the consumer's inbox is full
        self._pause_ends: asyncio.TimerHandle | None = None
        self.goodbye_answered = False  # the server answered our Connection.Close
        self._leaving = False  # our goodbye is under way: its failure is no error
        self._heartbeat_s = 0
        self._beats: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, prefetch: int) -> WireConnection:
        """Connect, shake hands, open the channel with its prefetch; raise if any fails."""
        parts = urlsplit(url)
        secure = parts.scheme == "amqps"
        loop = asyncio.get_running_loop()
        # Loading CA files blocks: off the event loop, as aiormq does.
        context = await loop.run_in_executor(None, tls_context, parts) if secure else None
        connection = cls(url, prefetch)
        await loop.create_connection(lambda: connection, parts.hostname or "localhost",
                                     parts.port or (5671 if secure else 5672), ssl=context)
        try:
            await connection._handshake()
        except BaseException:
            connection.abort()
            raise
        return connection

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream socket
        self._transport = transport
        transport.write(ProtocolHeader().marshal())

    def data_received(self, data: bytes) -> None:
        if self._closed:
            # Nothing is read once the connection ends: a failed read left its frames in the
            # reader's buffer, those already handed over among them, to be handed over again.
            return
        self._heard = self._loop.time()
        try:
            self._reader.feed(data)
        except WireError as exc:
            self._drop(str(exc))  # a peer out of step: nothing more it sends can be read
        except Exception as exc:  # from the consumer's callback: end here, not in asyncio's log
            self._drop(f"handling a delivery failed: {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._end(f"connection lost: {exc}" if exc else "connection closed")

    # --- the consumer's side ----------------------------------------------------------------

    async def consume(self, queue: str, consumer_tag: str, deliver: Deliver) -> None:
        """Register `deliver` as the consumer `consumer_tag` of `queue` (manual acks)."""
        self._reader.consumers[consumer_tag] = deliver
        await self._call(spec.Basic.Consume(queue=queue, consumer_tag=consumer_tag),
                         spec.Basic.ConsumeOk)

    async def queue_exists(self, queue: str) -> None:
        """A passive Queue.Declare: returns if `queue` exists; if not, the server closes
        the channel (404), and so the connection ends (raises WireError)."""
        await self._call(spec.Queue.Declare(queue=queue, passive=True), spec.Queue.DeclareOk)

    def ack(self, tag: int) -> None:
        """Acknowledge every delivery up to `tag` (no reply comes)."""
        self._write(ack_frame(tag, multiple=True))

    def pause_reading(self) -> bool:
        """Leave the socket unread (the consumer has enough waiting): TCP flow control then
        holds the server's deliveries, however large, where RabbitMQ's prefetch counts
        messages only (it implements neither `prefetch_size` nor `channel.flow`). For
        MAX_PAUSE_S at most; then reading resumes and the prefetch is the bound. Whether it
        paused (not if closed or paused already)."""
        if self._transport is None or self._closed or self._paused:
            return False
        self._paused = True
        self._transport.pause_reading()
        self._pause_ends = self._loop.call_later(MAX_PAUSE_S, self.resume_reading)
        return True

    def resume_reading(self) -> None:
        if self._pause_ends is not None:
            self._pause_ends.cancel()
            self._pause_ends = None
        if self._paused:
            self._paused = False
            self._heard = self._loop.time()  # the server's heartbeats waited unread meanwhile
            if self._transport is not None:
                self._transport.resume_reading()

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def close(self, goodbye_s: float = GOODBYE_S) -> None:
        """Say goodbye (Connection.Close, and its reply within `goodbye_s`), then close the
        socket: gracefully once the server said goodbye too, at once if it did not."""
        if not self._closed:
            self._leaving = True
            # The reply comes behind what the server sent meanwhile: read it, or wait out
            # `goodbye_s` for a reply that sits unread (the consumer drops what comes now).
            self.resume_reading()
            try:
                await asyncio.wait_for(self._call(
                    spec.Connection.Close(reply_code=200, reply_text="closing", class_id=0,
                                          method_id=0),
                    spec.Connection.CloseOk, channel=0), goodbye_s)
            except (WireError, TimeoutError):
                pass  # no goodbye: a peer that may read nothing more, so nothing to wait for
            else:
                # The server has read all we wrote and closes its side: a graceful close.
                self.goodbye_answered = True
                self._end(None)
                if self._transport is not None:
                    self._transport.close()
                return
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once: what is still buffered is not sent (a graceful close
        would wait for it to drain, as long as a half-dead peer lives)."""
        self._drop(None)

    # --- inside -----------------------------------------------------------------------------

    async def _handshake(self) -> None:
        start = await self._expect(spec.Connection.Start)
        mechanisms = (start.mechanisms or "").split()
        if "PLAIN" not in mechanisms:
            raise WireError(f"the server offers no PLAIN login: {mechanisms}")
        tune = await self._call(spec.Connection.StartOk(
            client_properties={"product": "siaga", "capabilities": {
                "consumer_cancel_notify": True, "connection.blocked": True,
                # A refused login is then a Connection.Close that says why.
                "authentication_failure_close": True}},
            mechanism="PLAIN", response=f"\0{self._user}\0{self._password}"),
            spec.Connection.Tune, channel=0)
        # Heartbeats: the smaller of the server's and ours (the server's 0 means "as you like").
        self._heartbeat_s = min(tune.heartbeat or HEARTBEAT_S, HEARTBEAT_S)
        self._send(spec.Connection.TuneOk(channel_max=tune.channel_max or 2047,
                                          frame_max=tune.frame_max,
                                          heartbeat=self._heartbeat_s), channel=0)
        await self._call(spec.Connection.Open(virtual_host=self._vhost),
                         spec.Connection.OpenOk, channel=0)
        if self._heartbeat_s:
            self._beats = asyncio.get_running_loop().create_task(self._beat())
        await self._call(spec.Channel.Open(), spec.Channel.OpenOk)
        await self._call(spec.Basic.Qos(prefetch_count=self._prefetch), spec.Basic.QosOk)

    async def _beat(self) -> None:
        """Send a heartbeat every half interval; end the connection on the peer's silence."""
        interval = self._heartbeat_s / 2
        beat = pframe.marshal(Heartbeat(), 0)
        while not self._closed:
            await asyncio.sleep(interval)
            # Paused, the server's frames wait unread: its silence is ours, not its death.
            if (not self._paused
                    and self._loop.time() - self._heard > MISSED_HEARTBEATS * self._heartbeat_s):
                self._drop(f"no frame from the server in {MISSED_HEARTBEATS} heartbeats")
                return
            self._write(beat)

    async def _expect(self, reply: type[F]) -> F:
        async with self._calls:
            return await self._wait(reply)

    async def _call(self, method: Frame, reply: type[F], channel: int = CHANNEL) -> F:
        async with self._calls:
            self._reply = self._loop.create_future()
            self._send(method, channel)
            return await self._wait(reply)

    async def _wait(self, reply: type[F]) -> F:
        if self._reply is None:
            self._reply = self._loop.create_future()
        if self._closed:
            raise WireError(self.error or "connection closed")
        waiter = self._reply
        either: list[asyncio.Future[Any]] = [waiter, self._over]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # AMQP's synchronous methods are request and reply, in order: the reply to this
            # call still comes, and would be taken for the next call's. Out of step, the
            # connection cannot go on.
            self._reply = None
            self._drop(None if self._leaving else f"a call awaiting {reply.name} was "
                       "cancelled: its reply would answer the next call")
            raise
        self._reply = None
        if not waiter.done():
            waiter.cancel()
            raise WireError(self.error or "connection closed")
        got = waiter.result()
        if not isinstance(got, reply):
            raise WireError(f"expected {reply.name}, the server sent {got.name}")
        return got

    def _on_method(self, channel: int, method: Frame) -> None:
        if isinstance(method, spec.Basic.Cancel):
            if self.on_cancel is not None:
                self.on_cancel(method.consumer_tag or "")
        elif isinstance(method, spec.Channel.Close):
            self._send(spec.Channel.CloseOk(), CHANNEL)
            self._end(f"channel closed by the server: {method.reply_code} {method.reply_text}")
        elif isinstance(method, spec.Connection.Close):
            self._send(spec.Connection.CloseOk(), 0)
            self._end(f"connection closed by the server: {method.reply_code} "
                      f"{method.reply_text}")
            if self._transport is not None:
                self._transport.close()
        elif isinstance(method, spec.Connection.Blocked | spec.Connection.Unblocked):
            pass  # we publish nothing, so a blocked connection changes nothing for us
        elif self._reply is not None and not self._reply.done():
            self._reply.set_result(method)
        else:
            self._end(f"unexpected {method.name} on channel {channel}")

    def _send(self, method: Frame, channel: int) -> None:
        self._write(pframe.marshal(method, channel))

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._closed:
            raise WireError(self.error or "connection closed")
        self._transport.write(data)

    def _drop(self, error: str | None) -> None:
        self._end(error)
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows, without flushing the buffer

    def _end(self, error: str | None) -> None:
        if self._closed:
            return
        self._closed = True
        self.error = error
        self._over.set_result(None)
        if not self.ended.done():
            self.ended.set_result(None)
        if self._beats is not None:
            self._beats.cancel()
        if self._pause_ends is not None:
            self._pause_ends.cancel()
