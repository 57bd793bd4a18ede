"""The map of a past moment over real HTTP, from a real alert book, a real InfluxDB 1.6.7 and a
real report book: statuses, alerts and reports as they were at T, and what later changed not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest.influx import V1Writer
from ingest.lineprotocol import encode
from ingest.settings import InfluxSettings
from rules.alert import Alert, Severity, Signal, Timing, step
from rules.ispu import ispu
from siaga.citizens import CitizenDesk
from siaga.console.series import InfluxReader
from siaga.sandbox.influxdb import InfluxDB1
from tests.integration.support import unique_name
from tests.siaga.apirig import World, open_world
from tests.siaga.console.test_series import serving_console
from tests.siaga.reportrig import MONAS, open_desk

S = 1_000_000_000
MINUTE = 60 * S
HOUR = 60 * MINUTE
T = 1_577_836_800 * S  # 2020-01-01T00:00:00Z, 07:00 WIB
AT = "2020-01-01T07:00:00+07:00"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        opened.clock.now_ns = T + 24 * HOUR  # the console looks back a day later
        yield opened


@pytest.fixture
def desk(world: World, tmp_path: Path) -> Iterator[CitizenDesk]:
    with open_desk(world, tmp_path / "reports") as opened:
        yield opened


@dataclass
class Past:
    """The answer of /console/api/history at T, by device id and by alert name."""

    body: dict[str, Any]

    def status(self, device_id: str) -> str:
        return str(self.device(device_id)["status"])

    def device(self, device_id: str) -> dict[str, Any]:
        return next(d for d in self.body["devices"] if d["id"] == device_id)

    def alerts(self) -> list[tuple[str, str]]:
        return sorted((a["rule"], a["subject"]) for a in self.body["alerts"])


def alert(world: World, rule: str, device_id: str, at_ns: int, active: bool = True,
          previous: Alert | None = None, **labels: str) -> Alert:
    """A signal of `rule` on a device at event time `at_ns`, applied to the book."""
    signal = Signal(rule, device_id, active, at_ns, Severity.WARNING,
                    {"alertname": rule, "severity": "warning", "device_id": device_id}
                    | labels, {"summary": f"{rule} {device_id} {labels}"})
    record, transition = step(previous, signal, Timing())
    assert record is not None and transition is not None
    world.book.apply(transition, world.clock.now_ns)
    return record


def level(device_id: str, cm: float, ts_ns: int) -> str:
    return encode("water_level", {"device_id": device_id}, {"level_cm": cm}, None, ts_ns)


@pytest.fixture
async def influx_db(influxdb1: InfluxDB1) -> AsyncIterator[InfluxSettings]:
    """A fresh database holding the readings around T."""
    database = unique_name("history_")
    lines = [
        level("manggarai", 800, T - 10 * MINUTE),  # siaga-3 by threshold; a siaga-1 alert fires
        level("manggarai", 1000, T + 5 * MINUTE),  # after T: not seen at T
        level("depok", 100, T - 20 * MINUTE),
        level("karet", 500, T - 3 * HOUR),  # hourly gauge silent for 3 h: offline
        level("pulo-gadung", 400, T - 5 * MINUTE),  # fresh, but a DeviceOffline fires
        level("krukut-hulu", 120, T - 5 * MINUTE),  # its flood alert resolved before T
        encode("air_quality", {"device_id": "dki1-bundaran-hi"}, {"pm25": 200.0, "pm10": 90.0},
               None, T - 10 * MINUTE),
        encode("traffic", {"device_id": "sudirman-setiabudi"}, {"speed_kmh": 9.0}, None,
               T - 2 * MINUTE),
    ]
    async with V1Writer(influxdb1.url, database) as writer:
        await writer.write("\n".join(lines).encode())
    yield InfluxSettings(url=influxdb1.url, database=database)


async def ask(world: World, settings: InfluxSettings | None, *,
              desk: CitizenDesk | None = None, at: str | None = None) -> tuple[int, Any]:
    params = {} if at is None else {"at": at}
    async with (InfluxReader(settings or InfluxSettings()) as reader,
                serving_console(world, reader if settings else None, desk=desk) as api):
        answer = await api.get("/console/api/history", **params)
    return answer.status, answer.body


@pytest.fixture
def past_alerts(world: World) -> None:
    alert(world, "FloodLevel", "manggarai", T - 30 * MINUTE, level="siaga-1")
    alert(world, "DeviceOffline", "pulo-gadung", T - 15 * MINUTE)
    alert(world, "Congestion", "sudirman-setiabudi", T - 20 * MINUTE)
    krukut = alert(world, "FloodLevel", "krukut-hulu", T - 2 * HOUR, level="siaga-2")
    alert(world, "FloodLevel", "krukut-hulu", T - HOUR, active=False, previous=krukut,
          level="siaga-2")
    alert(world, "FloodLevel", "depok", T + 10 * MINUTE, level="siaga-3")  # after T


async def test_statuses_are_those_of_the_moment(
    world: World, influx_db: InfluxSettings, past_alerts: None
) -> None:
    status, body = await ask(world, influx_db, at=AT)
    assert status == 200, body
    past = Past(body)
    assert past.status("manggarai") == "siaga-1"  # the firing ladder alert's level wins
    assert past.device("manggarai")["value"] == {"field": "level_cm", "v": 800.0}
    assert past.device("manggarai")["ts"] == "2019-12-31T23:50:00.000Z"
    assert past.status("depok") == "ok"  # its alert came after T
    assert past.status("krukut-hulu") == "ok"  # its alert had resolved
    assert past.status("karet") == "offline"  # silent beyond twice its interval
    assert past.status("katulampa") == "offline"  # nothing within six hours
    assert past.status("pulo-gadung") == "offline"  # a DeviceOffline alert was active
    assert past.status("sudirman-setiabudi") == "congested"
    expected_air = ispu({"pm25": 200.0, "pm10": 90.0}).category.value
    assert past.status("dki1-bundaran-hi") == expected_air
    assert past.device("dki1-bundaran-hi")["value"] == {"field": "pm25", "v": 200.0}


async def test_alerts_are_those_active_at_the_moment(
    world: World, influx_db: InfluxSettings, past_alerts: None
) -> None:
    _, body = await ask(world, influx_db, at=AT)
    past = Past(body)
    assert past.alerts() == [("Congestion", "sudirman-setiabudi"),
                             ("DeviceOffline", "pulo-gadung"), ("FloodLevel", "manggarai")]
    flood = next(a for a in body["alerts"] if a["subject"] == "manggarai")
    assert (flood["status"], flood["labels"]["level"]) == ("firing", "siaga-1")
    assert body["at"] == "2020-01-01T00:00:00.000Z"
    assert body["now"] == "2020-01-02T00:00:00.000Z"
    assert set(body) == {"at", "now", "config", "devices", "alerts", "reports"}


async def test_an_area_offline_alert_greys_the_devices_it_named(
    world: World, influx_db: InfluxSettings
) -> None:
    signal = Signal("AreaOffline", "river=Ciliwung", True, T - MINUTE, Severity.MAJOR,
                    {"alertname": "AreaOffline", "severity": "major", "area": "river=Ciliwung",
                     "river": "Ciliwung"},
                    {"summary": "2 of 3", "devices": "manggarai, depok"})
    _, transition = step(None, signal, Timing())
    assert transition is not None
    world.book.apply(transition)
    _, body = await ask(world, influx_db, at=AT)
    past = Past(body)
    assert (past.status("manggarai"), past.status("depok")) == ("offline", "offline")


async def test_reports_are_those_made_in_the_day_before(
    world: World, influx_db: InfluxSettings, desk: CitizenDesk
) -> None:
    key = await desk.api_key(desk.book.add_key("qlue"))
    made = {}
    for name, at_ns in {"before": T - 30 * HOUR, "within": T - 2 * HOUR,
                        "after": T + HOUR}.items():
        world.clock.now_ns = at_ns
        fields = [("service_code", "banjir"), ("lat", str(MONAS[0])),
                  ("long", str(MONAS[1])), ("description", f"banjir {name}")]
        made[name] = (await desk.submit(fields, None, key)).report.id
    world.clock.now_ns = T + 24 * HOUR
    _, body = await ask(world, influx_db, desk=desk, at=AT)
    assert [r["id"] for r in body["reports"]] == [made["within"]]
    assert body["reports"][0]["description"] == "banjir within"


@pytest.mark.parametrize(("at", "words"), [
    (None, "at is required"),
    ("kemarin", "at must be RFC 3339"),
    ("2020-01-03T00:00:00Z", "must not be after now"),
])
async def test_a_moment_that_cannot_be_shown_says_what_to_fix(
    world: World, at: str | None, words: str
) -> None:
    status, body = await ask(world, InfluxSettings(url="http://127.0.0.1:9"), at=at)
    assert (status, words in body["error"]) == (400, True), body


async def test_without_a_query_api_history_is_501(world: World) -> None:
    status, body = await ask(world, None, at=AT)
    assert status == 501
    assert "influx.api: v1" in body["error"]
