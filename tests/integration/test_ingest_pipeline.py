"""End to end through real Mosquitto and real InfluxDB 1.6.7 / VictoriaMetrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.deadletters import DeadLetterStore
from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1, VictoriaMetrics
from siaga.sandbox.mosquitto import Mosquitto
from tests.integration.support import (
    Publisher,
    influx_count,
    influx_rows,
    make_settings,
    running_service,
    unique_name,
)
from tests.polling import eventually

TS = 1_700_000_000  # a fixed event time (2023-11-14), so points are easy to find

READINGS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "water-level": [("manggarai", {"level_cm": 920.5, "seq": 1, "battery_v": 12.6})],
    "air-quality": [("dki1-bundaran-hi", {"pm25": 61.0, "pm10": 88, "no2": 40.5, "seq": 1})],
    "traffic": [("sudirman", {"speed_kmh": 14.5, "volume_vph": 2400, "occupancy_pct": 38})],
}


def _v1(influx: InfluxDB1) -> tuple[InfluxSettings, str]:
    database = unique_name("siaga_")
    return InfluxSettings(api="v1", url=influx.url, database=database), database


def _catalog_device(service_registry: Any, kind: str) -> str:
    return next(device.id for device in service_registry if str(device.kind) == kind)


async def test_readings_of_every_kind_single_and_batched_land_in_influxdb_v1(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path)
    async with running_service(settings) as service:
        registry = service.registry
        gauge = registry.get("manggarai")
        assert gauge is not None
        air = _catalog_device(registry, "air-quality")
        road = _catalog_device(registry, "traffic")
        prefix = settings.mqtt.topic_prefix
        publisher = Publisher(mosquitto)
        publisher.publish(f"{prefix}/water-level/manggarai/telemetry",
                          {"ts": TS, "seq": 1, "level_cm": 920.5, "battery_v": 12.6})
        levels = [{"ts": TS + 60 * i, "seq": 2 + i, "level_cm": 700 + i} for i in range(1, 6)]
        publisher.publish(f"{prefix}/water-level/manggarai/telemetry", levels)
        publisher.publish(f"{prefix}/air-quality/{air}/telemetry",
                          {"ts": "2023-11-14T22:13:20Z", "pm25": 61.0, "pm10": 88, "no2": 40.5})
        publisher.publish(f"{prefix}/traffic/{road}/telemetry",
                          [{"ts": TS, "speed_kmh": 14.5, "volume_vph": 2400, "occupancy_pct": 38},
                           {"ts": TS + 1.5, "speed_kmh": 16}])
        await eventually(lambda: publisher.acked >= 4)

        def stored() -> bool:
            return (influx_count(influxdb1, database, "water_level", "level_cm") == 6
                    and influx_count(influxdb1, database, "air_quality", "pm25") == 1
                    and influx_count(influxdb1, database, "traffic", "speed_kmh") == 2)

        await eventually(stored)
        publisher.close()

    rows = influx_rows(influxdb1, database,
                       f"SELECT * FROM water_level WHERE time = {TS}000000000")
    assert rows == [{
        "time": "2023-11-14T22:13:20Z", "device_id": "manggarai", **gauge.labels,
        "level_cm": 920.5, "battery_v": 12.6, "seq": 1,
    }]
    air_rows = influx_rows(influxdb1, database, "SELECT * FROM air_quality")
    assert _subset(air_rows[0], {"device_id": air, "pm25": 61.0, "pm10": 88.0, "no2": 40.5,
                                 "time": "2023-11-14T22:13:20Z"})
    traffic = influx_rows(influxdb1, database, "SELECT * FROM traffic")
    assert [row["speed_kmh"] for row in traffic] == [14.5, 16.0]
    assert traffic[1]["time"] == "2023-11-14T22:13:21.5Z"
    assert service.stats.dead_lettered == 0


def _subset(row: dict[str, Any], expected: dict[str, Any]) -> bool:
    missing = {k: (row.get(k), v) for k, v in expected.items() if row.get(k) != v}
    assert not missing, f"differences (got, expected): {missing}"
    return True


async def test_readings_land_through_the_v2_api_on_victoriametrics(
    mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    bucket = unique_name("b")
    influx = InfluxSettings(api="v2", url=victoria.url, org="siaga", bucket=bucket)
    settings = make_settings(mosquitto.url, influx, tmp_path)
    async with running_service(settings) as service:
        prefix = settings.mqtt.topic_prefix
        publisher = Publisher(mosquitto)
        publisher.publish(f"{prefix}/water-level/karet/telemetry",
                          [{"ts": TS + i, "seq": i, "level_cm": 480.0 + i} for i in range(3)])
        publisher.publish(f"{prefix}/traffic/{_catalog_device(service.registry, 'traffic')}"
                          "/telemetry", {"ts": TS, "speed_kmh": 21.0})
        await eventually(lambda: publisher.acked >= 2)

        def exported() -> list[dict[str, Any]]:
            return victoria.export('{__name__="water_level_level_cm",device_id="karet"}')

        await eventually(lambda: sum(len(s["values"]) for s in exported()) == 3)
        publisher.close()
    series = exported()
    karet = service.registry.get("karet")
    assert karet is not None
    assert len(series) == 1
    labels = {k: v for k, v in series[0]["metric"].items() if k not in ("__name__", "db")}
    assert labels == {"device_id": "karet", **karet.labels}
    assert series[0]["values"] == [480.0, 481.0, 482.0]
    assert series[0]["timestamps"] == [(TS + i) * 1000 for i in range(3)]


async def test_a_mixed_batch_stores_the_valid_readings_and_dead_letters_the_rest(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path)
    batch = [
        {"ts": TS, "seq": 0, "level_cm": 610},
        {"ts": TS + 1, "seq": 1, "level_cm": "610"},
        {"ts": TS + 2, "seq": 2, "level_cm": 5000},
        {"ts": TS + 3, "seq": 3, "level_cm": 612, "firmware": "1.2"},
        {"ts": TS + 4, "seq": -4, "level_cm": 613},
        {"ts": TS + 5, "seq": 5},
    ]
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        publisher.publish(f"{settings.mqtt.topic_prefix}/water-level/karet/telemetry", batch)
        await eventually(lambda: publisher.acked >= 1)
        await eventually(lambda: service.stats.dead_lettered == 4)
        publisher.close()
    assert [row["seq"] for row in influx_rows(influxdb1, database, "SELECT * FROM water_level")] \
        == [0, 3]
    with DeadLetterStore(tmp_path / "deadletters.sqlite") as store:
        letters = sorted(store.recent(limit=10), key=lambda letter: letter.reason)
    reasons = [letter.reason for letter in letters]
    assert [reason.split(":")[0] for reason in reasons] == ["item 1", "item 2", "item 4", "item 5"]
    assert "level_cm" in reasons[0] and "level_cm" in reasons[1] and "5000" in reasons[1]
    assert "seq" in reasons[2] and "level_cm" in reasons[3]
    assert {letter.code for letter in letters} == {"invalid-reading"}
    assert service.stats.ignored_fields == {("karet", "firmware"): 1}


async def test_label_values_that_break_naive_line_protocol_round_trip_exactly(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    labels = {
        "kota": 'Jakarta Selatan, "Tebet"',
        "river": "Kali=Ciliwung Lama\\hilir",
        "note": "air naik 💧 çà, a=b,c d",
        "quote": "it's \"quoted\"",
    }
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "devices:\n"
        "  - id: tricky-gauge\n"
        "    kind: water-level\n"
        "    name: Tricky\n"
        "    lat: -6.2\n"
        "    lon: 106.8\n"
        "    labels:\n"
        + "".join(f"      {key}: {_yaml_string(value)}\n" for key, value in labels.items()),
        encoding="utf-8",
    )
    no_rules = tmp_path / "rules.yaml"
    no_rules.write_text("rules: []\n", encoding="utf-8")  # the bundled rules name Jakarta gauges
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path, catalog=catalog, rules=no_rules)
    async with running_service(settings):
        publisher = Publisher(mosquitto)
        publisher.publish(f"{settings.mqtt.topic_prefix}/water-level/tricky-gauge/telemetry",
                          {"ts": TS, "level_cm": 1.5})
        await eventually(lambda: publisher.acked >= 1)
        await eventually(lambda: influx_count(influxdb1, database, "water_level", "level_cm") == 1)
        publisher.close()
    rows = influx_rows(influxdb1, database, "SELECT * FROM water_level")
    assert rows == [{"time": "2023-11-14T22:13:20Z", "device_id": "tricky-gauge", **labels,
                     "level_cm": 1.5}]


def _yaml_string(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)  # JSON strings are valid YAML scalars


@pytest.mark.parametrize("policy", ["dead-letter", "accept"])
async def test_unknown_devices_follow_the_configured_policy(
    policy: str, mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path, unknown_devices=policy)
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        publisher.publish(f"{settings.mqtt.topic_prefix}/water-level/not-in-catalog/telemetry",
                          {"ts": TS, "level_cm": 10})
        await eventually(lambda: publisher.acked >= 1)
        await eventually(lambda: service.stats.flushes >= 1)
        publisher.close()
    stored = influx_rows(influxdb1, database, "SELECT * FROM water_level")
    if policy == "accept":
        assert stored == [{"time": "2023-11-14T22:13:20Z", "device_id": "not-in-catalog",
                           "level_cm": 10.0}]
        assert service.stats.dead_lettered == 0
    else:
        assert stored == []
        assert service.stats.dead_letters == {"unknown-device": 1}


async def test_an_idle_writer_takes_a_batch_after_the_linger_not_the_interval(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    # A one-minute interval and a batch far from full: only the linger can write it soon.
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path, batch_size=20000,
                             flush_interval_s=60, linger_s=0.05)
    async with running_service(settings):
        publisher = Publisher(mosquitto)
        publisher.publish(f"{settings.mqtt.topic_prefix}/water-level/manggarai/telemetry",
                          {"ts": TS, "seq": 1, "level_cm": 700.0})
        await eventually(
            lambda: influx_count(influxdb1, database, "water_level", "level_cm") == 1,
            within=10.0)
        publisher.close()
