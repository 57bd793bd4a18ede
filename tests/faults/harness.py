"""The fault suite's rig: a seq-numbered load, the service as a real process, counting by seq."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingest.settings import InfluxSettings, SpoolSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.server import LocalServer, ServerStartError
from siaga.settings import HttpSettings, Settings
from tests.integration.support import Publisher, influx_rows, make_settings, unique_name
from tests.polling import wait_until
from tests.receiver import Received, RecordingReceiver

LONG = os.environ.get("SIAGA_FAULTS", "short") == "long"
TS = 1_700_000_000  # the load's event time starts here, one second per seq
# Quiet gauges of the bundled catalog: their levels stay far below every Siaga threshold.
LOAD_DEVICES = ("krukut-hulu", "pesanggrahan", "angke-hulu", "cipinang-hulu")
READY_LINE = "Siaga ingest ready"
_API_URL = re.compile(r"Siaga ingest started: .* API (http://\S+),")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')  # escapes kept
START_TIMEOUT_S = 30.0  # a restart replays the broker's backlog before it is ready
HTTP_TIMEOUT_S = 5.0
# One Siaga ladder cycle at Manggarai (siaga3 751, siaga2 851, siaga1 950, clear margin 10).
MANGGARAI_CYCLE = (700.0, 780.0, 860.0, 960.0, 900.0, 800.0, 700.0)
# The same at Karet (siaga3 451, siaga2 551, siaga1 601).
KARET_CYCLE = (400.0, 480.0, 570.0, 620.0, 570.0, 500.0, 400.0)
# What one cycle pages, in order: (status, level).
CYCLE_NEWS = (("firing", "siaga-3"), ("firing", "siaga-2"), ("firing", "siaga-1"),
              ("firing", "siaga-2"), ("firing", "siaga-3"), ("resolved", "siaga-3"))


def restart(server: LocalServer, within: float = 30.0) -> None:
    """Start a stopped server on its old port, waiting while a stranger holds that port.

    Local servers take ports from the ephemeral range, so while one is down an outgoing
    connection (the service retrying, the test's own probes) may briefly own its port.
    """

    def started() -> bool:
        try:
            server.start()
        except ServerStartError as exc:
            if "already in use" not in str(exc):
                raise
            return False
        return True

    wait_until(started, within, f"{type(server).__name__} restarted on port {server.port}", 0.5)


class SeqLoad(threading.Thread):
    """Background devices: `rate` readings/s in all, round robin, each numbered by seq."""

    def __init__(self, publisher: Publisher, prefix: str, rate: float,
                 devices: Sequence[str] = LOAD_DEVICES) -> None:
        super().__init__(daemon=True, name="seq-load")
        self.publisher, self.prefix, self.rate, self.devices = publisher, prefix, rate, devices
        self.published = dict.fromkeys(devices, 0)  # device -> readings published (seq 0..n-1)
        self.sent = 0
        self._halt = threading.Event()
        self._began = 0.0
        self._ended: float | None = None

    def run(self) -> None:
        self._began = time.monotonic()
        while not self._halt.is_set():
            device = self.devices[self.sent % len(self.devices)]
            seq = self.published[device]
            self.publisher.publish(f"{self.prefix}/water-level/{device}/telemetry",
                                   {"ts": TS + seq, "seq": seq, "level_cm": 40 + seq % 50})
            self.published[device] = seq + 1
            self.sent += 1
            ahead = self._began + self.sent / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the load at `rate`, not a wait for a result
        self._ended = time.monotonic()

    def finish(self) -> int:
        """Stop publishing; the total published."""
        self._halt.set()
        self.join(10)
        return self.sent

    @property
    def achieved_rate(self) -> float:
        end = self._ended or time.monotonic()
        return self.sent / max(end - self._began, 1e-9)


class Gauge(threading.Thread):
    """One device's level driven through Siaga cycles, stamped with the wall clock (fresh)."""

    def __init__(self, publisher: Publisher, prefix: str, device: str,
                 cycle: Sequence[float], every_s: float) -> None:
        super().__init__(daemon=True, name=f"gauge-{device}")
        self.publisher, self.every_s = publisher, every_s
        self.topic = f"{prefix}/water-level/{device}/telemetry"
        self.cycle = cycle
        self.cycles_done = 0
        self._halt = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self._halt.is_set():
            for level in self.cycle:
                self.publisher.publish(self.topic,
                                       {"ts": round(time.time(), 3), "seq": seq, "level_cm": level})
                seq += 1
                time.sleep(self.every_s)  # the gauge's reporting interval, not a wait for a result
            self.cycles_done += 1

    def finish(self) -> int:
        """Stop at the end of the current cycle; the cycles published."""
        self._halt.set()
        self.join(60)
        return self.cycles_done


@dataclass(frozen=True)
class Count:
    """Published vs stored, by seq per device."""

    published: int
    stored: int  # distinct seqs found
    lost: int
    duplicates: int  # rows of a seq already counted
    lost_examples: list[tuple[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"published": self.published, "stored": self.stored, "lost": self.lost,
                "duplicates": self.duplicates}


def count_by_seq(influx: InfluxDB1, database: str, published: dict[str, int]) -> Count:
    stored = lost = duplicates = 0
    examples: list[tuple[str, int]] = []
    for device, total in published.items():
        rows = influx_rows(influx, database,
                           f"SELECT seq FROM water_level WHERE device_id = '{device}'")
        seqs = [int(row["seq"]) for row in rows]
        distinct = set(seqs)
        duplicates += len(seqs) - len(distinct)
        stored += len(distinct & set(range(total)))
        missing = sorted(set(range(total)) - distinct)
        lost += len(missing)
        examples += [(device, seq) for seq in missing[:5]]
    return Count(sum(published.values()), stored, lost, duplicates, examples)


def wait_all_stored(influx: InfluxDB1, database: str, published: dict[str, int],
                    within: float) -> Count:
    """Poll until every published seq is in InfluxDB; the final count, lost ones included
    when the deadline passed (so the test can say which were lost)."""
    counts: list[Count] = []

    def all_stored() -> bool:
        try:
            counts[:] = [count_by_seq(influx, database, published)]
        except OSError:  # InfluxDB restarting
            return False
        return counts[0].lost == 0

    try:
        wait_until(all_stored, within, "every published seq stored in InfluxDB", 0.5)
    except AssertionError:
        if not counts:
            raise AssertionError(f"InfluxDB did not answer within {within:g} s") from None
    return counts[0]


def fault_settings(broker: Mosquitto, influx: InfluxDB1, data_dir: Path, *,
                   rules: Path | None = None, spool_bytes: int = 256 << 20,
                   batch_size: int = 500) -> tuple[Settings, str]:
    """Settings for one service under test, and its InfluxDB database."""
    database = unique_name("faults_")
    settings = make_settings(broker.url, InfluxSettings(url=influx.url, database=database,
                                                        timeout_s=2.0),
                             data_dir, rules=rules, batch_size=batch_size)
    return settings.model_copy(update={
        "spool": SpoolSettings(max_bytes=spool_bytes),
        "http": HttpSettings(port=0),  # the port it got is in its start line
    }), database


def rules_file(path: Path, receiver_url: str, *, timeout_s: float = 5.0) -> Path:
    """The Siaga ladder for the driven gauges only, with one webhook receiver."""
    path.write_text(f"""
rules:
  - name: FloodLevel
    type: ladder
    kind: water-level
    devices: [manggarai, karet]
    field: level_cm
    clear_margin: 10
    steps:
      - {{threshold: siaga3_cm, level: siaga-3, severity: warning}}
      - {{threshold: siaga2_cm, level: siaga-2, severity: major}}
      - {{threshold: siaga1_cm, level: siaga-1, severity: critical}}
alerting: {{page_max_age: 30d, repeat_interval: 24h}}
# The bundled catalog's cameras report every 10 s where they run; here nothing drives them,
# and their silence must not page beside the ladder the faults are judged on.
offline: {{expected_interval: {{camera: 24h}}}}
receivers:
  - {{name: bpbd, url: "{receiver_url}", timeout_s: {timeout_s}}}
routes:
  - {{receivers: [bpbd]}}
""", encoding="utf-8")
    return path


class ServiceProcess:
    """`python -m ingest run -c FILE`: a real process, for signals, RSS and its HTTP API."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.config = workdir / "siaga.yaml"
        self.log = workdir / "service.log"
        data = settings.model_dump(mode="json", exclude_none=True)
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []

    @property
    def url(self) -> str:
        """The API of the latest start: it binds port 0 and names its port in its start line
        (a port picked free beforehand could be taken by the time the service binds it)."""
        found = _API_URL.findall(self.log_text())
        if not found:
            raise ConnectionRefusedError("the service has not started its API yet")
        return str(found[-1])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, wait_ready: bool = True) -> float:
        """Start the process; the seconds until it was ready (subscribed), if waited for."""
        ready_before = self.log_text().count(READY_LINE)
        started = time.monotonic()
        self.process = self._spawn()
        if not wait_ready:
            return 0.0
        wait_until(lambda: self.log_text().count(READY_LINE) > ready_before or not self.running,
                   START_TIMEOUT_S, "service ready")
        assert self.running, f"service exited on start-up:\n{self.tail()}"
        return time.monotonic() - started

    def _spawn(self) -> subprocess.Popen[bytes]:
        """`siaga run` with this config, its output appended to the log."""
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "siaga", "run", "-c", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.exit_codes.append(self.process.wait(30))

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.exit_codes.append(code)
        return code

    def stop(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_mib(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert found is not None
        return int(found.group(1)) / 1024

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=HTTP_TIMEOUT_S) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self, **labels: str) -> dict[str, float]:
        """Prometheus samples by name, labelled samples summed; with `labels`, only the
        samples carrying each of those labels with that value."""
        status, text = self.get("/metrics")
        assert status == 200, text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_part, _, value = line.rpartition(" ")
            name, _, label_part = name_part.partition("{")
            if labels and not labels.items() <= dict(_LABEL_PAIR.findall(label_part)).items():
                continue
            values[name] = values.get(name, 0.0) + float(value)
        return values

    def metric(self, name: str, **labels: str) -> float:
        """One family's value (summed over its samples, or those with `labels`)."""
        try:
            return self.metrics(**labels).get(name, 0.0)
        except OSError:
            return -1.0  # not answering (restarting): never mistaken for progress


@dataclass
class Rig:
    """What one fault test runs: a publisher, the load, the service."""

    publisher: Publisher
    load: SeqLoad
    service: ServiceProcess
    extra: list[Any] = field(default_factory=list)

    def close(self) -> None:
        self.load.finish()
        self.service.stop()
        self.publisher.close()


def started_rig(broker: Mosquitto, service: ServiceProcess, rate: float) -> Rig:
    """`service` (not started yet) started, and a load at `rate` publishing to it."""
    try:
        service.start()
        publisher = Publisher(broker)
    except BaseException:
        service.stop()
        raise
    load = SeqLoad(publisher, service.settings.mqtt.topic_prefix, rate)
    load.start()
    return Rig(publisher, load, service)


class ThreadedReceiver:
    """tests.receiver.RecordingReceiver on an event loop of its own, for synchronous tests."""

    def __init__(self) -> None:
        self.receiver = RecordingReceiver()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="receiver")
        self._thread.start()
        self.up = False

    @property
    def url(self) -> str:
        return self.receiver.url

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self._loop).result(10)
        self.up = True

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self._loop).result(10)
        self.up = False

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def delivered(self) -> list[Received]:
        return self.receiver.delivered()

    def news(self) -> list[tuple[str, str, str]]:
        """(fingerprint, status, level) of each delivery, first 2xx per X-Siaga-Delivery."""
        seen: set[str] = set()
        news = []
        for request in self.delivered():
            if request.delivery in seen:
                continue
            seen.add(request.delivery)
            alert = request.json["alerts"][0]
            news.append((alert["fingerprint"], alert["status"], alert["labels"]["level"]))
        return news
