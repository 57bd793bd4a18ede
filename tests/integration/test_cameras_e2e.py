"""Cameras end to end (issue 16's "done when"): real Mosquitto, real InfluxDB, the service, and
a real webhook receiver. A camera that sees water pages FloodDetected as `warning`; once the
gauge it watches is at Siaga 2 the alert is `critical`; a frozen camera beside that gauge,
and a camera seeing headlight glare far from any gauge, never page as `critical`.

Readings carry event times from 40 minutes ago on, published in time order, every 10 s as
the cameras count; the rules judge event time, so the story takes seconds to play.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import BUNDLED_RULES
from tests.integration.support import (
    Publisher,
    influx_count,
    make_settings,
    running_service,
    unique_name,
)
from tests.polling import eventually
from tests.receiver import RecordingReceiver

START_S = int(time.time()) - 40 * 60
CATALOG = {"devices": [
    {"id": "uji", "kind": "water-level", "name": "Pos Uji", "lat": -6.2000, "lon": 106.8000,
     "thresholds": {"siaga3_cm": 100, "siaga2_cm": 150, "siaga1_cm": 200}},
    # Watching over the gauge: what it sees counts with the gauge.
    {"id": "cam-uji", "kind": "camera", "name": "CCTV Pos Uji", "lat": -6.2001,
     "lon": 106.8001, "watches": "uji", "spot": "Jl. Uji", "zones": ["jalan"]},
    # The same place, but its picture froze while it showed water.
    {"id": "cam-beku", "kind": "camera", "name": "CCTV Beku", "lat": -6.2003, "lon": 106.8002,
     "watches": "uji"},
    # Far from any gauge or resident: headlights on wet-looking asphalt at night.
    {"id": "cam-silau", "kind": "camera", "name": "CCTV Silau", "lat": -6.3500,
     "lon": 106.9500},
]}


def rules(tmp_path: Path) -> Path:
    """The bundled rules, paging changes up to 30 days old (the story is 40 minutes old)."""
    path = tmp_path / "rules.yaml"
    path.write_text(BUNDLED_RULES.read_text(encoding="utf-8")
                    .replace("page_max_age: 15m", "page_max_age: 30d"), encoding="utf-8")
    return path


def story(prefix: str) -> Iterator[tuple[float, str, dict[str, Any]]]:
    """(event time, topic, payload): 14 minutes of three cameras and the gauge."""
    for step in range(14 * 6 + 1):  # every 10 s
        at = START_S + step * 10
        moving = 10 + step % 7  # a live picture: the counts change
        yield at, f"{prefix}/camera/cam-uji/telemetry", {
            "ts": at, "water_score": 0.9, "vehicles_per_min": moving,
            "mean_speed_kmh": 8 + step % 3}
        yield at, f"{prefix}/camera/cam-silau/telemetry", {
            "ts": at, "water_score": 0.92, "vehicles_per_min": moving + 3, "people": step % 4}
        # The same counts every time: a frozen picture of water.
        yield at, f"{prefix}/camera/cam-beku/telemetry", {
            "ts": at, "water_score": 0.9, "vehicles_per_min": 12, "mean_speed_kmh": 21.5}
        if step % 6 == 0:  # the gauge reports each minute: normal, then Siaga 2 at minute 12
            level = 160 if step >= 12 * 6 else 60
            yield at, f"{prefix}/water-level/uji/telemetry", {"ts": at, "level_cm": level}


def pages(receiver: RecordingReceiver, device: str) -> list[tuple[str, str]]:
    """(status, severity) of each notification about FloodDetected on `device`, in order."""
    found = []
    for delivery in receiver.delivered():
        for alert in delivery.json.get("alerts", []):
            labels = alert.get("labels", {})
            if labels.get("alertname") == "FloodDetected" and labels.get("device_id") == device:
                found.append((alert["status"], labels["severity"]))
    return found


async def test_water_seen_pages_warning_critical_with_its_gauge_never_from_a_camera_alone(
        mosquitto: Mosquitto, influxdb1: InfluxDB1, receiver: RecordingReceiver,
        tmp_path: Path) -> None:
    catalog = tmp_path / "devices.yaml"
    catalog.write_bytes(orjson.dumps(CATALOG))
    database = unique_name("cameras_")
    settings = make_settings(mosquitto.url, InfluxSettings(url=influxdb1.url, database=database),
                             tmp_path / "data", catalog=catalog, rules=rules(tmp_path))
    settings = settings.model_copy(update={"webhook_url": receiver.url})
    prefix = settings.mqtt.topic_prefix
    messages = sorted(story(prefix), key=lambda item: item[0])
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        try:
            sent = publisher.publish_all((topic, payload) for _, topic, payload in messages)
            publisher.wait_acked(sent)
            await eventually(lambda: service.stats.readings >= sent, 30, "every reading taken")
            alerting = service.alerting
            assert alerting is not None

            def critical_paged() -> bool:
                return ("firing", "critical") in pages(receiver, "cam-uji")

            await eventually(lambda: critical_paged() and alerting.outbox.pending_count() == 0,
                             30, "cam-uji's FloodDetected paged as critical")
        finally:
            publisher.close()
    camera_rows = influx_count(influxdb1, database, "camera", "water_score")
    assert camera_rows == sum(1 for _, topic, _ in messages if "/camera/" in topic)
    watched = pages(receiver, "cam-uji")
    assert watched[0] == ("firing", "warning")  # water seen, the gauge normal
    assert ("firing", "critical") in watched  # the gauge at Siaga 2 corroborates it
    for alone in ("cam-beku", "cam-silau"):
        seen = pages(receiver, alone)
        assert seen and seen[0] == ("firing", "warning"), (alone, seen)
        assert all(severity != "critical" for _, severity in seen), (alone, seen)
