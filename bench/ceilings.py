"""The limits everything else is measured against: Mosquitto's and InfluxDB's own rates.

Mosquitto: `mosquitto_pub -l -q 1` reads a file of readings and publishes a message per
line; `mosquitto_sub -q 1 -C N` (started first, known subscribed once it printed a retained
marker) exits after N: C to C through the broker, QoS 1 on both legs. mosquitto_pub 2.0.11
stops at the first acknowledgement whose message id equals its last one, and ids wrap at
65535: it is fed at most PUB_CHUNK lines per process, the processes one after the other.

InfluxDB: line protocol of the same shape as Siaga's (1000 series, 2-3 fields each), in
batches of 5000 lines, POSTed one after the other over one kept-alive connection, the
bodies encoded beforehand; the count is checked by a query.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import orjson

from bench.bed import broker_config
from bench.influxdb import Influx
from siaga.sandbox.mosquitto import Mosquitto

RECEIVE_TIMEOUT_S = 120.0  # the broker does ~25,000 msg/s: ample for a million
MARKER_TIMEOUT_S = 10.0  # mosquitto_sub connects and subscribes in milliseconds
PIPE_CHUNK = 1 << 16
PUB_CHUNK = 60_000  # lines per mosquitto_pub process, below the message id wrap
INFLUX_BATCH = 5000  # InfluxDB's recommended batch size, as Siaga writes
SERIES = 1000


def mosquitto(workdir: Path, messages: int) -> dict[str, object]:
    """QoS 1 messages/s from mosquitto_pub to mosquitto_sub through the project's broker."""
    workdir.mkdir(parents=True)
    chunks: list[Path] = []
    for first in range(0, messages, PUB_CHUNK):
        chunk = workdir / f"readings-{len(chunks):03d}.txt"
        with chunk.open("wb") as out:
            for number in range(first, min(messages, first + PUB_CHUNK)):
                out.write(orjson.dumps({"ts": 1_700_000_000 + number / 1000, "seq": number,
                                        "level_cm": 50.0 + number % 20}) + b"\n")
        chunks.append(chunk)
    pub, sub = _binary("mosquitto_pub"), _binary("mosquitto_sub")
    with Mosquitto(workdir / "mosquitto", config=broker_config(workdir)) as broker:
        address = ["-h", "127.0.0.1", "-p", str(broker.port)]
        topic = f"ceiling/{uuid.uuid4().hex[:8]}"
        subprocess.run([pub, *address, "-t", topic, "-q", "1", "-r", "-m", "marker"],
                       check=True, timeout=MARKER_TIMEOUT_S)
        receiver = subprocess.Popen([sub, *address, "-t", topic, "-q", "1", "-C",
                                     str(messages + 1)], stdout=subprocess.PIPE)
        try:
            reader = _LineCounter(receiver)
            if not reader.first.wait(MARKER_TIMEOUT_S):
                raise RuntimeError("mosquitto_sub did not receive the retained marker")
            started = time.monotonic()
            for chunk in chunks:
                with chunk.open("rb") as source:
                    subprocess.run([pub, *address, "-t", topic, "-q", "1", "-l"],
                                   stdin=source, check=True, timeout=600)
            published = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):  # counted short below
                receiver.wait(timeout=RECEIVE_TIMEOUT_S)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()
        reader.join(30)
    received = reader.lines - 1  # the marker
    elapsed = reader.finished - started
    return {"messages": messages, "received": received, "verified": received == messages,
            "elapsed_s": elapsed, "publish_s": published - started,
            "rate": received / elapsed if elapsed > 0 else 0.0}


class _LineCounter(threading.Thread):
    """Reads mosquitto_sub's output: one line per message; notes the first and the end."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.first = threading.Event()
        self.lines = 0
        self.finished = 0.0
        self.start()

    def run(self) -> None:
        stream = self.process.stdout
        assert isinstance(stream, io.BufferedReader)  # read1: whatever the pipe holds
        while chunk := stream.read1(PIPE_CHUNK):
            self.lines += chunk.count(b"\n")
            if self.lines:
                self.first.set()
        self.finished = time.monotonic()


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: apt-get install mosquitto-clients")
    return found


def influxdb(influx: Influx, points: int) -> dict[str, object]:
    """Points/s InfluxDB takes in batches of 5000 over one connection; count verified."""
    database = f"ceiling_{uuid.uuid4().hex[:8]}"
    influx.create(database)
    try:
        bodies = list(_bodies(points))
        started = time.monotonic()
        for body in bodies:
            influx.write(database, body)
        elapsed = time.monotonic() - started
        stored = influx.count(database)
    finally:
        influx.drop(database)
    return {"points": points, "stored": stored, "verified": stored == points,
            "elapsed_s": elapsed, "rate": points / elapsed if elapsed > 0 else 0.0}


def _bodies(points: int) -> list[bytes]:
    """Readings of SERIES devices in turn, a millisecond apart, as Siaga would write them."""
    start_ns = (int(time.time()) - 3600) * 1_000_000_000
    lines = []
    for number in range(points):
        device = number % SERIES
        kind = ("water_level", "air_quality", "traffic")[device % 3]
        fields = {"water_level": f"level_cm={50 + number % 20}.5",
                  "air_quality": f"pm25={10 + number % 20}.5,pm10={20 + number % 30}.0",
                  "traffic": f"speed_kmh={30 + number % 20}.5,volume_vph=1200.0"}[kind]
        lines.append(f"{kind},device_id=load-{device:06d},kota=load-test {fields},seq={number}i "
                     f"{start_ns + number * 1_000_000}")
    return ["\n".join(lines[i:i + INFLUX_BATCH]).encode()
            for i in range(0, len(lines), INFLUX_BATCH)]
