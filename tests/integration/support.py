"""Shared pieces of the end-to-end tests: a running service, a publisher, counting.

Polling is tests/polling.py, shared by the whole suite."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from devices.registry import Registry, load_catalog
from ingest.settings import InfluxSettings, IngestSettings, MqttSettings
from siaga.app import Service
from siaga.broker.auth import SIMULATOR_USER
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import HttpSettings, Settings
from siaga_core.mqttloop import BrokerAddress
from tests.polling import wait_until

_unique = itertools.count()
START_S: Final = 60  # a ceiling for start-up on a loaded machine, not an expectation
_API: Final = re.compile(r"Siaga ingest started: .* API (http://\S+),")


def unique_name(stem: str) -> str:
    """A name no other test uses: topic prefixes, databases, client ids."""
    return f"{stem}{next(_unique)}{uuid.uuid4().hex[:6]}"


def simulator_address(broker: Mosquitto, user: str = SIMULATOR_USER) -> BrokerAddress:
    """Where and as whom the simulators under test connect."""
    return BrokerAddress("127.0.0.1", broker.port, user, broker.users[user])


def make_settings(mqtt_url: str, influx: InfluxSettings, data_dir: Path, *,
                  catalog: Path | None = None, rules: Path | None = None,
                  batch_size: int = 500,
                  flush_interval_s: float = 0.2, linger_s: float = 0.05,
                  prefix: str | None = None,
                  unknown_devices: str = "dead-letter") -> Settings:
    return Settings(
        mqtt=MqttSettings(url=mqtt_url, client_id=unique_name("siaga-test-"),
                          topic_prefix=prefix or unique_name("t"), reconnect_max_s=2),
        influx=influx,
        ingest=IngestSettings(batch_size=batch_size, flush_interval_s=flush_interval_s,
                              linger_s=linger_s,
                              unknown_devices=unknown_devices),  # type: ignore[arg-type]
        data_dir=data_dir,
        catalog=catalog,
        rules=rules,
        http=HttpSettings(port=0),
    )


def write_config(settings: Settings, path: Path, *, token: str | None = None,
                 **sections: Any) -> Path:
    """`settings` as a YAML file for `siaga run -c`, the token as it is (a dump masks
    secrets), and `sections` replacing whole top-level sections."""
    data: dict[str, Any] = settings.model_dump(mode="json", exclude_none=True)
    if token is not None:
        data["http"]["token"] = token
    data.update(sections)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running_service(settings: Settings, registry: Registry | None = None, *,
                          service: Service | None = None) -> AsyncIterator[Service]:
    """The service in this event loop (or `service`, built by the caller, e.g. on its own
    clock), stopped (gracefully) when the block ends."""
    service = service or Service(settings, registry or load_catalog(settings.catalog_path))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    ready = asyncio.create_task(service.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what broke start-up
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


class Publisher:
    """A device-side QoS 1 publisher that counts what the broker acknowledged."""

    def __init__(self, broker: Mosquitto, client_id: str | None = None, *,
                 user: str = SIMULATOR_USER) -> None:
        self.acked = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or unique_name("pub-"),
                                  clean_session=False)
        self.client.on_publish = self._on_publish
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)  # unbounded: keep everything across outages
        self.client.reconnect_delay_set(1, 2)
        self.client.username_pw_set(user, broker.users[user])
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: object, qos: int = 1) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.client.publish(topic, body, qos=qos)

    def publish_all(self, messages: Iterable[tuple[str, object]]) -> int:
        count = 0
        for topic, payload in messages:
            self.publish(topic, payload)
            count += 1
        return count

    def wait_acked(self, count: int, timeout: float = 30.0) -> None:
        wait_until(lambda: self.acked >= count, timeout,
                   f"the broker acknowledging {count} publishes (acked so far: {self.acked})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def influx_rows(influx: InfluxDB1, database: str, query: str) -> list[dict[str, Any]]:
    """Rows of an InfluxQL query as dicts (tags and fields by column name)."""
    result = influx.query(query, database)
    rows: list[dict[str, Any]] = []
    for statement in result.get("results", []):
        for series in statement.get("series", []):
            columns = series["columns"]
            tags = series.get("tags", {})
            for values in series["values"]:
                rows.append({**tags, **dict(zip(columns, values, strict=True))})
    return rows


def influx_count(influx: InfluxDB1, database: str, measurement: str, field: str) -> int:
    rows = influx_rows(influx, database, f'SELECT count("{field}") FROM "{measurement}"')
    return int(rows[0]["count"]) if rows else 0


class ServiceProcess:
    """`python -m siaga run -c FILE` as a real process, so that it can be SIGKILLed."""

    def __init__(self, config: Path, log: Path, args: Sequence[str] = ()) -> None:
        self.config, self.log = config, log
        self.args = tuple(args)  # more of `siaga run`'s options, e.g. --log-format json
        self.process: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self) -> None:
        starts = self._started_lines()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "siaga", "run", "-c", str(self.config), *self.args],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_until(lambda: len(self._started_lines()) > len(starts) or self._exited(),
                   START_S, "the service's start-up line")
        assert not self._exited(), f"siaga run exited: {self.log.read_text()[-3000:]}"
        self.base = self._started_lines()[-1]
        wait_until(self._ready, START_S, f"{self.base}/readyz answering 200")

    def _started_lines(self) -> list[str]:
        return _API.findall(self.log.read_text()) if self.log.exists() else []

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/readyz", timeout=5) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):  # 503 (an HTTPError) or not listening yet
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        """SIGTERM, so the book is closed; SIGKILL only if it does not end in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
