"""Nothing is lost: service killed, InfluxDB down, broker restarted; counted exactly by seq."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import Settings
from tests.integration.support import (
    Publisher,
    influx_rows,
    make_settings,
    running_service,
    unique_name,
)
from tests.polling import eventually, wait_until

TS = 1_700_000_000
DEVICE = "manggarai"


def _stream(prefix: str, count: int) -> Iterator[tuple[str, dict[str, object]]]:
    """One reading per second of event time, numbered by seq."""
    topic = f"{prefix}/water-level/{DEVICE}/telemetry"
    for seq in range(count):
        yield topic, {"ts": TS + seq, "seq": seq, "level_cm": 600 + seq % 100}


class PacedPublisher(threading.Thread):
    """Publishes the stream at a steady rate in the background, like devices do."""

    def __init__(self, publisher: Publisher, prefix: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.publisher, self.prefix, self.count, self.rate = publisher, prefix, count, rate
        self.sent = 0

    def run(self) -> None:
        started = time.monotonic()
        for topic, payload in _stream(self.prefix, self.count):
            self.publisher.publish(topic, payload)
            self.sent += 1
            ahead = started + self.sent / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the stream at `rate`, not a wait for a result


def _seqs(influx: InfluxDB1, database: str) -> list[int]:
    query = f"SELECT seq FROM water_level WHERE device_id = '{DEVICE}'"
    rows = influx_rows(influx, database, query)
    return [row["seq"] for row in rows]


def _all_stored(influx: InfluxDB1, database: str, count: int) -> bool:
    try:
        return len(_seqs(influx, database)) >= count
    except OSError:  # InfluxDB restarting
        return False


def _more_stored(influx: InfluxDB1, database: str, than: int) -> Callable[[], bool]:
    return lambda: len(_seqs(influx, database)) > than


def _write_config(settings: Settings, path: Path) -> Path:
    data = settings.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class ServiceProcess:
    """`python -m ingest run -c FILE` as a real process, for signals.

    Its API binds port 0; the port it got is read from its start-up line.
    """

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "siaga", "run", "-c", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        started = self.log.read_text().count("Siaga ingest ready") + 1
        wait_until(lambda: self.log.read_text().count("Siaga ingest ready") >= started, 30,
                   "the service ready")

    def metric(self, name: str) -> float:
        """One unlabelled sample of the running service's /metrics."""
        api = re.findall(r"Siaga ingest started: .* API (http://\S+),", self.log.read_text())
        with urllib.request.urlopen(f"{api[-1]}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found is not None, f"no {name} in /metrics"
        return float(found.group(1))

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


ProcessFactory = Callable[[Settings], ServiceProcess]


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[ProcessFactory]:
    processes: list[ServiceProcess] = []

    def make(settings: Settings) -> ServiceProcess:
        process = ServiceProcess(_write_config(settings, tmp_path / "siaga.yaml"),
                                 tmp_path / "service.log")
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.stop()


def _v1(influx: InfluxDB1) -> tuple[InfluxSettings, str]:
    database = unique_name("siaga_")
    return InfluxSettings(api="v1", url=influx.url, database=database), database


def test_a_service_killed_with_sigkill_mid_stream_loses_nothing(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, service_process: ProcessFactory
) -> None:
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path / "data", batch_size=200)
    service = service_process(settings)
    service.start()
    count = 6000
    publisher = Publisher(mosquitto)
    stream = PacedPublisher(publisher, settings.mqtt.topic_prefix, count, rate=1000)
    stream.start()
    sent_at_kills = []
    for _ in range(2):  # kill twice, each time once the service has stored something more
        stored_before = len(_seqs(influxdb1, database))
        wait_until(_more_stored(influxdb1, database, stored_before), 20, "more readings stored")
        sent_at_kills.append(stream.sent)
        service.signal(signal.SIGKILL)
        service.wait()
        service.start()
    stream.join()
    assert sent_at_kills[0] < count  # the first kill, at least, hit a running stream
    publisher.wait_acked(count)
    wait_until(lambda: _all_stored(influxdb1, database, count), 60, f"{count} readings stored")
    seqs = _seqs(influxdb1, database)
    assert sorted(seqs) == list(range(count))
    publisher.close()


def test_sigterm_flushes_what_was_received_and_exits_0(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, service_process: ProcessFactory
) -> None:
    influx, database = _v1(influxdb1)
    # Nothing would be written for a minute but for the shutdown flush.
    settings = make_settings(mosquitto.url, influx, tmp_path / "data", batch_size=20000,
                             flush_interval_s=60, linger_s=60)
    service = service_process(settings)
    service.start()
    publisher = Publisher(mosquitto)
    publisher.publish_all(_stream(settings.mqtt.topic_prefix, 500))
    publisher.wait_acked(500)
    wait_until(lambda: service.metric("siaga_readings_received_total") >= 500, 20,
               "the service holding the 500 readings in its batch")
    assert _seqs(influxdb1, database) == []
    service.signal(signal.SIGTERM)
    assert service.wait() == 0
    assert sorted(_seqs(influxdb1, database)) == list(range(500))
    publisher.close()


async def test_influxdb_down_mid_stream_spools_and_replays_every_reading(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with InfluxDB1(tmp_path / "influx") as influxdb:
        influx, database = _v1(influxdb)
        settings = make_settings(mosquitto.url, influx, tmp_path / "data", batch_size=200)
        count = 3000
        async with running_service(settings) as service:
            publisher = Publisher(mosquitto)
            stream = PacedPublisher(publisher, settings.mqtt.topic_prefix, count, rate=1000)
            stream.start()
            await eventually(lambda: service.snapshot().get("stored", 0) > 0, what="a first write")
            influxdb.stop()
            await eventually(lambda: service.snapshot().get("spooled", 0) > 500, 30,
                             "500 readings spooled")
            influxdb.start()
            await eventually(lambda: stream.sent == count, 30, "the whole stream published")
            await eventually(lambda: publisher.acked >= count, what="every reading acknowledged")
            await eventually(lambda: _all_stored(influxdb, database, count), 60,
                             f"{count} readings stored")
            assert service.snapshot()["spool_segments"] == 0
            publisher.close()
        assert sorted(_seqs(influxdb, database)) == list(range(count))


async def test_a_broker_restart_mid_stream_is_survived_by_reconnecting(
    influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        influx, database = _v1(influxdb1)
        settings = make_settings(broker.url, influx, tmp_path / "data", batch_size=200)
        count = 2000
        async with running_service(settings) as service:
            publisher = Publisher(broker)
            stream = PacedPublisher(publisher, settings.mqtt.topic_prefix, count, rate=1000)
            stream.start()
            await eventually(lambda: service.stats.acked > 200, what="200 readings acknowledged")
            broker.stop()
            broker.start()
            await eventually(lambda: stream.sent == count, 30, "the whole stream published")
            await eventually(lambda: publisher.acked >= count, 60, "every reading acknowledged")
            await eventually(lambda: _all_stored(influxdb1, database, count), 60,
                             f"{count} readings stored")
            publisher.close()
        assert sorted(_seqs(influxdb1, database)) == list(range(count))
