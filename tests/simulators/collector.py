"""A subscriber that keeps every message under a prefix (polling is tests/polling.py)."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from siaga.sandbox.mosquitto import ADMIN_USER, Mosquitto


class Collector:
    """A paho subscriber that keeps every message it receives under `prefix`."""

    def __init__(self, broker: Mosquitto, prefix: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retained
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.username_pw_set(ADMIN_USER, broker.users[ADMIN_USER])
        self._client.connect("127.0.0.1", broker.port)
        self._client.subscribe(f"{prefix}/#", qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("no SUBACK within 10 s")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def received(self, channel: str) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].endswith("/" + channel)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
