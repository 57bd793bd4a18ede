"""The simulators against the real service: Mosquitto, InfluxDB, Siaga and a webhook receiver."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from devices.kinds import MEASUREMENTS, Kind
from devices.registry import Registry, bundled_catalog_path, load_catalog
from devices.timestamps import parse_ts
from devices.topics import TopicScheme
from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import BUNDLED_RULES, Settings
from simulators.emission import Emission
from simulators.fleet import FleetConfig
from simulators.runner import placed, playback
from simulators.scenario import load_scenario
from simulators.simulation import Simulation
from tests.integration.support import (
    influx_count,
    influx_rows,
    make_settings,
    running_service,
    simulator_address,
    unique_name,
)
from tests.polling import eventually
from tests.receiver import RecordingReceiver

SEED = 7
FLOOD_PLAYED = timedelta(hours=26)  # to 02:00 on 2 January: Manggarai and Karet at Siaga 1
DAY_PER_SECOND = 86_400.0
INVALID_FAULTS = ("malformed", "unknown-device")  # the faults whose messages Siaga refuses
MAIN_FIELD = {Kind.WATER_LEVEL: "level_cm", Kind.AIR_QUALITY: "pm25",
              Kind.TRAFFIC: "speed_kmh", Kind.CAMERA: "water_score"}
CAMERAS_PLAYED = timedelta(hours=3)  # of normal-day: the glare-prone camera's night


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_catalog(bundled_catalog_path())


def paging_rules(tmp_path: Path) -> Path:
    """The bundled rules, with changes up to two days old paged rather than only recorded.

    The flood is replayed in about a second, ending now, but its crossings of Siaga 3, 2
    and 1 lie hours back in simulated time: with the bundled 15m they would be history
    (only the state when fresh readings arrive is paged). To see every step of the ladder
    the test pages them all.
    """
    text = BUNDLED_RULES.read_text(encoding="utf-8")
    assert "page_max_age: 15m" in text
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace("page_max_age: 15m", "page_max_age: 2d"), encoding="utf-8")
    return path


def service_settings(mosquitto: Mosquitto, influx: InfluxDB1, tmp_path: Path,
                     receiver: RecordingReceiver | None = None) -> Settings:
    settings = make_settings(mosquitto.url, InfluxSettings(url=influx.url,
                             database=unique_name("sim_")), tmp_path / "data")
    if receiver is not None:  # every notification goes to the receiver too
        settings = settings.model_copy(update={"webhook_url": receiver.url,
                                               "rules": paging_rules(tmp_path)})
    return settings


def fleet_config(mosquitto: Mosquitto, settings: Settings, speed: float | None) -> FleetConfig:
    return FleetConfig(simulator_address(mosquitto), settings.mqtt.topic_prefix,
                       speed=speed, client_prefix=unique_name("sim-") + "-")


def flood_levels(receiver: RecordingReceiver, device: str) -> list[str]:
    """The levels of the firing FloodLevel notifications of `device`, in order."""
    return [alert["labels"]["level"]
            for request in receiver.delivered() for alert in request.json["alerts"]
            if alert["labels"]["alertname"] == "FloodLevel" and alert["status"] == "firing"
            and alert["labels"]["device_id"] == device]


async def test_the_2020_new_year_flood_brings_manggarai_and_karet_to_siaga_1(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver,
    registry: Registry
) -> None:
    settings = service_settings(mosquitto, influxdb1, tmp_path, receiver)
    # Placed so the played part ends now: its readings are recent, as alerts expect.
    start = datetime.now(UTC) - FLOOD_PLAYED
    async with running_service(settings, registry):
        fleet = playback(registry, load_scenario("flood-2020-01-01"),
                         fleet_config(mosquitto, settings, DAY_PER_SECOND), seed=SEED,
                         start=start, until=FLOOD_PLAYED)
        summary = await fleet.run()
        assert summary.acknowledged == summary.sent
        await eventually(lambda: "siaga-1" in flood_levels(receiver, "manggarai")
                         and "siaga-1" in flood_levels(receiver, "karet"), 20)
    for gauge in ("manggarai", "karet"):  # the water rose through every step of the ladder
        assert flood_levels(receiver, gauge)[:3] == ["siaga-3", "siaga-2", "siaga-1"]


def valid_points(emissions: Iterator[Emission], topics: TopicScheme) -> dict[Kind, int]:
    """Distinct (device, ts) per kind among the valid readings: duplicates share a point."""
    points: dict[Kind, set[tuple[str, int]]] = defaultdict(set)
    for emission in emissions:
        if emission.fault in INVALID_FAULTS or emission.readings == 0:
            continue
        parsed = topics.parse(emission.topic)
        body: Any = orjson.loads(emission.payload)
        for reading in body if isinstance(body, list) else [body]:
            points[parsed.kind].add((parsed.device_id, parse_ts(reading["ts"])))
    return {kind: len(found) for kind, found in points.items()}


async def test_chaos_is_dead_lettered_or_stored_and_the_service_keeps_running(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, registry: Registry
) -> None:
    settings = service_settings(mosquitto, influxdb1, tmp_path)
    config = fleet_config(mosquitto, settings, DAY_PER_SECOND)
    scenario = load_scenario("chaos")
    async with running_service(settings, registry) as service:
        summary = await playback(registry, scenario, config, seed=SEED).run()
        invalid = summary.sent_with(INVALID_FAULTS)
        assert invalid.messages > 0 and invalid.readings == 0
        assert summary.acknowledged == summary.sent
        # Every camera detection is a point of its own (camera_event), beside the readings.
        points = summary.readings + summary.by_kind()["camera-events"].messages
        await eventually(lambda: service.snapshot()["stored"] >= points
                         and service.stats.dead_lettered >= invalid.messages, 20)
        assert service.snapshot()["stored"] == points
        assert service.stats.dead_lettered == invalid.messages
        assert service.readiness() == []  # still subscribed, storage open, spool empty
    topics = TopicScheme(settings.mqtt.topic_prefix)
    _, start_s, until_s = placed(scenario)
    expected = valid_points(Simulation(registry, scenario, SEED, topics).emissions(
        start_s, until_s), topics)
    stored = {kind: influx_count(influxdb1, settings.influx.database, MEASUREMENTS[kind],
                                 MAIN_FIELD[kind]) for kind in expected}
    assert stored == expected


async def test_cameras_counts_and_detections_are_stored(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, registry: Registry
) -> None:
    settings = service_settings(mosquitto, influxdb1, tmp_path)
    config = fleet_config(mosquitto, settings, DAY_PER_SECOND)
    scenario = load_scenario("normal-day")
    cameras = {device.id for device in registry.by_kind(Kind.CAMERA)}
    async with running_service(settings, registry) as service:
        summary = await playback(registry, scenario, config, seed=SEED,
                                 until=CAMERAS_PLAYED).run()
        assert summary.acknowledged == summary.sent
        counts = summary.by_kind()["camera"].readings
        detections = summary.by_kind()["camera-events"].messages
        assert counts >= len(cameras) * CAMERAS_PLAYED.total_seconds() / 10 - len(cameras)
        assert detections > 0
        await eventually(lambda: service.snapshot()["stored"] >= summary.readings + detections,
                         20)
        assert service.stats.dead_lettered == 0
    database = settings.influx.database
    assert influx_count(influxdb1, database, "camera", "water_score") == counts
    assert influx_count(influxdb1, database, "camera", "vehicles_per_min") == counts
    assert influx_count(influxdb1, database, "camera_event", "score") == detections
    rows = influx_rows(influxdb1, database,
                       'SELECT max("water_score") FROM "camera" GROUP BY "device_id"')
    water = {row["device_id"]: row["max"] for row in rows}
    assert set(water) == cameras
    assert water["cam-underpass-kemayoran"] > 0.8  # headlight glare at night, no water
    assert water["cam-manggarai"] < 0.5  # the river at its normal level
