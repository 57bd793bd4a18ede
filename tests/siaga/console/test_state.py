"""Tests of `GET /console/api/state` over loopback HTTP: the wire format, what it shows of the
alert and report books at start, its one-second cache, and catching up from its `last_id`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reports.model import State
from siaga.console import state
from tests.polling import eventually
from tests.siaga.console.hubrig import S, Served, SseReader, open_rig, running, serving

GAUGE = "pa-manggarai"
HOUR = 3600 * S
PATH = "/console/api/state"


async def get_state(served: Served) -> tuple[int, dict[str, Any], Any]:
    async with served.session.get(served.url + PATH) as response:
        return response.status, await response.json(), response.headers


async def test_the_state_has_the_wire_formats_fields_and_each_devices_status(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.read(GAUGE, 900)
        async with running(rig), serving(rig) as served:
            status, body, headers = await get_state(served)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "application/json"
    assert set(body) == {"epoch", "last_id", "now", "config", "devices", "alerts", "reports"}
    assert body["last_id"] == rig.hub.last_id and body["last_id"].startswith(body["epoch"] + "-")
    assert body["now"] == "2023-11-14T22:13:20.000Z"
    assert body["config"] == {"tile_url": "https://tiles.example/{z}/{x}/{y}.png",
                              "tile_attribution": "© tiles", "language": "id",
                              "utc_offset": "+07:00"}
    devices = {device["id"]: device for device in body["devices"]}
    assert set(devices) == {"pa-manggarai", "pa-karet", "aq-gbk"}
    assert devices[GAUGE] == {
        "id": GAUGE, "kind": "water-level", "name": "PA-MANGGARAI", "lat": -6.2, "lon": 106.85,
        "labels": {"river": "ciliwung"},
        "thresholds": {"siaga3_cm": 751, "siaga2_cm": 851, "siaga1_cm": 951},
        "status": "siaga-2", "value": {"field": "level_cm", "v": 900},
        "ts": "2023-11-14T22:13:20.000Z", "last_seen": "2023-11-14T22:13:20.000Z"}
    assert devices["aq-gbk"]["status"] == "no-data" and devices["aq-gbk"]["value"] is None
    assert [alert["subject"] for alert in body["alerts"]] == [GAUGE]


async def test_the_state_shows_open_alerts_and_those_resolved_within_a_day(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.read("pa-karet", 990, rig.clock.now - 30 * HOUR)
        rig.read("pa-karet", 700, rig.clock.now - 30 * HOUR + S)  # resolved a day and more ago
        rig.read(GAUGE, 990, rig.clock.now - 2 * HOUR)
        rig.read(GAUGE, 700, rig.clock.now - HOUR)  # resolved an hour ago
        rig.alerting.durability_changed("disk full")  # open
        async with running(rig), serving(rig) as served:
            _, body, _ = await get_state(served)
    shown = {(alert["subject"], alert["status"]) for alert in body["alerts"]}
    assert shown == {(GAUGE, "resolved"), ("storage", "firing")}


async def test_the_state_shows_open_reports_and_those_of_the_last_day(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.clock.now -= 48 * HOUR
        still_open = await rig.report()
        closed_long_ago = await rig.report()
        await rig.desk.update(closed_long_ago.id, State.FIXED, "surut", "budi", None)
        rig.clock.now += 47 * HOUR
        closed_lately = await rig.report()
        await rig.desk.update(closed_lately.id, State.FIXED, "surut", "budi", None)
        rig.clock.now += HOUR
        async with running(rig), serving(rig) as served:
            _, body, _ = await get_state(served)
    shown = {report["id"]: report["state"] for report in body["reports"]}
    assert shown == {still_open.id: "open", closed_lately.id: "fixed"}


async def test_the_state_is_built_at_most_once_a_second(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig), serving(rig) as served:
        _, first, _ = await get_state(served)
        rig.read(GAUGE, 990)
        await eventually(lambda: rig.hub.status(GAUGE) == "siaga-1", what="the tick")
        _, cached, _ = await get_state(served)
        fresh = cached
        async with asyncio.timeout(5):  # asked again and again: built anew within a second
            while fresh["last_id"] == first["last_id"]:
                _, fresh, _ = await get_state(served)
    assert cached == first
    assert {d["id"]: d["status"] for d in fresh["devices"]}[GAUGE] == "siaga-1"


async def test_a_stream_opened_with_the_states_last_id_gets_what_came_in_between(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig), serving(rig) as served:
        _, body, _ = await get_state(served)
        rig.read(GAUGE, 990)
        await eventually(lambda: rig.hub.status(GAUGE) == "siaga-1", what="the tick")
        url = f"{served.url}/console/stream?last_event_id={body['last_id']}"
        async with served.session.get(url) as response:
            events = await SseReader(response).until(
                lambda events: any(event.name == "devices" for event in events))
    assert "reset" not in [event.name for event in events]
    [devices] = [event for event in events if event.name == "devices"]
    assert devices.data[0]["status"] == "siaga-1"


async def test_the_state_is_refused_until_the_hub_has_read_the_books(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LOAD_WAIT_S", 0.05)  # the real 10 s, shortened for the test
    async with open_rig(tmp_path) as rig, serving(rig) as served:  # the hub's loop not started
        status, body, headers = await get_state(served)
    assert (status, headers["Retry-After"]) == (503, "2")
    assert "still reading" in body["error"]
