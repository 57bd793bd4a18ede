"""The console of one instance of a cluster shows the whole city's alerts (issue 18).

Two `Alerting`s share one alert book on a real PostgreSQL, as two instances do; the hub is
the first's. The book's listener hears only its own process, so without asking the shared
book the first instance's console never showed an alert the other raised (a review's
reproduction), nor coloured a gauge the other reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.readings import Reading
from rules.alert import fingerprint
from rules.alerting import Alerting, Cluster
from siaga.console.hub import ConsoleHub
from siaga.sandbox.postgres import PostgreSQL
from siaga.settings import ConsoleSettings
from tests.integration.support import unique_name
from tests.siaga.console.hubrig import REGISTRY, Clock, S, load, published

FLOOD = fingerprint("FloodLevel", "pa-manggarai")


@pytest.fixture
def database(postgres: PostgreSQL) -> Iterator[str]:
    name = unique_name("console_")
    yield postgres.create_database(name)
    postgres.drop_database(name)


async def test_an_alert_another_instance_raised_reaches_this_instances_console(
        tmp_path: Path, database: str) -> None:
    clock = Clock()
    rules = load(tmp_path)
    async with AsyncExitStack() as stack:
        here, there = [await stack.enter_async_context(Alerting(
            rules, REGISTRY, tmp_path / name, webhook_url=None,
            external_url="http://siaga.test", clock_ns=clock, cluster=Cluster(database)))
            for name in ("here", "there")]
        settings = ConsoleSettings(tile_url="https://tiles.example/{z}/{x}/{y}.png",
                                   tile_attribution="© tiles")
        hub = ConsoleHub(REGISTRY, here, None, settings, clock_ns=clock, tick_s=0.02)
        await hub._load()
        await hub.tick()  # the first ask only marks where the next one starts
        # The other instance reads the gauge and raises its flood alert (Siaga 1).
        there.observe([Reading(Kind.WATER_LEVEL, gauge, clock.now, {"level_cm": level}, None)
                       for gauge, level in (("pa-manggarai", 990.0), ("pa-karet", 100.0))],
                      [], clock.now)
        assert there.book.get(FLOOD) is not None
        await there._share_seen()  # the board of devices heard: this instance hears it
        await here._check_offline()

        clock.now += 2 * S  # the next ask is due
        await hub.tick()
        assert [event.data["fingerprint"] for event in published(hub, name="alert")] == [FLOOD]
        assert FLOOD in {alert["fingerprint"] for alert in hub.snapshot()["alerts"]}
        # Read by the other instance: coloured by the shared book's alerts, else calm.
        assert (hub.status("pa-manggarai"), hub.status("pa-karet")) == ("siaga-1", "ok")
        assert hub.status("aq-gbk") == "no-data"  # heard by nobody
        # Asked again, unchanged: not published again.
        count = len(published(hub, name="alert"))
        clock.now += 2 * S
        await hub.tick()
        assert len(published(hub, name="alert")) == count
