"""The MQTT side of the service: paho-mqtt's protocol, driven by the asyncio event loop.

paho does the protocol (CONNECT with credentials and TLS, SUBSCRIBE, keepalive, packet
parsing, `manual_ack`, which durable acknowledgement needs); this module does its I/O.
Profiled under a backlog, paho's own network thread spent more time on I/O than on MQTT:
a `select()` per packet, three `recv()` calls per packet (one byte, then the length byte
by byte, then the body), one `send()` per PUBACK plus a socket-pair write to wake its
thread, and two threads passing the GIL back and forth. So:

- paho runs in the event loop's thread through its external-loop API (`loop_read`,
  `loop_write`, `loop_misc` and the socket callbacks, wired by
  `siaga_core.mqttloop.LoopDriver`): no second thread, no hand-off.
- Reads are buffered (`_Client._sock_recv`): one `recv()` of 64 KiB serves hundreds of
  messages.
- The PUBACKs of a batch go out as one packet write (`Subscriber.ack`).
- The inbox is bounded: past `INBOX_MAX` messages or `INBOX_MAX_BYTES` of payload the
  socket is no longer read until the pipeline has taken half of it. TCP flow control and
  the broker's in-flight window then hold the rest, so a burst of large batched messages
  cannot fill memory. While reading is paused the service still pings the broker, so a
  long pause (InfluxDB and the spool both unavailable) does not cost the connection.

Why paho and not aiomqtt: aiomqtt wraps the same paho client and adds a future and a
queue hop per message (a bare aiomqtt subscriber took about 15,000 QoS 1 messages/s here,
a bare paho one about 22,000), and it does not expose `manual_ack`.

`_Client` overrides private methods of paho 2.x (`_sock_recv`, `_handle_publish`,
`_handle_on_message`) and queues packets with another (`_packet_queue`); pyproject pins
paho below 2.3, and tests/integration/test_subscriber.py exercises them against a real
broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ingest.inbox import INBOX_MAX, INBOX_MAX_BYTES, Inbox, Message
from ingest.settings import MqttSettings
from siaga_core.mqttloop import MISC_EVERY_S, LoopDriver

log = logging.getLogger(__name__)

READ_CHUNK = 65536  # bytes per recv(): hundreds of small messages
READ_BURST = 2000  # packets per reader wake-up, so timers and the HTTP API get their turn
PUBACK = 0x40
_PUBLISH = 0x30  # the packet type's high nibble
_DUP = 0x08  # a PUBLISH's flag: the broker sent this message before (MQTT 3.1.1 3.3.1.1)
PINGREQ_PACKET = b"\xc0\x00"
# How long after a reconnect a message the lost connection delivered unacknowledged is
# looked for among the new one's DUP messages: the broker resends its session's at once, but
# a full inbox may pause reading for minutes while a slow InfluxDB takes the backlog.
REPLAY_WINDOW_NS = 600 * 10**9
REPLAYS_MAX = 100_000  # distinct payloads kept for it; an inbox and a window hold 40,000
_UNTIL_CONNECTED = 2**63 - 1
# A PUBACK of MQTT 3.1.1: fixed header 0x40, remaining length 2, then the packet id.
_PUBACK_BASE = (PUBACK << 24) | (2 << 16)


# What the client hands over per PUBLISH: topic (raw bytes), payload, packet id, QoS, DUP; it
# answers whether reading must stop (the inbox is full).
Deliver = Callable[[bytes, bytes, int, int, bool], bool]


class _Client(mqtt.Client):
    """paho's client with buffered reads and a direct hand-off of each PUBLISH."""

    def __init__(self, deliver: Deliver, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deliver = deliver
        self._chunk = b""
        self._chunk_pos = 0
        self.exhausted = False  # the socket had nothing more to give on the last read

    def _sock_close(self) -> None:
        # Unread bytes belong to the connection being closed (paho closes it on a reconnect,
        # a lost keepalive, a failed write, a DISCONNECT): none is delivered after it, with
        # the next connection's generation.
        self._chunk, self._chunk_pos = b"", 0
        super()._sock_close()

    @property
    def buffered(self) -> bool:
        return self._chunk_pos < len(self._chunk)

    def _sock_recv(self, bufsize: int) -> bytes:
        chunk, pos = self._chunk, self._chunk_pos
        if pos >= len(chunk):
            try:
                chunk = super()._sock_recv(READ_CHUNK)
            except BlockingIOError:
                self.exhausted = True
                raise
            if not chunk:
                return chunk  # the broker closed the connection
            self._chunk, pos = chunk, 0
        end = min(pos + bufsize, len(chunk))
        self._chunk_pos = end
        return chunk[pos:end]

    def read_publishes(self, limit: int) -> int:
        """Deliver up to `limit` whole QoS 0/1 PUBLISH packets from the head of the read
        buffer, without paho's per-packet reading; how many.

        paho reads a packet as a state machine (the command byte, the length byte by byte,
        then the body, through a dict of its state): under a backlog of single readings, a
        quarter of the service's time. This reads what `_handle_publish` reads, straight
        from the buffer, and stops at anything else: another packet type, QoS 2, a packet
        not yet whole, a malformed one, or a full inbox. paho then reads what follows from
        the same buffer, as it always did; it is never inside a packet when this runs.
        """
        if self._sock is None or self._in_packet["command"] or self._protocol != mqtt.MQTTv311:
            return 0
        chunk, pos = self._chunk, self._chunk_pos
        size, deliver, count = len(chunk), self._deliver, 0
        while count < limit and pos < size:
            header = chunk[pos]
            if header & 0xF0 != _PUBLISH or header & 0x06 > 0x02:
                break
            at = pos + 1
            length = chunk[at] if at < size else 0x80
            if length < 0x80:  # one byte: a packet under 128 bytes, as single readings are
                at += 1
            else:
                at, length = _remaining_length(chunk, at)
            end = at + length
            if at < 0 or end > size:
                break  # incomplete here (paho reads on), or malformed (paho says so)
            topic_end = at + 2 + int.from_bytes(chunk[at:at + 2], "big")
            qos = (header >> 1) & 1
            body = topic_end + 2 * qos
            if body > end:
                break
            pos = self._chunk_pos = end
            count += 1
            if deliver(chunk[at + 2:topic_end], chunk[body:end],
                       int.from_bytes(chunk[topic_end:body], "big"), qos, bool(header & _DUP)):
                break
        if count:  # what paho notes after each packet (its keepalive reads it)
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
        return count

    def _handle_publish(self) -> MQTTErrorCode:
        # paho builds an MQTTMessage, an MQTTMessageInfo and a debug log line for each
        # PUBLISH: a fifth of the service's time under load. QoS 0 and 1 of MQTT 3.1.1
        # (all the service subscribes with) are read here; anything else goes to paho.
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if qos > 1 or self._protocol != mqtt.MQTTv311:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        end = 2 + int.from_bytes(packet[:2], "big")
        mid = 0
        if qos:
            mid = int.from_bytes(packet[end:end + 2], "big")
        body = end + 2 * qos
        if body > len(packet):
            return MQTTErrorCode.MQTT_ERR_PROTOCOL  # what paho's decoder would say
        self._deliver(bytes(packet[2:end]), bytes(packet[body:]), mid, qos, bool(header & _DUP))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho's own path (see _handle_publish); it would look the topic up among
        # per-filter callbacks first, and we have none.
        self._deliver(message._topic, cast(bytes, message.payload), message.mid, message.qos,
                      bool(message.dup))

    def queue_packet(self, command: int, packet: bytes) -> None:
        """Queue raw packet bytes behind paho's own; the writer callback sends them."""
        self._packet_queue(command, packet, 0, 0)


def _tls_pending(sock: object) -> bool:
    """Whether TLS holds decrypted bytes not yet read (a recv returns one record at most)."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _remaining_length(chunk: bytes, at: int) -> tuple[int, int]:
    """MQTT's remaining length (1 to 4 bytes from `at`): where the packet's body starts,
    and its length; a start of -1 when the bytes are not all here or are not a length."""
    length = shift = 0
    for index in range(at, min(at + 4, len(chunk))):
        byte = chunk[index]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return index + 1, length
        shift += 7
    return -1, 0


class Subscriber:
    """A persistent-session subscriber whose messages are acknowledged by the caller."""

    def __init__(self, settings: MqttSettings, topics: list[str], clock_ns: Any,
                 on_connection: Callable[[bool], None] | None = None, *,
                 inbox_max: int = INBOX_MAX, inbox_max_bytes: int = INBOX_MAX_BYTES) -> None:
        self._on_connection = on_connection  # called in the event loop: up (True) or down
        self._settings = settings
        self._topics = topics
        self._clock_ns = clock_ns
        self._inbox = Inbox(inbox_max, inbox_max_bytes)
        self._generation = 0
        # QoS 1 messages of this connection not acknowledged yet, in receive order (acks go
        # in that order). When the connection is lost the broker sends them again, marked
        # DUP; one without `ts` is stamped with its time of receipt, so its copy must get
        # the first copy's time, or it is stored as a second point. `_replays` keeps those
        # times by topic and payload (in order: a device may send one payload twice) for a
        # while after a reconnect; only a DUP message takes one.
        self._unacked: deque[Message] = deque()
        self._replays: dict[tuple[str, bytes], deque[int]] = {}
        self._replays_until_ns = 0
        self._closing = False
        self._stack = AsyncExitStack()
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()  # set once the broker confirmed our subscriptions
        self.connects = 0
        self.pauses = 0  # times the inbox filled and reading paused
        self._client = self._make_client()
        # Paused while the inbox is full: the socket is left unread.
        self._driver = LoopDriver(self._client, self._on_readable)

    def _make_client(self) -> _Client:
        s = self._settings
        client = _Client(
            self._on_publish_message,
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=False,  # persistent session: the broker queues while we are away
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        s.address().log_in(client)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        return client

    async def __aenter__(self) -> Subscriber:
        self._driver.attach()
        s = self._settings
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s)  # records only
        group = await self._stack.enter_async_context(asyncio.TaskGroup())
        # The first connection is retried like any other, so the service starts (and
        # acknowledges nothing) even while the broker is down.
        self._connection_task = group.create_task(self._keep_connected())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        if self._client.is_connected():
            await self._driver.disconnect()
        self._connection_task.cancel()
        await self._stack.aclose()
        sock = self._driver.release()
        if sock is not None:  # still connecting: no session to say DISCONNECT to
            sock.close()

    # --- connection -------------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        s = self._settings
        delay = float(s.reconnect_min_s)
        while not self._closing:
            connects = self.connects
            try:
                await self._driver.reconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning("MQTT connection to %s:%s failed: %s; retrying in %.0f s",
                            s.host, s.port, exc, delay)
            else:
                await self._while_connected()
            if self._closing:
                return
            if self.connects > connects:
                delay = float(s.reconnect_min_s)  # a session was established: start over
            await asyncio.sleep(delay)
            delay = min(delay * 2, float(s.reconnect_max_s))

    async def _while_connected(self) -> None:
        """paho's keepalive bookkeeping, until the socket closes."""
        # The socket callbacks hop from paho's connecting thread before this task resumes.
        driver = self._driver
        if self._client.socket() is None:
            return  # closed again already
        pinged = 0.0
        keepalive = self._settings.keepalive_s
        loop = asyncio.get_running_loop()
        while not driver.down.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(driver.down.wait(), MISC_EVERY_S)
            if driver.down.is_set():
                return
            if not driver.paused:
                self._client.loop_misc()
            elif loop.time() - pinged >= keepalive / 2:
                # Reading is paused, so PINGRESPs wait unread and paho would take the
                # silence for a dead broker. The broker only needs to hear from us.
                self._client.queue_packet(0xC0, PINGREQ_PACKET)
                pinged = loop.time()

    # --- paho callbacks (event loop thread) ---------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connection to %s:%s refused: %s",
                        self._settings.host, self._settings.port, reason)
            return
        self._generation += 1
        self.connects += 1
        if self._replays:
            # The broker resends what it kept at once; without the session it resends none.
            self._replays_until_ns = (self._clock_ns() + REPLAY_WINDOW_NS
                                      if flags.session_present else 0)
        # Subscribe on every connect: a broker that lost its state lost our subscriptions.
        qos = int(self._settings.qos)
        client.subscribe([(topic, qos) for topic in self._topics])
        log.info("MQTT connected to %s:%s (session present: %s)", self._settings.host,
                 self._settings.port, flags.session_present)
        self.connected.set()
        if self._on_connection is not None:
            self._on_connection(True)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        failed = [reason for reason in reasons if reason.is_failure]
        if failed:
            log.error("MQTT subscription refused: %s", failed)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        # Packet ids belong to the connection: messages it delivered can no longer be
        # acknowledged (the broker redelivers them on the next one).
        self._generation += 1
        self._remember_replays()
        self.connected.clear()
        self.subscribed.clear()
        if self._on_connection is not None:
            self._on_connection(False)
        if reason.is_failure and not self._closing:
            log.warning("MQTT connection lost (%s); reconnecting", reason)

    def _remember_replays(self) -> None:
        unacked = self._unacked
        if not unacked:
            return
        now = self._clock_ns()
        if now >= self._replays_until_ns:
            self._replays.clear()
        replays = self._replays
        if len(replays) > REPLAYS_MAX:  # a broker that kept none of them, again and again
            replays.clear()
        for message in unacked:
            replays.setdefault((message.topic, message.payload), deque()).append(
                message.received_ns)
        unacked.clear()
        self._replays_until_ns = _UNTIL_CONNECTED  # the window starts at the next connect

    def _received_ns(self, topic: str, payload: bytes) -> int:
        """When this message came first: now, or, for a copy of one a lost connection
        delivered and nobody acknowledged, that one's time (so it is the same point)."""
        now: int = self._clock_ns()
        if now >= self._replays_until_ns:
            self._replays.clear()  # what has not come again by now was not redelivered
            return now
        key = (topic, payload)
        times = self._replays.get(key)
        if times is None:
            return now
        first = times.popleft()
        if not times:
            del self._replays[key]
        return first

    def _on_publish_message(self, raw_topic: bytes, payload: bytes, mid: int, qos: int,
                            dup: bool) -> bool:
        try:
            topic = raw_topic.decode()
        except UnicodeDecodeError:  # Mosquitto refuses these; if one came, dead-letter it
            topic = raw_topic.decode("utf-8", "backslashreplace")
        inbox = self._inbox
        received_ns = (self._received_ns(topic, payload) if dup and self._replays
                       else self._clock_ns())
        message = Message(topic, payload, mid, qos, self._generation, received_ns)
        inbox.put(message)
        if qos:
            self._unacked.append(message)
        if inbox.full:
            self._pause()
            return True
        return False

    def _on_readable(self) -> None:
        client, driver = self._client, self._driver
        client.exhausted = False
        budget = READ_BURST  # packets
        while True:
            budget -= client.read_publishes(budget)  # the buffer's whole PUBLISHes
            if driver.paused:
                break
            if budget <= 0:
                # Bytes may wait in our buffer (or in TLS's) where epoll cannot see them.
                if client.buffered or _tls_pending(client.socket()):
                    driver.loop.call_soon(self._on_readable)
                break
            # Anything else, a packet split across reads, or an empty buffer: paho.
            if (client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or client.exhausted
                    or client.socket() is None or driver.paused):
                break
            budget -= 1
        self._inbox.wake()

    def _pause(self) -> None:
        if not self._driver.paused:
            self._driver.pause_reading()
            self.pauses += 1

    # --- the pipeline's side --------------------------------------------------------------

    async def wait(self, seconds: float) -> None:
        """Wait until messages are waiting, or for `seconds`."""
        await self._inbox.wait(seconds)

    def take(self, limit: int) -> list[Message]:
        """Take up to `limit` waiting messages, oldest first."""
        inbox = self._inbox
        taken = inbox.take(limit)
        if self._driver.paused and inbox.half_empty:
            self._driver.resume_reading()
        return taken

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge messages in receive order, in one write; how many were acknowledged.

        A message from an earlier connection is not acknowledged: its packet id belongs to
        that connection, and the broker redelivers it on the new one.
        """
        generation = self._generation
        mids = [message.mid for message in messages
                if message.qos and message.generation == generation]
        unacked = self._unacked
        for _ in range(min(len(mids), len(unacked))):  # the oldest, as acks go in order
            unacked.popleft()
        if mids:
            packet = struct.pack(f">{len(mids)}I", *[_PUBACK_BASE | mid for mid in mids])
            self._client.queue_packet(PUBACK, packet)
        return len(mids)
