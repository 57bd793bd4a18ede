"""The shipped broker configuration refuses strangers and keeps each device to its own topics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from siaga.broker.auth import SERVICE_USER
from siaga.sandbox.mosquitto import ADMIN_USER, Mosquitto
from tests.integration.support import unique_name
from tests.polling import wait_until

PREFIX = "siaga"  # this broker's ACL is written for the real default prefix
DEVICE_A, DEVICE_B = "pa-test-a", "pa-test-b"
# "Nothing arrived" is shown without waiting a while: the broker sends each connection its
# packets in order, so once a later packet is in (a later message, or the answer to a later
# request on the same connection), anything sent before it would be in too.


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("secure-broker"), topic_prefix=PREFIX,
                   devices=[DEVICE_A, DEVICE_B]) as server:
        yield server


class Client:
    """A paho client that records its CONNACK, SUBACKs, PUBACKs and messages."""

    def __init__(self, broker: Mosquitto, user: str | None, password: str | None = None,
                 protocol: int = mqtt.MQTTv311) -> None:
        self.connack: Any = None
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: list[Any] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("sec-"),
                                  protocol=protocol)
        if user is not None:
            self.client.username_pw_set(user, broker.users.get(user) if password is None
                                        else password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = lambda *args: self.pubacks.append(args[3])
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, 10, "a CONNACK")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connack = reason

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def subscribe(self, *topics: str) -> None:
        self._subscribed.clear()
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self._subscribed.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def round_trip(self) -> None:
        """A request answered on this connection: whatever the broker sent this client
        before the answer has been received once this returns."""
        self.subscribe(f"{PREFIX}/round-trip/{unique_name('r')}")

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def client(broker: Mosquitto, user: str | None, password: str | None = None,
           protocol: int = mqtt.MQTTv311) -> Iterator[Client]:
    connected = Client(broker, user, password, protocol)
    try:
        yield connected
    finally:
        connected.close()


def telemetry(device_id: str) -> str:
    return f"{PREFIX}/water-level/{device_id}/telemetry"


def test_an_anonymous_client_cannot_connect(broker: Mosquitto) -> None:
    with client(broker, None) as anonymous:
        assert str(anonymous.connack) == "Not authorized"


def test_a_wrong_password_cannot_connect(broker: Mosquitto) -> None:
    with client(broker, DEVICE_A, password="not-the-password") as stranger:
        assert str(stranger.connack) == "Not authorized"


def test_a_device_publishing_to_another_devices_topic_never_reaches_the_service(
    broker: Mosquitto,
) -> None:
    with client(broker, SERVICE_USER) as service, client(broker, DEVICE_A) as device:
        service.subscribe(f"{PREFIX}/+/+/telemetry", f"{PREFIX}/+/+/status")
        device.publish(telemetry(DEVICE_B), b'{"level_cm": 999}')  # 3.1.1: dropped silently
        device.publish(telemetry(DEVICE_A), b'{"level_cm": 1}')
        # The same client, in order: had the first been forwarded, it would be in first.
        wait_until(lambda: (telemetry(DEVICE_A), b'{"level_cm": 1}') in service.received(), 10,
                   "the device's own reading")
        assert service.received() == [(telemetry(DEVICE_A), b'{"level_cm": 1}')]


def test_a_camera_publishes_its_own_events_only_and_the_service_reads_them(
    broker: Mosquitto,
) -> None:
    own, foreign = (f"{PREFIX}/camera/{DEVICE_A}/events", f"{PREFIX}/camera/{DEVICE_B}/events")
    event = b'{"event_id": "e1", "type": "new", "label": "flood", "score": 0.9}'
    with client(broker, SERVICE_USER) as service, client(broker, DEVICE_A) as camera:
        service.subscribe(f"{PREFIX}/camera/+/events")
        camera.publish(foreign, event)  # 3.1.1: dropped silently
        camera.publish(own, event)
        wait_until(lambda: (own, event) in service.received(), 10, "the camera's own event")
        assert service.received() == [(own, event)]


def test_with_mqtt_5_the_broker_says_not_authorized_to_a_foreign_topic(
    broker: Mosquitto,
) -> None:
    with client(broker, DEVICE_A, protocol=mqtt.MQTTv5) as device:
        device.publish(telemetry(DEVICE_B), b'{"level_cm": 999}')
        device.publish(telemetry(DEVICE_A), b'{"level_cm": 1}')
        wait_until(lambda: len(device.pubacks) == 2, 10, "two PUBACKs")
        refused, accepted = device.pubacks
        assert str(refused) == "Not authorized"
        assert not accepted.is_failure  # "No matching subscribers": nobody listens here


def test_a_device_reads_nothing_not_even_its_own_topics(broker: Mosquitto) -> None:
    with (client(broker, DEVICE_A) as device, client(broker, DEVICE_B) as other,
          client(broker, SERVICE_USER) as service):
        device.subscribe(f"{PREFIX}/#", telemetry(DEVICE_A))
        service.subscribe(f"{PREFIX}/+/+/telemetry")
        other.publish(telemetry(DEVICE_B), b"b")
        device.publish(telemetry(DEVICE_A), b"a")
        wait_until(lambda: len(service.received()) == 2, 10, "both readings at the service")
        device.round_trip()  # whatever the broker forwarded to the device is in by now
        assert device.received() == []


def test_the_service_reads_telemetry_and_retained_status(broker: Mosquitto) -> None:
    status = f"{PREFIX}/water-level/{DEVICE_B}/status"
    with client(broker, DEVICE_B) as device:
        device.publish(status, b"online", retain=True)
        device.publish(telemetry(DEVICE_B), b"{}")
    with client(broker, SERVICE_USER) as service:
        service.subscribe(f"{PREFIX}/+/+/telemetry", f"{PREFIX}/+/+/status")
        wait_until(lambda: (status, b"online") in service.received(), 10, "the retained status")
        with client(broker, DEVICE_B) as device:
            device.publish(telemetry(DEVICE_B), b'{"level_cm": 2}')
        wait_until(lambda: (telemetry(DEVICE_B), b'{"level_cm": 2}') in service.received(), 10,
                   "the device's reading")


def test_the_service_cannot_publish_as_a_device(broker: Mosquitto) -> None:
    with (client(broker, ADMIN_USER) as observer, client(broker, SERVICE_USER) as service,
          client(broker, DEVICE_A) as device):
        observer.subscribe(f"{PREFIX}/+/+/telemetry")
        # The forged one is acknowledged before the real one is sent: had the broker passed
        # it on, the observer would have it first.
        service.publish(telemetry(DEVICE_A), b"forged")
        device.publish(telemetry(DEVICE_A), b"real")
        wait_until(lambda: (telemetry(DEVICE_A), b"real") in observer.received(), 10,
                   "the real reading")
        assert observer.received() == [(telemetry(DEVICE_A), b"real")]


def test_the_broker_reads_the_password_and_acl_files_siaga_writes(broker: Mosquitto) -> None:
    password_file = Path(broker.data_dir / "siaga.passwd").read_text()
    assert all(password not in password_file for password in broker.users.values())
    assert f"{DEVICE_A}:$7$101$" in password_file
