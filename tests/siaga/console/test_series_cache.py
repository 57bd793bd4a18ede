"""The InfluxDB reader's cache against a stand-in InfluxDB on loopback: what a past moment
costs it, how long it keeps an answer, and that no number of moments asked for makes it
hold more than its cap (an unauthenticated page may ask for any moment)."""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from devices.kinds import Kind
from ingest.settings import InfluxSettings
from siaga.console import series
from siaga.console.history import FIELDS, READINGS_WINDOW_NS
from siaga.console.series import CACHE_S, InfluxReader
from tests.siaga.apirig import World, open_world
from tests.siaga.console.test_series import serving_console

S = 1_000_000_000
MINUTE = 60 * S
T = 1_577_836_800 * S  # 2020-01-01T00:00:00Z, 07:00 WIB
FLEET = 500  # devices in every answer: enough for an answer to weigh something
MIB = 1024 * 1024


class StandInInflux:
    """Answers every query with FLEET gauges' latest points, and notes what it was asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.body = orjson.dumps({"results": [{"statement_id": 0, "series": [
            {"name": "water_level", "tags": {"device_id": f"gauge-{n:05d}"},
             "columns": ["time", "level_cm"], "values": [[T // 1_000_000 - n, 100.0 + n]]}
            for n in range(FLEET)]}]})

    async def query(self, request: web.Request) -> web.Response:
        self.queries.append(request.query["q"])
        return web.Response(body=self.body, content_type="application/json")


@contextlib.asynccontextmanager
async def stand_in() -> AsyncIterator[tuple[StandInInflux, InfluxSettings]]:
    influx = StandInInflux()
    app = web.Application()
    app.router.add_get("/query", influx.query)
    async with TestServer(app, host="127.0.0.1") as server:
        yield influx, InfluxSettings(url=str(server.make_url("")))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        opened.clock.now_ns = T + 24 * 60 * MINUTE  # the console looks back a day later
        yield opened


async def latest_at(reader: InfluxReader, at_ns: int) -> None:
    """What the history of moment `at_ns` asks of one kind."""
    await reader.last_points(Kind.WATER_LEVEL, FIELDS[Kind.WATER_LEVEL],
                             at_ns - READINGS_WINDOW_NS, at_ns)


async def test_moments_within_one_minute_are_one_moment_and_one_query(world: World) -> None:
    async with (stand_in() as (influx, settings), InfluxReader(settings) as reader,
                serving_console(world, reader) as api):
        first = await api.get("/console/api/history", at="2020-01-01T07:00:10.123456+07:00")
        asked = len(influx.queries)
        second = await api.get("/console/api/history", at="2020-01-01T07:00:59.999999+07:00")
    assert (first.status, second.status) == (200, 200), (first.body, second.body)
    assert first.body["at"] == second.body["at"] == "2020-01-01T00:00:00.000Z"
    assert asked > 0
    assert len(influx.queries) == asked  # the second moment was the first's: from the cache


async def test_expired_answers_leave_the_cache_when_the_next_is_kept() -> None:
    now = [0.0]
    async with (stand_in() as (_, settings),
                InfluxReader(settings, clock=lambda: now[0]) as reader):
        for n in range(30):
            await latest_at(reader, T - n * MINUTE)
            now[0] += CACHE_S + 1  # two minutes on: every answer kept so far has expired
        answers, _ = reader.cached
    assert answers == 1  # the last one only


async def test_however_many_moments_are_asked_the_cache_stays_within_its_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The real cap shrunk, so a few answers fill it; each is some 64 KiB of JSON.
    monkeypatch.setattr(series, "CACHE_BYTES", 1 * MIB)
    async with (stand_in() as (influx, settings),
                InfluxReader(settings, clock=lambda: 0.0) as reader):
        await latest_at(reader, T)  # the connection's own buffers, before measuring
        gc.collect()
        tracemalloc.start()
        try:
            for n in range(1, 60):  # 60 moments within the same minute of the clock
                await latest_at(reader, T - n * MINUTE)
            gc.collect()
            retained, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        answers, size = reader.cached
    assert len(influx.queries) == 60
    assert size <= series.CACHE_BYTES
    assert answers == series.CACHE_BYTES // (len(influx.body) + len(influx.queries[0]))
    # Parsed answers take about six times their JSON; 60 kept would be over 20 MiB.
    assert retained < 10 * MIB, f"{retained / MIB:.1f} MiB retained"
