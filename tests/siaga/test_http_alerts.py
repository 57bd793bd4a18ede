"""The operator HTTP API's alerts and silences, over a real alert book."""

from __future__ import annotations

import pytest

from tests.siaga.apirig import (
    SILENCE,
    T0,
    T0_TEXT,
    TOKEN,
    Api,
    S,
    World,
    fire,
    resolve,
)

# --- alerts -------------------------------------------------------------------------------


async def test_alerts_are_listed_newest_first(api: Api, world: World) -> None:
    fire(world, "pa-manggarai", at_ns=T0)
    fire(world, "pa-katulampa", at_ns=T0 + 60 * S)
    answer = await api.get("/api/alerts")
    assert answer.status == 200
    assert [a["subject"] for a in answer.body["alerts"]] == ["pa-katulampa", "pa-manggarai"]
    first = answer.body["alerts"][1]
    assert first["status"] == "firing" and first["severity"] == "warning"
    assert first["starts_at"] == T0_TEXT and first["labels"]["alertname"] == "FloodLevel"
    assert first["acknowledged"] is None and first["silenced_by"] is None


async def test_alerts_are_filtered_by_status_matchers_and_limit(api: Api, world: World) -> None:
    old = fire(world, "pa-manggarai", at_ns=T0)
    resolve(world, old, T0 + 60 * S)
    fire(world, "pa-katulampa", at_ns=T0 + 120 * S)
    fire(world, "aq-gbk", rule="AirQuality", at_ns=T0 + 180 * S)
    firing = await api.get("/api/alerts", status="firing")
    assert {a["subject"] for a in firing.body["alerts"]} == {"pa-katulampa", "aq-gbk"}
    floods = await api.call("GET", "/api/alerts", params=[
        ("match", "alertname=FloodLevel"), ("match", "device_id=~pa-.*")])
    assert {a["subject"] for a in floods.body["alerts"]} == {"pa-manggarai", "pa-katulampa"}
    limited = await api.get("/api/alerts", limit="1")
    assert [a["subject"] for a in limited.body["alerts"]] == ["aq-gbk"]


@pytest.mark.parametrize(("params", "message"), [
    ({"status": "burning"}, "status must be one of"),
    ({"match": "alertname~~x"}, "is not a matcher"),
    ({"match": "device_id=~(unclosed"}, "bad regex"),
    ({"limit": "ten"}, "limit must be an integer"),
    ({"limit": "0"}, "limit must be between 1 and 1000"),
    ({"limit": "100000"}, "limit must be between 1 and 1000"),
])
async def test_bad_alert_queries_are_400(api: Api, params: dict[str, str], message: str) -> None:
    answer = await api.get("/api/alerts", **params)
    assert answer.status == 400
    assert message in answer.body["error"]


async def test_one_alert_comes_with_its_history(api: Api, world: World) -> None:
    alert = fire(world, "pa-manggarai", at_ns=T0)
    resolve(world, alert, T0 + 600 * S)
    answer = await api.get(f"/api/alerts/{alert.fingerprint}")
    assert answer.status == 200
    assert answer.body["status"] == "resolved"
    assert answer.body["ends_at"] == "2023-11-14T22:23:20.000Z"
    assert [h["change"] for h in answer.body["history"]] == ["resolved", "firing"]
    assert answer.body["history"][1]["paged"] is True


async def test_an_unknown_alert_is_404(api: Api) -> None:
    answer = await api.get("/api/alerts/0123456789abcdef")
    assert answer.status == 404
    assert "0123456789abcdef" in answer.body["error"]


async def test_an_ack_records_who_and_why(api: Api, world: World) -> None:
    alert = fire(world, "pa-manggarai")
    world.clock.now_ns = T0 + 30 * S
    answer = await api.call("POST", f"/api/alerts/{alert.fingerprint}/ack",
                            body={"by": "rina", "comment": "pump crew on site"})
    assert answer.status == 200
    assert answer.body["acknowledged"] == {"at": "2023-11-14T22:13:50.000Z", "by": "rina",
                                           "comment": "pump crew on site"}
    history = (await api.get(f"/api/alerts/{alert.fingerprint}")).body["history"]
    assert history[0]["change"] == "acknowledged"


async def test_an_ack_of_an_unknown_alert_is_404(api: Api) -> None:
    answer = await api.call("POST", "/api/alerts/nope/ack", body={"by": "rina"})
    assert answer.status == 404


async def test_an_ack_of_a_resolved_alert_is_409(api: Api, world: World) -> None:
    alert = fire(world, "pa-manggarai")
    resolve(world, alert, T0 + 60 * S)
    answer = await api.call("POST", f"/api/alerts/{alert.fingerprint}/ack", body={"by": "rina"})
    assert answer.status == 409
    assert "resolved" in answer.body["error"]


@pytest.mark.parametrize(("body", "message"), [
    ({}, "by: Field required"),
    ({"by": ""}, "by:"),
    ({"by": "rina", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"by": 7}, "by: Input should be a valid string"),
    ([], "must be a JSON object"),
])
async def test_a_bad_ack_body_is_400(api: Api, world: World, body: object, message: str) -> None:
    alert = fire(world, "pa-manggarai")
    answer = await api.call("POST", f"/api/alerts/{alert.fingerprint}/ack", body=body)
    assert answer.status == 400
    assert message in answer.body["error"]


async def test_a_body_that_is_not_json_is_400(api: Api) -> None:
    async with api.session.post(api.url + "/api/alerts/x/ack", data=b"{by: rina",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 400
        assert "not valid JSON" in (await response.json())["error"]


async def test_an_oversized_body_is_413(api: Api) -> None:
    answer = await api.call("POST", "/api/silences", body={"comment": "x" * 100_000})
    assert answer.status == 413 and "error" in answer.body


# --- silences -----------------------------------------------------------------------------


async def test_a_silence_for_a_duration_starts_now(api: Api) -> None:
    answer = await api.call("POST", "/api/silences", body={**SILENCE, "duration": "2h"})
    assert answer.status == 201
    silence = answer.body
    assert silence["starts_at"] == T0_TEXT and silence["ends_at"] == "2023-11-15T00:13:20.000Z"
    assert silence["matchers"] == ['alertname="FloodLevel"',
                                   'device_id=~"pa-manggarai|pa-karet"']
    assert (silence["state"], silence["created_by"]) == ("active", "rina")
    listed = await api.get("/api/silences")
    assert [s["id"] for s in listed.body["silences"]] == [silence["id"]]


async def test_a_silence_can_end_at_a_time_and_start_later(api: Api) -> None:
    body = {**SILENCE, "starts_at": "2023-11-15T08:00:00+07:00",
            "ends_at": "2023-11-15T10:00:00+07:00"}
    answer = await api.call("POST", "/api/silences", body=body)
    assert answer.status == 201
    assert answer.body["starts_at"] == "2023-11-15T01:00:00.000Z"
    assert answer.body["ends_at"] == "2023-11-15T03:00:00.000Z"
    assert answer.body["state"] == "pending"


@pytest.mark.parametrize(("change", "message"), [
    ({"duration": "2h", "ends_at": "2023-11-15T10:00:00Z"}, "exactly one of duration"),
    ({}, "exactly one of duration"),
    ({"duration": "soon"}, "is not a duration"),
    ({"duration": "0s"}, "duration must be positive"),
    ({"ends_at": "2023-11-15 10:00"}, "ends_at must be RFC 3339 with an offset"),
    ({"ends_at": "2020-01-01T00:00:00Z"}, "must end after it starts and after now"),
    ({"duration": "1h", "matchers": []}, "matchers:"),
    ({"duration": "1h", "matchers": ["device_id=~(x"]}, "bad regex"),
    ({"duration": "1h", "matchers": ["device_id=~.*"]}, "must not match the empty string"),
    ({"duration": "1h", "comment": ""}, "comment:"),
])
async def test_a_bad_silence_is_400(api: Api, change: dict[str, object], message: str) -> None:
    answer = await api.call("POST", "/api/silences", body={**SILENCE, **change})
    assert answer.status == 400
    assert message in answer.body["error"]


async def test_an_expired_silence_leaves_the_list_unless_asked(api: Api, world: World) -> None:
    made = (await api.call("POST", "/api/silences", body={**SILENCE, "duration": "2h"})).body
    world.clock.now_ns = T0 + 60 * S
    answer = await api.call("DELETE", f"/api/silences/{made['id']}")
    assert answer.status == 200
    assert answer.body["state"] == "expired"
    assert answer.body["ends_at"] == "2023-11-14T22:14:20.000Z"
    assert (await api.get("/api/silences")).body["silences"] == []
    everything = await api.get("/api/silences", expired="true")
    assert [s["id"] for s in everything.body["silences"]] == [made["id"]]
    assert (await api.get("/api/silences", expired="maybe")).status == 400


async def test_expiring_an_unknown_silence_is_404(api: Api) -> None:
    answer = await api.call("DELETE", "/api/silences/does-not-exist")
    assert answer.status == 404


async def test_expiring_a_silence_tells_the_alerts_it_kept_back(api: Api, world: World) -> None:
    made = (await api.call("POST", "/api/silences", body={**SILENCE, "duration": "2h"})).body
    alert = fire(world, "pa-manggarai")
    listed = (await api.get("/api/alerts")).body["alerts"]
    assert listed[0]["silenced_by"] == made["id"]
    assert world.told == []
    await api.call("DELETE", f"/api/silences/{made['id']}")
    assert [(n.fingerprint, n.reason) for n in world.told] == [(alert.fingerprint, "new")]
