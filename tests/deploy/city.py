"""A real `siaga run` for the tests of deploy/: on the session's Mosquitto and InfluxDB, with
the bundled Jakarta catalog, fed a few readings of every device of every kind."""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from devices.kinds import Kind
from devices.registry import Device, bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import Settings
from tests.integration.support import (
    Publisher,
    ServiceProcess,
    influx_count,
    make_settings,
    unique_name,
    write_config,
)
from tests.polling import wait_until

READINGS_EACH: Final = 3  # per device, a minute apart: a line on a graph, not a dot
FLOODED: Final = "manggarai"  # at its Siaga 3 level, so an alert fires
MEASURED: Final = (("water_level", "level_cm"), ("air_quality", "pm25"),
                   ("traffic", "speed_kmh"))
STORED_S: Final = 60  # a ceiling for a few dozen readings reaching InfluxDB on a busy machine


@dataclass(frozen=True)
class RunningSiaga:
    """A `siaga run` process and what it was started with."""

    process: ServiceProcess
    settings: Settings

    @property
    def address(self) -> str:
        """host:port of its API: a Prometheus target, and the `instance` label it gets."""
        return urlsplit(self.process.base).netloc

    @property
    def database(self) -> str:
        return self.settings.influx.database

    def metrics(self) -> str:
        """GET /metrics, as Prometheus reads it."""
        with urllib.request.urlopen(f"{self.process.base}/metrics", timeout=10) as answer:
            return bytes(answer.read()).decode()


@contextlib.contextmanager
def running_siaga(mosquitto: Mosquitto, influx: InfluxDB1, tmp_path: Path
                  ) -> Iterator[RunningSiaga]:
    """`siaga run` on a database and topic prefix of its own, stopped when the block ends."""
    settings = make_settings(mosquitto.url, InfluxSettings(url=influx.url,
                             database=unique_name("deploy_")), tmp_path / "data")
    process = ServiceProcess(write_config(settings, tmp_path / "siaga.yaml"),
                             tmp_path / "siaga.log")
    process.start()
    try:
        yield RunningSiaga(process, settings)
    finally:
        process.stop()


def reading(device: Device, ts: int) -> dict[str, object]:
    """A plausible reading of `device`: a gauge within its normal range (FLOODED at Siaga 3),
    Jakarta's typical PM, a congested arterial road."""
    if device.kind is Kind.WATER_LEVEL:
        low = device.thresholds.get("normal_low_cm", 0.0)
        high = device.thresholds.get("normal_high_cm", low)
        level = device.thresholds["siaga3_cm"] if device.id == FLOODED else (low + high) / 2
        return {"ts": ts, "level_cm": level}
    if device.kind is Kind.AIR_QUALITY:
        return {"ts": ts, "pm25": 42.0, "pm10": 61.0}
    return {"ts": ts, "speed_kmh": 23.0, "volume_vph": 2400.0}


def publish_city(mosquitto: Mosquitto, siaga: RunningSiaga) -> int:
    """READINGS_EACH readings of every gauge, air monitor and traffic sensor of the bundled
    catalog, the last one now, and one message that is not JSON (a dead letter); returns
    how many readings were published, once the broker has taken them all."""
    topics = TopicScheme(siaga.settings.mqtt.topic_prefix)
    registry = load_catalog(bundled_catalog_path())
    now = int(time.time())
    publisher = Publisher(mosquitto)
    try:
        sent = 0
        for kind in (Kind.WATER_LEVEL, Kind.AIR_QUALITY, Kind.TRAFFIC):
            for device in registry.by_kind(kind):
                for minutes_ago in range(READINGS_EACH - 1, -1, -1):
                    publisher.publish(topics.telemetry(kind, device.id),
                                      reading(device, now - 60 * minutes_ago))
                    sent += 1
        publisher.publish(topics.telemetry(Kind.WATER_LEVEL, FLOODED), b"{not json")
        publisher.wait_acked(sent + 1)
    finally:
        publisher.close()
    return sent


def wait_stored(influx: InfluxDB1, siaga: RunningSiaga) -> None:
    """Until each kind's readings are in InfluxDB."""
    def all_stored() -> bool:
        return all(influx_count(influx, siaga.database, measurement, field)
                   for measurement, field in MEASURED)

    wait_until(all_stored, STORED_S, f"every kind's readings in InfluxDB {siaga.database}")
