"""A test bed for one measurement: a fresh Mosquitto, a fresh database, config files, sessions."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.influxdb import Influx
from siaga.sandbox.mosquitto import Mosquitto

# Broker authentication lines of mosquitto.conf that the harness drops: its clients are
# anonymous (the password and ACL files are written per deployment, not by the harness).
AUTH_KEYS = ("password_file", "acl_file", "allow_anonymous")
# The configuration the project ships (and localservers starts by default).
MOSQUITTO_CONF = Path(__file__).resolve().parent.parent / "mosquitto.conf"
SESSION_TIMEOUT_S = 10.0  # connecting and subscribing to a local broker takes milliseconds
LAND_TIMEOUT_S = 60.0  # after a load stops, until the last readings are stored
_beds = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Bed:
    """Where one consumer runs: its broker, its database and topic prefix, its files."""

    workdir: Path
    broker: Mosquitto
    influx: Influx
    database: str
    prefix: str
    catalog: Path
    webhook_url: str | None = None

    @property
    def mqtt_url(self) -> str:
        return self.broker.url

    def count(self) -> int:
        """Readings stored in this bed's database."""
        return self.influx.count(self.database)

    def wait_count(self, expected: int, timeout_s: float = LAND_TIMEOUT_S) -> int:
        """Poll the count until it reaches `expected` or `timeout_s` passed; the last count."""
        deadline = time.monotonic() + timeout_s
        while (landed := self.count()) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        return landed

    def siaga_config(self, client_id: str, http_port: int, *, name: str = "siaga") -> Path:
        """A `siaga run -c` file: this bed's broker, database and catalog; defaults otherwise.

        The same file drives `siaga simulate -c` (it reads the broker and the prefix).
        """
        document: dict[str, object] = {
            "mqtt": {"url": self.mqtt_url, "client_id": client_id, "topic_prefix": self.prefix,
                     "qos": 1},
            "influx": {"api": "v1", "url": self.influx.url, "database": self.database},
            "ingest": {"batch_size": 20000, "batch_messages": 5000, "flush_interval_s": 1.0},
            "http": {"host": "127.0.0.1", "port": http_port},
            "data_dir": str(self.workdir / f"{name}-data"),
            "catalog": str(self.catalog),
        }
        if self.webhook_url is not None:
            document["webhook_url"] = self.webhook_url
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path


def broker_config(workdir: Path) -> Path:
    """The project's mosquitto.conf, every line kept but authentication (see AUTH_KEYS)."""
    kept = [line for line in MOSQUITTO_CONF.read_text().splitlines()
            if (line.split(maxsplit=1) or [""])[0] not in AUTH_KEYS]
    path = workdir / "mosquitto-bench.conf"
    path.write_text("\n".join([*kept, "allow_anonymous true"]) + "\n")
    return path


@contextlib.contextmanager
def fresh_bed(root: Path, influx: Influx, catalog: Path, *,
              webhook_url: str | None = None) -> Iterator[Bed]:
    """A new broker and database (dropped afterwards), so no run sees another's backlog."""
    number = next(_beds)
    workdir = root / f"bed{number:03d}"
    workdir.mkdir(parents=True)
    database = f"bench{number}_{uuid.uuid4().hex[:6]}"
    influx.create(database)
    try:
        with Mosquitto(workdir / "mosquitto", config=broker_config(workdir)) as broker:
            yield Bed(workdir, broker, influx, database, f"b{number}", catalog, webhook_url)
    finally:
        # Best effort: after a failed recovery run InfluxDB may be down, and that error
        # must not hide the one that ended the run.
        with contextlib.suppress(OSError, RuntimeError):
            influx.drop(database)


def prime_session(port: int, client_id: str, filters: Sequence[str]) -> None:
    """Subscribe as `client_id` with a persistent session, then leave.

    The broker then queues what is published for that consumer while it is away: the
    backlog a consumer drains when it starts is the same for every consumer.
    """
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, *_: object) -> None:
        client.subscribe([(topic_filter, 1) for topic_filter in filters])

    def on_subscribe(*_: object) -> None:
        subscribed.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                         protocol=mqtt.MQTTv311)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        deadline = time.monotonic() + SESSION_TIMEOUT_S
        while not subscribed.wait(0.01):
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker on port {port} did not confirm the subscription")
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()
