"""The operator HTTP API's devices, dead letters and deliveries, and the command line's client."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from devices.kinds import Kind
from devices.readings import Reading
from ingest.deadletters import DeadLetter
from siaga.cli.apiclient import (
    ApiClient,
    ApiResponseError,
    ApiUnreachable,
    base_url,
    format_alert,
    format_alerts,
    format_silences,
)
from siaga.sandbox.ports import free_port
from siaga.settings import HttpSettings
from tests.siaga.apirig import (
    T0,
    T0_TEXT,
    TOKEN,
    Api,
    S,
    World,
    fire,
)

# --- devices ------------------------------------------------------------------------------


async def test_devices_show_the_registry_with_last_seen_and_latest(api: Api, world: World) -> None:
    world.seen["pa-manggarai"] = T0 - 30 * S
    world.latest["pa-manggarai"] = Reading(Kind.WATER_LEVEL, "pa-manggarai", T0 - 31 * S,
                                           {"level_cm": 812.0}, 41)
    answer = await api.get("/api/devices")
    assert answer.status == 200
    by_id = {d["id"]: d for d in answer.body["devices"]}
    gauge = by_id["pa-manggarai"]
    assert gauge["registered"] is True and gauge["kind"] == "water-level"
    assert gauge["labels"] == {"river": "ciliwung"} and gauge["thresholds"]["siaga2_cm"] == 851
    assert gauge["last_seen"] == "2023-11-14T22:12:50.000Z" and gauge["last_seen_age_s"] == 30
    assert gauge["latest"] == {"ts": "2023-11-14T22:12:49.000Z", "seq": 41,
                               "values": {"level_cm": 812.0}}
    assert by_id["aq-gbk"]["last_seen"] is None and by_id["aq-gbk"]["latest"] is None


async def test_devices_heard_from_but_not_registered_are_listed_last(
    api: Api, world: World
) -> None:
    world.seen["tl-rogue"] = T0
    world.latest["tl-rogue"] = Reading(Kind.TRAFFIC, "tl-rogue", T0, {"speed_kmh": 12.0}, None)
    answer = await api.get("/api/devices")
    last = answer.body["devices"][-1]
    assert (last["id"], last["registered"], last["kind"]) == ("tl-rogue", False, "traffic")


async def test_devices_can_be_filtered_by_kind(api: Api) -> None:
    answer = await api.get("/api/devices", kind="air-quality")
    assert [d["id"] for d in answer.body["devices"]] == ["aq-gbk"]


async def test_an_unknown_kind_is_400(api: Api) -> None:
    answer = await api.get("/api/devices", kind="seismic")
    assert answer.status == 400 and "kind must be one of" in answer.body["error"]


async def test_one_device_and_an_unknown_one(api: Api) -> None:
    assert (await api.get("/api/devices/aq-gbk")).body["name"] == "AQ-GBK"
    missing = await api.get("/api/devices/nope")
    assert missing.status == 404 and "nope" in missing.body["error"]


# --- dead letters and deliveries ----------------------------------------------------------


async def test_dead_letters_show_payloads_as_text_or_hex(api: Api, world: World) -> None:
    world.dead_letters.add_many([
        DeadLetter("siaga/water-level/pa-01/telemetry", b'{"level_cm": "high"}', "not a number",
                   T0, "invalid-reading"),
        DeadLetter("siaga/traffic/tl-01/telemetry", b"\xff\x00", "not UTF-8", T0 + S,
                   "bad-json"),
    ])
    answer = await api.get("/api/deadletters")
    first, second = answer.body["dead_letters"]
    assert (first["payload"], first["payload_encoding"]) == ("ff00", "hex")
    assert (second["payload"], second["payload_encoding"]) == ('{"level_cm": "high"}', "utf-8")
    assert second["code"] == "invalid-reading" and second["received_at"] == T0_TEXT
    only = await api.get("/api/deadletters", code="bad-json", limit="5")
    assert [x["code"] for x in only.body["dead_letters"]] == ["bad-json"]
    counts = await api.get("/api/deadletters/counts")
    assert counts.body == {"counts": {"bad-json": 1, "invalid-reading": 1}, "total": 2}


async def test_dead_deliveries_are_listed_with_their_last_error(api: Api, world: World) -> None:
    delivery_id = world.outbox.enqueue("bpbd", "abc", b'{"version": "4"}', T0)
    world.outbox.mark_dead(delivery_id, "HTTP 400 Bad Request", T0 + S)
    world.outbox.enqueue("bpbd", "def", b"{}", T0)  # pending: not listed
    answer = await api.get("/api/deliveries/dead")
    [dead] = answer.body["deliveries"]
    assert (dead["id"], dead["state"], dead["receiver"]) == (delivery_id, "dead", "bpbd")
    assert dead["last_error"] == "HTTP 400 Bad Request" and dead["body"] == {"version": "4"}


# --- the command line's client ------------------------------------------------------------


async def test_the_client_lists_acknowledges_and_silences(api: Api, world: World) -> None:
    alert = fire(world, "pa-manggarai")
    client = ApiClient(api.url, SecretStr(TOKEN))
    listed = await asyncio.to_thread(client.alerts, "firing", ["alertname=FloodLevel"])
    assert [a["fingerprint"] for a in listed] == [alert.fingerprint]
    acked = await asyncio.to_thread(client.acknowledge, alert.fingerprint, "rina", "on it")
    assert acked["acknowledged"]["by"] == "rina"
    silence = await asyncio.to_thread(client.add_silence, ["alertname=FloodLevel"], "rina",
                                      "works", duration="2h")
    assert [s["id"] for s in await asyncio.to_thread(client.silences)] == [silence["id"]]
    expired = await asyncio.to_thread(client.expire_silence, silence["id"])
    assert expired["state"] == "expired"
    shown = await asyncio.to_thread(client.alert, alert.fingerprint)
    assert alert.fingerprint in format_alert(shown) and "acknowledged" in format_alert(shown)
    assert "acked" in format_alerts([shown])
    assert silence["id"] in format_silences([expired])


async def test_the_client_raises_the_status_and_the_api_message(api: Api) -> None:
    client = ApiClient(api.url, token=None)
    with pytest.raises(ApiResponseError) as raised:
        await asyncio.to_thread(client.acknowledge, "abc", "rina")
    assert raised.value.status == 401
    assert "HTTP 401" in str(raised.value) and "missing bearer token" in str(raised.value)
    with pytest.raises(ApiResponseError, match="HTTP 404: no alert"):
        await asyncio.to_thread(client.alert, "../../healthz")


def test_the_client_says_when_nothing_answers() -> None:
    client = ApiClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(ApiUnreachable, match="cannot reach the Siaga API"):
        client.alerts()


def test_the_client_finds_the_api_from_the_settings_or_the_environment() -> None:
    assert base_url(HttpSettings(host="0.0.0.0", port=8080), {}) == "http://127.0.0.1:8080"
    assert base_url(HttpSettings(host="::1", port=9000), {}) == "http://[::1]:9000"
    assert base_url(HttpSettings(), {"SIAGA_API_URL": "https://siaga.example/"}) == \
        "https://siaga.example"
