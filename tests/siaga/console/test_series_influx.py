"""The console's reader against a real InfluxDB 1.6.7: 5-minute means, each device's latest
point, quoting that holds in the server's own parser, the cache, and a database not made yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.kinds import Kind
from ingest.influx import V1Writer
from ingest.lineprotocol import encode
from ingest.settings import InfluxSettings
from siaga.console.series import InfluxReader, LastPoint, means_query
from siaga.sandbox.influxdb import InfluxDB1
from tests.integration.support import unique_name
from tests.siaga.apirig import World, open_world
from tests.siaga.console.test_series import serving_console

S = 1_000_000_000
MINUTE = 60 * S
T = 1_577_836_800 * S  # 2020-01-01T00:00:00Z
T_MS = T // 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        yield opened


async def write(influx: InfluxDB1, database: str, lines: list[str]) -> None:
    async with V1Writer(influx.url, database) as writer:
        await writer.write("\n".join(lines).encode())


def level(device_id: str, cm: float, ts_ns: int) -> str:
    return encode("water_level", {"device_id": device_id, "river": "Ciliwung"},
                  {"level_cm": cm}, None, ts_ns)


def settings(influx: InfluxDB1, database: str) -> InfluxSettings:
    return InfluxSettings(url=influx.url, database=database)


async def test_the_chart_is_five_minute_means_of_the_device_alone(
    influxdb1: InfluxDB1, world: World
) -> None:
    database = unique_name("series_")
    await write(influxdb1, database, [
        level("manggarai", 700, T), level("manggarai", 710, T + 2 * MINUTE),
        level("manggarai", 760, T + 6 * MINUTE), level("depok", 100, T + MINUTE),
        level("manggarai", 999, T + 2 * 3600 * S),  # after `at`: not in the window
    ])
    async with (InfluxReader(settings(influxdb1, database)) as reader,
                serving_console(world, reader) as api):
        answer = await api.get("/console/api/devices/manggarai/series", hours="1",
                               at="2020-01-01T07:10:00+07:00")
    assert answer.status == 200, answer.body
    assert answer.body == {
        "device_id": "manggarai", "field": "level_cm", "unit": "cm",
        "from": "2019-12-31T23:10:00.000Z", "to": "2020-01-01T00:10:00.000Z",
        "points": [[T_MS, 705.0], [T_MS + 5 * 60_000, 760.0]],
    }


async def test_without_at_the_window_ends_now(influxdb1: InfluxDB1, world: World) -> None:
    database = unique_name("series_")
    world.clock.now_ns = T + 30 * S  # the window's end is rounded up to T + 1 minute
    await write(influxdb1, database, [level("manggarai", 700, T - 3600 * S),
                                      level("manggarai", 650, T - 30 * 3600 * S)])
    async with (InfluxReader(settings(influxdb1, database)) as reader,
                serving_console(world, reader) as api):
        answer = await api.get("/console/api/devices/manggarai/series")
    assert answer.body["to"] == "2020-01-01T00:01:00.000Z"
    assert answer.body["points"] == [[T_MS - 3600_000, 700.0]]  # 30 h ago is outside 24 h


async def test_a_quote_in_a_tag_value_is_matched_exactly_and_cannot_widen_the_query(
    influxdb1: InfluxDB1,
) -> None:
    database = unique_name("series_")
    await write(influxdb1, database, [level("o'neil\\x", 1, T), level("other", 2, T)])
    async with InfluxReader(settings(influxdb1, database)) as reader:
        exact = await reader.query(means_query("water_level", "level_cm", "o'neil\\x", T, T))
        widened = await reader.query(
            means_query("water_level", "level_cm", "x' OR device_id =~ /.*/ OR '1'='1", T, T))
    assert [series.values for series in exact] == [[[T_MS, 1.0]]]
    assert widened == []


async def test_each_device_s_latest_point_within_the_window(influxdb1: InfluxDB1) -> None:
    database = unique_name("latest_")
    await write(influxdb1, database, [
        encode("air_quality", {"device_id": "dki1"}, {"pm25": 40.0, "pm10": 60.0}, None, T),
        encode("air_quality", {"device_id": "dki1"}, {"pm25": 80.0}, None, T + MINUTE),
        encode("air_quality", {"device_id": "dki2"}, {"pm10": 20.0}, None, T - 2 * MINUTE),
        encode("air_quality", {"device_id": "dki3"}, {"pm25": 5.0}, None, T - 3600 * S),
        encode("air_quality", {"device_id": "dki1"}, {"pm25": 300.0}, None, T + 9 * MINUTE),
    ])
    async with InfluxReader(settings(influxdb1, database)) as reader:
        found = await reader.last_points(Kind.AIR_QUALITY, ["pm25", "pm10"], T - 30 * MINUTE,
                                         T + 5 * MINUTE)
    assert found == {"dki1": LastPoint(T + MINUTE, {"pm25": 80.0}),
                     "dki2": LastPoint(T - 2 * MINUTE, {"pm10": 20.0})}


async def test_answers_are_kept_a_minute(influxdb1: InfluxDB1) -> None:
    database = unique_name("cache_")
    clock = Clock()
    query = means_query("water_level", "level_cm", "manggarai", T, T + 10 * MINUTE)
    await write(influxdb1, database, [level("manggarai", 700, T)])
    async with InfluxReader(settings(influxdb1, database), clock=clock) as reader:
        first = await reader.query(query)
        await write(influxdb1, database, [level("manggarai", 900, T + 6 * MINUTE)])
        clock.now = 59.0
        kept = await reader.query(query)
        clock.now = 61.0
        fresh = await reader.query(query)
    assert [s.values for s in first] == [s.values for s in kept] == [[[T_MS, 700.0]]]
    assert [s.values for s in fresh] == [[[T_MS, 700.0], [T_MS + 5 * 60_000, 900.0]]]


async def test_a_database_not_made_yet_has_no_readings(influxdb1: InfluxDB1, world: World
                                                       ) -> None:
    async with (InfluxReader(settings(influxdb1, unique_name("absent_"))) as reader,
                serving_console(world, reader) as api):
        answer = await api.get("/console/api/devices/karet/series", at="2020-01-01T00:00:00Z")
    assert (answer.status, answer.body["points"]) == (200, [])


async def test_only_a_select_leaves_the_reader(influxdb1: InfluxDB1) -> None:
    # InfluxDB 1.6.7 runs a DROP sent by GET: the reader itself must refuse it.
    database = unique_name("readonly_")
    await write(influxdb1, database, [level("manggarai", 700, T)])
    async with InfluxReader(settings(influxdb1, database)) as reader:
        for statement in ("DROP MEASUREMENT water_level", "SELECT 1\nDROP DATABASE x"):
            with pytest.raises(ValueError, match="one SELECT only"):
                await reader.query(statement)
        kept = await reader.query(means_query("water_level", "level_cm", "manggarai", T, T))
    assert [series.values for series in kept] == [[[T_MS, 700.0]]]
