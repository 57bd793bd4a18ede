"""LoopDriver against a real Mosquitto: a plain paho client, no network thread, driven by the loop.

The subscriber and the simulators' connections add their own readers on top; these tests
show the driver alone carries a connection: the connect in a worker thread, reads and
writes from the loop, a clean DISCONNECT, and a drop that the broker answers with the will.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from siaga.sandbox.mosquitto import ADMIN_USER, Mosquitto
from siaga_core.mqttloop import BrokerAddress, LoopDriver
from tests.integration.support import unique_name
from tests.polling import eventually

pytestmark = pytest.mark.integration


class _Received:
    """What one client's subscriptions delivered, and its CONNACK and SUBACK."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if not reason.is_failure:
            self.connected.set()

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                     properties: Any) -> None:
        self.subscribed.set()

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, bytes(message.payload)))


@asynccontextmanager
async def driven(broker: Mosquitto, *, will_topic: str | None = None
                 ) -> AsyncIterator[tuple[mqtt.Client, LoopDriver, _Received]]:
    """A connected paho client on a LoopDriver; disconnected cleanly on exit."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("loop"))
    received = _Received()
    client.on_connect = received.on_connect
    client.on_subscribe = received.on_subscribe
    client.on_message = received.on_message
    address = BrokerAddress("127.0.0.1", broker.port, ADMIN_USER, broker.users[ADMIN_USER])
    address.log_in(client)
    if will_topic is not None:
        client.will_set(will_topic, b"gone", qos=1)
    driver = LoopDriver(client, client.loop_read)
    driver.attach()
    client.connect_async(address.host, address.port, keepalive=30)
    await driver.reconnect()
    await asyncio.wait_for(received.connected.wait(), 10)
    try:
        yield client, driver, received
    finally:
        await driver.disconnect()


async def test_the_loop_alone_carries_a_connection_until_a_clean_disconnect(
        mosquitto: Mosquitto) -> None:
    topic = f"{unique_name('loop')}/echo"
    async with driven(mosquitto) as (client, driver, received):
        assert not driver.down.is_set()
        client.subscribe(topic, qos=1)
        await asyncio.wait_for(received.subscribed.wait(), 10)
        client.publish(topic, b"hello", qos=1)
        await eventually(lambda: received.messages, within=10, what="the message back")
    assert received.messages == [(topic, b"hello")]
    assert driver.down.is_set()
    assert client.socket() is None  # paho closed it after DISCONNECT left


async def test_a_released_socket_closed_without_disconnect_makes_the_broker_send_the_will(
        mosquitto: Mosquitto) -> None:
    will_topic = f"{unique_name('loop')}/will"
    async with driven(mosquitto) as (watcher, _, seen):
        watcher.subscribe(will_topic, qos=1)
        await asyncio.wait_for(seen.subscribed.wait(), 10)
        async with driven(mosquitto, will_topic=will_topic) as (_, driver, _):
            sock = driver.release()
            assert sock is not None and driver.down.is_set()
            sock.close()  # no DISCONNECT: the broker sees a dropped connection
            await eventually(lambda: seen.messages, within=10, what="the last will")
    assert seen.messages == [(will_topic, b"gone")]
