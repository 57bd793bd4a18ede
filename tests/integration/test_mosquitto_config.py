"""The shipped mosquitto.conf, run by a real broker, does what its comments promise."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from siaga.broker.config import MOSQUITTO_CONF, adapt_mosquitto_config
from siaga.sandbox.mosquitto import ADMIN_USER, Mosquitto
from siaga.sandbox.server import ServerNotInstalled, ServerStartError, find_binary
from tests.polling import wait_until

BACKLOG = 3000  # three times Mosquitto's default max_queued_messages (1000)


class Inbox:
    """Payloads a client received, safe to read from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._payloads: list[bytes] = []

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._payloads.append(bytes(message.payload))

    @property
    def payloads(self) -> list[bytes]:
        with self._lock:
            return list(self._payloads)


@contextmanager
def connected(
    broker: Mosquitto,
    client_id: str = "",
    *,
    clean_session: bool = True,
    inbox: Inbox | None = None,
) -> Iterator[mqtt.Client]:
    """A connected MQTT 3.1.1 client with its network loop running; disconnected on exit."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
    )
    client.max_inflight_messages_set(1000)  # the publishers of these tests are not paced
    if inbox is not None:
        client.on_message = inbox.on_message
    client.username_pw_set(ADMIN_USER, broker.users[ADMIN_USER])
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        wait_until(client.is_connected, 10, "the client connected")
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def subscribe(client: mqtt.Client, topic: str) -> None:
    # The callback is in place before the SUBSCRIBE leaves: paho's network thread may take
    # the SUBACK before this thread runs its next line.
    granted: set[int] = set()
    client.on_subscribe = lambda *args: granted.add(args[2])
    result, mid = client.subscribe(topic, qos=1)
    assert result == mqtt.MQTT_ERR_SUCCESS
    wait_until(lambda: mid in granted, 10, f"the SUBACK for {topic}")


def unique_topic() -> str:
    return f"test/{uuid.uuid4().hex}"


def test_the_adapted_configuration_changes_only_port_and_paths(tmp_path: Path) -> None:
    shipped = MOSQUITTO_CONF.read_text().splitlines()
    adapted = adapt_mosquitto_config("\n".join(shipped), 1234, tmp_path, as_root=False)
    changed = [
        (old, new) for old, new in zip(shipped, adapted.splitlines(), strict=True) if old != new
    ]
    assert changed == [
        ("listener 1883", "listener 1234 127.0.0.1"),
        ("password_file /etc/mosquitto/siaga.passwd", f"password_file {tmp_path}/siaga.passwd"),
        ("acl_file /etc/mosquitto/siaga.acl", f"acl_file {tmp_path}/siaga.acl"),
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/"),
        (
            "log_dest file /var/log/mosquitto/mosquitto.log",
            f"log_dest file {tmp_path / 'mosquitto.log'}",
        ),
    ]


def test_the_broker_refuses_a_payload_over_64_kib(mosquitto: Mosquitto) -> None:
    topic, inbox = unique_topic(), Inbox()
    with connected(mosquitto, inbox=inbox) as subscriber, connected(mosquitto) as publisher:
        subscribe(subscriber, topic)
        large = publisher.publish(topic, b"x" * 70_000, qos=1)
        small = publisher.publish(topic, b"y" * 1024, qos=1)
        large.wait_for_publish(10)
        small.wait_for_publish(10)
        # Delivery keeps the publishing order: had the large one been forwarded, it would
        # be in the inbox before the small one.
        wait_until(lambda: inbox.payloads, what="the small payload delivered")
    assert inbox.payloads == [b"y" * 1024]


def test_the_broker_keeps_a_persistent_sessions_backlog_beyond_1000_messages(
    mosquitto: Mosquitto,
) -> None:
    topic, client_id, inbox = unique_topic(), f"backlog-{uuid.uuid4().hex[:8]}", Inbox()
    with connected(mosquitto, client_id, clean_session=False) as subscriber:
        subscribe(subscriber, topic)
    with connected(mosquitto) as publisher:
        sent = [publisher.publish(topic, str(n).encode(), qos=1) for n in range(BACKLOG)]
        for message in sent:
            message.wait_for_publish(10)
    with connected(mosquitto, client_id, clean_session=False, inbox=inbox):
        wait_until(lambda: len(inbox.payloads) >= BACKLOG, 30, f"a backlog of {BACKLOG}")
    assert sorted(int(payload) for payload in inbox.payloads) == list(range(BACKLOG))


def test_a_broker_that_cannot_start_says_why(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="already in use"):
        Mosquitto(tmp_path, port=mosquitto.port).start()


def test_a_missing_server_names_the_package_to_install() -> None:
    with pytest.raises(ServerNotInstalled, match="apt-get install -y mosquitto"):
        find_binary("siaga-no-such-server", "siaga-no-such-package")
