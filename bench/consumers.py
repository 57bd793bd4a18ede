"""The systems under test, each a process reading one bed's broker and writing its database."""

from __future__ import annotations

import contextlib
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import nodered
from bench.bed import Bed
from bench.procs import child
from devices.topics import TopicScheme
from siaga.sandbox.ports import free_port

PEERS_DIR = Path(__file__).resolve().parent / "peers"
READY_TIMEOUT_S = 180.0  # siaga run loads the catalog (100,000 devices: ~1 min here) first
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only


@dataclass(frozen=True, slots=True)
class Running:
    """A started consumer: its process id (for /proc) and, for Siaga, its API port."""

    pid: int
    http_port: int | None = None

    def metrics(self) -> dict[str, float]:
        """Siaga's /metrics as name -> value (unlabelled samples only)."""
        if self.http_port is None:
            return {}
        with NO_PROXY.open(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()[:2]
                values[name] = float(value)
        return values

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until /readyz answers 200: subscribed and storage usable."""
        deadline = time.monotonic() + timeout_s
        while True:
            url = f"http://127.0.0.1:{self.http_port}/readyz"
            with contextlib.suppress(OSError), NO_PROXY.open(url, timeout=2) as answer:
                if answer.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"siaga run not ready within {timeout_s:g} s")
            time.sleep(0.1)


class Consumer:
    """What every system under test offers the scenarios."""

    name: str = ""
    durable_ack = False  # acknowledges a message only once its readings are stored
    validates = False

    def client_id(self, bed: Bed) -> str:
        return f"{self.name}-{bed.prefix}"

    def filters(self, bed: Bed) -> list[str]:
        """The topic filters it subscribes to (a persistent session is primed with them)."""
        return [f"{bed.prefix}/+/+/telemetry"]

    @contextlib.contextmanager
    def running(self, bed: Bed) -> Iterator[Running]:
        raise NotImplementedError
        yield


class Siaga(Consumer):
    """`siaga run -c FILE`: validation, durable acknowledgement, default rules, webhooks."""

    name = "siaga"
    durable_ack = True
    validates = True

    def filters(self, bed: Bed) -> list[str]:
        return TopicScheme(bed.prefix).subscriptions()

    @contextlib.contextmanager
    def running(self, bed: Bed) -> Iterator[Running]:
        port = free_port()
        config = bed.siaga_config(self.client_id(bed), port)
        command = [sys.executable, "-m", "siaga", "run", "-c", str(config)]
        with child(command, bed.workdir / "siaga-run.log") as process:
            yield Running(process.pid, port)


class Script(Consumer):
    """A peer script of bench/peers/, run with the bed's addresses."""

    def __init__(self, name: str, script: str) -> None:
        self.name = name
        self.script = PEERS_DIR / script

    @contextlib.contextmanager
    def running(self, bed: Bed) -> Iterator[Running]:
        command = [sys.executable, str(self.script), "--mqtt-port", str(bed.broker.port),
                   "--prefix", bed.prefix, "--client-id", self.client_id(bed),
                   "--influx-port", str(bed.influx.port), "--db", bed.database]
        with child(command, bed.workdir / f"{self.name}.log") as process:
            yield Running(process.pid)


class NodeRed(Consumer):
    """Node-RED 4.1 + node-red-contrib-influxdb, headless (see bench/nodered.py)."""

    name = "node-red"

    @contextlib.contextmanager
    def running(self, bed: Bed) -> Iterator[Running]:
        user_dir = bed.workdir / "node-red"
        command = nodered.prepare(user_dir, port=free_port(), mqtt_port=bed.broker.port,
                                  client_id=self.client_id(bed), topic=self.filters(bed)[0],
                                  influx_port=bed.influx.port, database=bed.database)
        with child(command, bed.workdir / "node-red.log", cwd=user_dir) as process:
            yield Running(process.pid)


NAIVE = Script("paho-naive", "naive.py")
BATCHED = Script("paho-batched", "batched.py")
SIAGA = Siaga()
NODE_RED = NodeRed()
