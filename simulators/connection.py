"""MQTT connections of the simulators: a bounded in-flight window and counted broker acks.

    DeliveryError (siaga_core.errors)
    └── BrokerUnavailable   the broker refused or never answered the connection
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from siaga_core.errors import DeliveryError
from siaga_core.mqttloop import MISC_EVERY_S, BrokerAddress, LoopDriver

# paho numbers messages 1..65535 and past 65,535 unacknowledged QoS 1 publishes it refuses
# or silently loses the rest: the window must stay below that.
MAX_WINDOW = 65_000
CONNECT_TIMEOUT_S = 10.0  # a local or LAN broker answers CONNECT in milliseconds
KEEPALIVE_S = 30  # notice a dead broker within ~45 s (paho pings at 1.5x keepalive)
RECONNECT_DELAY_S = (1.0, 30.0)  # first and longest wait between reconnection attempts
CLOSE_DRAIN_S = 10.0  # on close, how long to wait for the broker's last PUBACKs
ONLINE, OFFLINE = b"online", b"offline"  # SPEC section 1: the status payloads

Tag = Hashable  # what a message is counted under when acknowledged, e.g. (kind, fault)


class BrokerUnavailable(DeliveryError):
    """The MQTT broker could not be reached or refused the connection."""


@dataclass(frozen=True, slots=True)
class Acks:
    """What the broker acknowledged on one connection: messages and readings by tag, and
    the status messages apart."""

    messages: dict[Tag, int]
    readings: dict[Tag, int]
    rejected: int  # refused by the broker (MQTT 5 only), or lost offline at QoS 0
    status_messages: int


@dataclass(slots=True)
class _Outgoing:
    """What one published message carried, to credit when its PUBACK arrives."""

    tag: Tag | None  # None for a status message
    readings: int


class Connection:
    """One paho client driven by the asyncio loop, entered as an async context manager.

    paho's own network thread would contend with the publishing coroutine for the GIL and
    read PUBACKs only between bursts of writes; here the event loop calls paho when its
    socket is readable or writable, so reading, writing and acknowledging interleave.

    At most `window` messages are unacknowledged at a time: `publish` is only called when
    `room()` is positive, and `wait_for_room` / `drain` await PUBACKs counted by
    `on_publish`, so "acknowledged" means the broker has the message.

    With a `status_topic` the connection is one device's own: its last will is a retained
    `offline` there, and it publishes a retained `online` at each (re)connection and a
    retained `offline` when closed cleanly (the broker sends the will only on a drop).
    """

    def __init__(self, address: BrokerAddress, client_id: str, *, window: int, qos: int = 1,
                 status_topic: str | None = None) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be within 1..{MAX_WINDOW}, got {window}")
        self.client_id = client_id
        self._address = address
        self._window = window
        self._qos = qos
        self._status_topic = status_topic
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._outgoing: dict[int, _Outgoing] = {}
        self._early_acks: dict[int, bool] = {}  # PUBACKs that beat publish() back: mid -> failed
        self._waiter: tuple[asyncio.Event, int] | None = None
        self._driver = LoopDriver(self._client, self._read)
        self._connected: asyncio.Future[None] | None = None
        self._upkeep: asyncio.Task[None] | None = None
        self._open = False
        self.published = 0  # messages, status messages included
        self.acknowledged = 0  # messages, status messages included
        self._rejected = 0
        self._acked_messages: Counter[Tag] = Counter()
        self._acked_readings: Counter[Tag] = Counter()
        self._acked_statuses = 0

    async def __aenter__(self) -> Connection:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Connects and waits for the CONNACK; raises `BrokerUnavailable` if refused."""
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._driver.attach()
        self._configure()
        address = self._address
        self._client.connect_async(address.host, address.port, KEEPALIVE_S)  # records only
        try:
            await self._driver.reconnect()
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach {address.host}:{address.port}: {exc}") from exc
        self._open = True
        # Owned by this connection like paho's own network thread: cancelled in close().
        self._upkeep = loop.create_task(self._keep_up(), name=f"mqtt {self.client_id}")
        try:
            await asyncio.wait_for(self._connected, CONNECT_TIMEOUT_S)
        except BaseException:
            await self.close(drain_s=0)
            raise

    async def close(self, drain_s: float = CLOSE_DRAIN_S) -> None:
        """Says `offline` (a device's own connection), waits for the last PUBACKs, disconnects."""
        if not self._open:
            return
        self._open = False
        if self._status_topic is not None and drain_s > 0 and self._client.is_connected():
            self._publish_status(OFFLINE)
        if drain_s > 0:
            await self.drain(drain_s)
        await self._stop_upkeep()
        await self._driver.disconnect()

    async def abort(self) -> None:
        """Drops the TCP connection without DISCONNECT, as a device losing power would.

        The broker then publishes the last will; nothing reconnects.
        """
        if not self._open:
            return
        self._open = False
        await self._stop_upkeep()
        sock = self._driver.release()
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone: the broker noticed anyway
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    async def _stop_upkeep(self) -> None:
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
            self._upkeep = None

    def _configure(self) -> None:
        client, address = self._client, self._address
        # Unlimited inside paho: our window bounds what is unacknowledged. paho's own limit
        # (default 20) would queue messages inside paho, and with any limit it rescans every
        # unacknowledged message on each PUBACK, which caps a 10,000 window at ~2,000 msg/s.
        client.max_inflight_messages_set(0)
        address.log_in(client)
        if self._status_topic is not None:
            client.will_set(self._status_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish

    async def _keep_up(self) -> None:
        """paho's housekeeping once a second; after a lost connection, reconnects with backoff."""
        delay = RECONNECT_DELAY_S[0]
        while True:
            await asyncio.sleep(MISC_EVERY_S)
            if self._client.loop_misc() != mqtt.MQTT_ERR_NO_CONN:
                continue
            try:
                # paho resends the unacknowledged QoS 1 messages once connected again.
                await self._driver.reconnect()
                delay = RECONNECT_DELAY_S[0]
            except OSError:
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_DELAY_S[1])

    # --- the event loop reads paho's socket (siaga_core.mqttloop) ---------------------------

    def _read(self) -> None:
        client = self._client
        client.loop_read()
        # TLS may hold decoded bytes that select() cannot see.
        sock = client.socket()
        while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
            client.loop_read()

    # --- publishing and counting -------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.published - self.acknowledged

    def room(self) -> int:
        """How many messages may be published before the window is full."""
        return self._window - self.in_flight

    def acks(self) -> Acks:
        """What the broker acknowledged so far."""
        return Acks(dict(self._acked_messages), dict(self._acked_readings), self._rejected,
                    self._acked_statuses)

    def publish(self, topic: str, payload: bytes, tag: Tag, readings: int,
                retain: bool = False) -> None:
        """Hands one message to paho; call only while `room()` is positive."""
        self._send(topic, payload, _Outgoing(tag, readings), retain)

    def publish_status(self, topic: str, status: bytes) -> None:
        """A retained status message, counted apart from readings; only while there is room."""
        self._send(topic, status, _Outgoing(None, 0), retain=True)

    def _publish_status(self, status: bytes) -> None:
        assert self._status_topic is not None
        self.publish_status(self._status_topic, status)

    def _send(self, topic: str, payload: bytes, outgoing: _Outgoing, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=self._qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho keeps QoS 1 messages and sends them after reconnecting.
            raise DeliveryError(f"paho refused a publish: {mqtt.error_string(info.rc)}")
        lost = self._qos == 0 and info.rc == mqtt.MQTT_ERR_NO_CONN  # paho drops these at once
        self.published += 1
        failed = True if lost else self._early_acks.pop(info.mid, None)
        if failed is None:
            self._outgoing[info.mid] = outgoing
        else:
            self._credit(outgoing, failed)

    async def wait_for_room(self, timeout_s: float) -> bool:
        """Waits until half the window is free again; False if `timeout_s` passed first."""
        return await self._wait_until(self._window // 2, timeout_s)

    async def drain(self, timeout_s: float) -> bool:
        """Waits until every published message is acknowledged; False on timeout."""
        return await self._wait_until(0, timeout_s)

    async def _wait_until(self, in_flight: int, timeout_s: float) -> bool:
        if self.in_flight <= in_flight:
            return True
        event = asyncio.Event()
        self._waiter = (event, in_flight)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            self._waiter = None
        return self.in_flight <= in_flight

    def _credit(self, outgoing: _Outgoing, failed: bool) -> None:
        """Counts one acknowledged message."""
        self.acknowledged += 1
        if failed:
            self._rejected += 1
        elif outgoing.tag is None:
            self._acked_statuses += 1
        else:
            self._acked_messages[outgoing.tag] += 1
            self._acked_readings[outgoing.tag] += outgoing.readings
        if self._waiter is not None and self.in_flight <= self._waiter[1]:
            self._waiter[0].set()
            self._waiter = None

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        failed = reason_code.is_failure
        outgoing = self._outgoing.pop(mid, None)
        if outgoing is None:
            self._early_acks[mid] = failed
        else:
            self._credit(outgoing, failed)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if not reason_code.is_failure and self._status_topic is not None:
            # At every connection: after a drop the broker has published the will.
            self._publish_status(ONLINE)
        connected = self._connected
        if connected is None or connected.done():
            return  # a reconnection: nobody is waiting for it
        if reason_code.is_failure:
            address = self._address
            connected.set_exception(
                BrokerUnavailable(f"{address.host}:{address.port} refused: {reason_code}"))
        else:
            connected.set_result(None)
