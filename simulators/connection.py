"""A shared MQTT connection that bounds unacknowledged publishes and counts broker acks."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.errors import BrokerUnavailable, SimulatorError

# paho numbers messages 1..65535 and past 65,535 unacknowledged QoS 1 publishes it refuses
# or silently loses the rest: the window must stay below that.
MAX_WINDOW = 65_000
CONNECT_TIMEOUT_S = 10.0  # a local or LAN broker answers CONNECT in milliseconds
KEEPALIVE_S = 30  # notice a dead broker within ~45 s (paho pings at 1.5x keepalive)
RECONNECT_DELAY_S = (1, 30)  # paho's capped backoff between reconnection attempts


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and as whom to connect."""

    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # kept out of logs
    tls: bool = False


@dataclass(slots=True)
class _Outgoing:
    """What one published message carried, to credit when its PUBACK arrives."""

    kind: str | None  # None for a status message
    readings: int


class SharedConnection:
    """One paho client for the whole fleet, entered as an async context manager.

    At most `window` messages are unacknowledged at a time: `publish` is only called when
    `room()` is positive, and `wait_for_room` / `drain` await PUBACKs counted in paho's
    thread by `on_publish`, so "acknowledged" means the broker has the message.
    """

    def __init__(self, address: BrokerAddress, client_id: str, window: int, qos: int) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be within 1..{MAX_WINDOW}, got {window}")
        self._address = address
        self._window = window
        self._qos = qos
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        # The callbacks run in paho's thread; this lock guards everything they touch.
        self._lock = threading.Lock()
        self._outgoing: dict[int, _Outgoing] = {}
        self._early_acks: dict[int, bool] = {}  # PUBACKs that beat publish() back: mid -> failed
        self._waiter: tuple[asyncio.Event, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None
        self.published = 0  # messages
        self.acknowledged = 0  # messages
        self.rejected = 0  # refused by the broker (MQTT 5 only), or lost offline at QoS 0
        self._acknowledged_readings: Counter[str] = Counter()  # by kind

    async def __aenter__(self) -> SharedConnection:
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        self._configure()
        address = self._address
        try:
            await asyncio.to_thread(self._client.connect, address.host, address.port, KEEPALIVE_S)
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach {address.host}:{address.port}: {exc}") from exc
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._connected, CONNECT_TIMEOUT_S)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def _configure(self) -> None:
        client, address = self._client, self._address
        # Unlimited inside paho: our window bounds what is unacknowledged. paho's own limit
        # (default 20) would queue messages inside paho, and with any limit it rescans every
        # unacknowledged message on each PUBACK, which caps a 10,000 window at ~2,000 msg/s.
        client.max_inflight_messages_set(0)
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        if address.username is not None:
            client.username_pw_set(address.username, address.password)
        if address.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish

    async def _close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def acknowledged_by_kind(self) -> dict[str, int]:
        """Readings acknowledged so far, by kind (a copy, safe from paho's thread)."""
        with self._lock:
            return dict(self._acknowledged_readings)

    @property
    def in_flight(self) -> int:
        return self.published - self.acknowledged

    def room(self) -> int:
        """How many messages may be published before the window is full."""
        return self._window - self.in_flight

    def publish(
        self, topic: str, payload: bytes, kind: str | None, readings: int, retain: bool = False
    ) -> None:
        """Hands one message to paho; call only while `room()` is positive."""
        info = self._client.publish(topic, payload, qos=self._qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho keeps QoS 1 messages and sends them after reconnecting.
            raise SimulatorError(f"paho refused a publish: {mqtt.error_string(info.rc)}")
        outgoing = _Outgoing(kind, readings)
        lost = self._qos == 0 and info.rc == mqtt.MQTT_ERR_NO_CONN  # paho drops these at once
        with self._lock:
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
        event = asyncio.Event()
        with self._lock:
            if self.in_flight <= in_flight:
                return True
            self._waiter = (event, in_flight)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiter = None
        return self.in_flight <= in_flight

    def _credit(self, outgoing: _Outgoing, failed: bool) -> None:
        """Counts one acknowledged message; called with the lock held."""
        self.acknowledged += 1
        if failed:
            self.rejected += 1
        elif outgoing.kind is not None:
            self._acknowledged_readings[outgoing.kind] += outgoing.readings
        if self._waiter is not None and self.in_flight <= self._waiter[1]:
            event = self._waiter[0]
            self._waiter = None
            assert self._loop is not None  # set in __aenter__, before any publish
            self._loop.call_soon_threadsafe(event.set)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        failed = reason_code.is_failure
        with self._lock:
            outgoing = self._outgoing.pop(mid, None)
            if outgoing is None:
                self._early_acks[mid] = failed
            else:
                self._credit(outgoing, failed)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        assert self._loop is not None and self._connected is not None
        self._loop.call_soon_threadsafe(self._settle_connect, str(reason_code),
                                        reason_code.is_failure)  # fmt: skip

    def _settle_connect(self, reason: str, failed: bool) -> None:
        """Resolves the first connection attempt; later reconnects need no one to wake."""
        assert self._connected is not None
        if self._connected.done():
            return
        if failed:
            address = self._address
            self._connected.set_exception(
                BrokerUnavailable(f"{address.host}:{address.port} refused: {reason}")
            )
        else:
            self._connected.set_result(None)
