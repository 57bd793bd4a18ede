"""The console's chart endpoint without a database: its queries, their quoting, and the answers
it gives before asking InfluxDB (400 for a bad request, 404 for an unknown device, 501 without a
query API). With a real InfluxDB: test_series_influx.py."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from devices.registry import Registry, bundled_catalog_path, load_catalog
from ingest.settings import InfluxSettings
from rules.config import RulesFile, load_rules
from siaga.api.context import CONTEXT, errors_as_json
from siaga.citizens import CitizenDesk
from siaga.console import basemap, history, series
from siaga.console.context import CONSOLE, ConsoleContext
from siaga.console.series import (
    InfluxReader,
    last_query,
    make_reader,
    means_query,
    quote_identifier,
    quote_string,
)
from siaga.settings import ConsoleSettings
from tests.rules.books import DEFAULT_RULES
from tests.siaga.apirig import Api, World, open_world

# The whole bundled catalog and rules: the rivers, kota and kinds the console draws.
REGISTRY = load_catalog(bundled_catalog_path())
RULES = load_rules(DEFAULT_RULES, REGISTRY)


@contextlib.asynccontextmanager
async def serving_console(world: World, reader: InfluxReader | None, *,
                          registry: Registry = REGISTRY, rules: RulesFile = RULES,
                          desk: CitizenDesk | None = None) -> AsyncIterator[Api]:
    """The series, history and base-map routes on 127.0.0.1 behind the API's error middleware,
    with the world's stores and the given catalog, as `mount` would put them."""
    app = web.Application(middlewares=[errors_as_json])
    app[CONTEXT] = dataclasses.replace(world.context(), registry=registry, desk=desk)
    # The hub is not read by these handlers, and a real one needs the whole pipeline
    # (alerting, desk); test_hub and the browser tests run it.
    app[CONSOLE] = ConsoleContext(ConsoleSettings(), None, rules, reader)  # type: ignore[arg-type]
    app.add_routes([*series.routes(), *history.routes(), *basemap.routes()])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(session, f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        yield opened


def test_identifiers_and_strings_are_quoted_with_their_escapes() -> None:
    assert quote_identifier('we"ird\\m') == '"we\\"ird\\\\m"'
    assert quote_string("x' OR '1'='1") == "'x\\' OR \\'1\\'=\\'1'"
    assert quote_string("a\\") == "'a\\\\'"


def test_the_chart_query_is_five_minute_means_of_one_device() -> None:
    assert means_query("water_level", "level_cm", "manggarai", 10, 20) == (
        "SELECT mean(\"level_cm\") FROM \"water_level\" WHERE \"device_id\" = 'manggarai'"
        " AND time >= 10 AND time <= 20 GROUP BY time(5m) fill(none)")


def test_a_quote_in_a_device_id_stays_inside_the_string() -> None:
    query = means_query("water_level", "level_cm", "a' OR device_id =~ /.*/ --", 10, 20)
    assert "WHERE \"device_id\" = 'a\\' OR device_id =~ /.*/ --' AND" in query


def test_the_latest_points_query_takes_one_point_per_device() -> None:
    assert last_query("air_quality", ["pm25", "pm10"], 10, 20) == (
        "SELECT \"pm25\", \"pm10\" FROM \"air_quality\" WHERE time > 10 AND time <= 20"
        " GROUP BY \"device_id\" ORDER BY time DESC LIMIT 1")


def test_only_the_v1_api_gets_a_reader() -> None:
    assert isinstance(make_reader(InfluxSettings(api="v1")), InfluxReader)
    assert make_reader(InfluxSettings(api="v2")) is None


async def test_without_a_query_api_the_chart_is_501(world: World) -> None:
    async with serving_console(world, None) as api:
        answer = await api.get("/console/api/devices/manggarai/series")
    assert answer.status == 501
    assert "influx.api: v1" in answer.body["error"]


@pytest.mark.parametrize(("path", "status", "words"), [
    ("/console/api/devices/nowhere/series", 404, "no device 'nowhere'"),
    ("/console/api/devices/Bad%20Id/series", 400, "lowercase letters"),
    ("/console/api/devices/manggarai/series?hours=0", 400, "hours must be"),
    ("/console/api/devices/manggarai/series?hours=169", 400, "from 1 to 168"),
    ("/console/api/devices/manggarai/series?hours=x", 400, "hours must be"),
    ("/console/api/devices/manggarai/series?at=yesterday", 400, "at must be RFC 3339"),
    ("/console/api/devices/manggarai/series?at=2020-01-01T06:00:00", 400, "with an offset"),
])
async def test_a_request_that_cannot_be_answered_says_what_to_fix(
    world: World, path: str, status: int, words: str
) -> None:
    async with (InfluxReader(InfluxSettings(url="http://127.0.0.1:9")) as reader,
                serving_console(world, reader) as api):
        answer = await api.get(path)
    assert (answer.status, words in answer.body["error"]) == (status, True), answer.body


async def test_an_unreachable_influxdb_is_503(world: World) -> None:
    async with (InfluxReader(InfluxSettings(url="http://127.0.0.1:9", timeout_s=2)) as reader,
                serving_console(world, reader) as api):
        answer = await api.get("/console/api/devices/manggarai/series")
    assert answer.status == 503
    assert "did not answer" in answer.body["error"]
