"""Tests of the operator HTTP API through a real server on a free port, over real SQLite stores."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Device, Registry
from ingest.deadletters import DeadLetter, DeadLetterStore
from ingest.stats import IngestStats
from ingest.storage import StorageStats
from rules.alert import Alert, Notification, Severity, Signal, Timing, step
from rules.alertbook import AlertBook
from rules.alertstore import AlertStore
from rules.outbox import Outbox
from siaga.api.context import ApiContext
from siaga.api.server import load_openapi, make_app, serve_api
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

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
T0_TEXT = "2023-11-14T22:13:20.000Z"
S = 1_000_000_000
TOKEN = "tok-3f9a-operator"


@dataclass
class Clock:
    now_ns: int = T0

    def __call__(self) -> int:
        return self.now_ns


@dataclass
class World:
    """The stores and live state behind one API, as the service would hold them."""

    clock: Clock
    registry: Registry
    book: AlertBook
    dead_letters: DeadLetterStore
    outbox: Outbox
    stats: IngestStats = field(default_factory=IngestStats)
    storage: StorageStats | None = None
    seen: dict[str, int] = field(default_factory=dict)
    latest: dict[str, Reading] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    told: list[Notification] = field(default_factory=list)

    def context(self, token: str | None = TOKEN) -> ApiContext:
        return ApiContext(
            registry=self.registry, alerts=self.book, dead_letters=self.dead_letters,
            outbox=self.outbox, ingest_stats=self.stats, storage_stats=lambda: self.storage,
            readiness=lambda: self.reasons, token=None if token is None else SecretStr(token),
            devices_seen=self.seen, latest=self.latest, clock_ns=self.clock,
        )


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Any


@dataclass(frozen=True)
class Api:
    session: aiohttp.ClientSession
    url: str

    async def call(self, method: str, path: str, *, body: object = None,
                   token: str | None = TOKEN, params: Any = None) -> Answer:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.url + path, json=body, headers=headers,
                                        params=params) as response:
            text = await response.text()
            decoded = await response.json() if response.content_type == "application/json" \
                else text
            return Answer(response.status, decoded, response.headers)

    async def get(self, path: str, **params: Any) -> Answer:
        return await self.call("GET", path, params=params or None)


def device(device_id: str, kind: Kind, **labels: str) -> Device:
    return Device(id=device_id, kind=kind, name=device_id.upper(), lat=-6.2, lon=106.8,
                  labels=labels, thresholds={"siaga3_cm": 751.0, "siaga2_cm": 851.0,
                                             "siaga1_cm": 950.0} if kind is Kind.WATER_LEVEL
                  else {})


@contextlib.contextmanager
def open_world(tmp_path: Path) -> Iterator[World]:
    """Two registered devices, empty stores and no live state, at T0."""
    clock = Clock()
    registry = Registry([device("pa-manggarai", Kind.WATER_LEVEL, river="ciliwung"),
                         device("aq-gbk", Kind.AIR_QUALITY, kota="jakarta-pusat")])
    told: list[Notification] = []  # what the book handed to its dispatcher
    with (AlertBook(tmp_path / "alerts.db", page_max_age_ns=3600 * S,
                    repeat_interval_ns=4 * 3600 * S, clock_ns=clock, send=told.append) as book,
          DeadLetterStore(tmp_path / "dead.db") as dead,
          Outbox(tmp_path / "outbox.db", clock) as outbox):
        yield World(clock, registry, book, dead, outbox, told=told)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        yield opened


@contextlib.asynccontextmanager
async def running_api(world: World, token: str | None = TOKEN) -> AsyncIterator[Api]:
    async with (serve_api(world.context(token), "127.0.0.1", 0) as port,
                aiohttp.ClientSession() as session):
        yield Api(session, f"http://127.0.0.1:{port}")


@pytest.fixture
async def api(world: World) -> AsyncIterator[Api]:
    async with running_api(world) as running:
        yield running


def signal(subject: str, active: bool, at_ns: int, rule: str = "FloodLevel",
           severity: Severity = Severity.WARNING) -> Signal:
    labels = {"alertname": rule, "severity": severity.value, "device_id": subject}
    return Signal(rule, subject, active, at_ns, severity, labels, {"summary": f"{rule} {subject}"})


def fire(world: World, subject: str, rule: str = "FloodLevel", at_ns: int = T0) -> Alert:
    alert, transition = step(None, signal(subject, True, at_ns, rule), Timing())
    assert alert is not None and transition is not None
    world.book.apply(transition, at_ns)
    return alert


def resolve(world: World, alert: Alert, at_ns: int) -> None:
    _, transition = step(alert, signal(alert.subject, False, at_ns, alert.rule), Timing())
    assert transition is not None
    world.book.apply(transition, at_ns)


# --- operations ---------------------------------------------------------------------------


async def test_healthz_says_the_process_is_up(api: Api) -> None:
    answer = await api.get("/healthz")
    assert (answer.status, answer.body) == (200, {"status": "ok"})


async def test_readyz_is_200_when_nothing_is_missing(api: Api) -> None:
    answer = await api.get("/readyz")
    assert (answer.status, answer.body) == (200, {"status": "ready"})


async def test_readyz_is_503_with_the_reasons(api: Api, world: World) -> None:
    world.reasons[:] = ["not subscribed to MQTT yet", "spool full"]
    answer = await api.get("/readyz")
    assert answer.status == 503
    assert answer.body["reasons"] == ["not subscribed to MQTT yet", "spool full"]
    assert "spool full" in answer.body["error"]


async def test_a_failing_handler_answers_500_without_details(world: World) -> None:
    def broken() -> list[str]:
        raise RuntimeError("secret internals")

    context = replace(world.context(), readiness=broken)
    async with serve_api(context, "127.0.0.1", 0) as port, aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/readyz") as response:
        assert response.status == 500
        body = await response.json()
    assert "internal error" in body["error"] and "secret" not in body["error"]


async def test_an_alert_book_another_process_holds_locked_answers_503_until_released(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The lock is real (a second connection's write transaction); only the wait for it is
    # shortened from sqlite's 5 s.
    monkeypatch.setattr(AlertStore, "BUSY_TIMEOUT_S", 0.1)
    body = {**SILENCE, "duration": "2h"}
    with open_world(tmp_path) as world:
        async with running_api(world) as api:
            holder = sqlite3.connect(tmp_path / "alerts.db", isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                locked = await api.call("POST", "/api/silences", body=body)
                holder.execute("ROLLBACK")
            finally:
                holder.close()
            released = await api.call("POST", "/api/silences", body=body)
    assert locked.status == 503
    assert locked.body == {"error": f"{tmp_path / 'alerts.db'}: database is locked"}
    assert released.status == 201


async def test_unknown_routes_and_methods_answer_json_errors(api: Api) -> None:
    missing = await api.get("/api/nothing")
    assert missing.status == 404 and "no endpoint /api/nothing" in missing.body["error"]
    wrong = await api.call("PUT", "/healthz")
    assert wrong.status == 405 and "PUT is not allowed" in wrong.body["error"]
    assert "GET" in wrong.headers["Allow"]


async def test_serve_api_picks_a_free_port_and_stops_on_exit(world: World) -> None:
    async with serve_api(world.context(), "127.0.0.1", 0) as port:
        assert port > 0
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_serve_api_raises_when_the_port_is_taken(world: World) -> None:
    async with serve_api(world.context(), "127.0.0.1", 0) as port:
        with pytest.raises(OSError):
            async with serve_api(world.context(), "127.0.0.1", port):
                pass


async def test_serve_api_binds_the_port_it_is_given(world: World) -> None:
    wanted = free_port()
    async with serve_api(world.context(), "127.0.0.1", wanted) as port:
        assert port == wanted


# --- auth ---------------------------------------------------------------------------------


MUTATIONS = [("POST", "/api/alerts/abc/ack", {"by": "ops"}),
             ("POST", "/api/silences", {"matchers": ["alertname=X"], "duration": "1h",
                                        "created_by": "ops", "comment": "test"}),
             ("DELETE", "/api/silences/abc", None)]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
async def test_a_mutation_without_a_token_is_401_with_a_bearer_challenge(
    api: Api, method: str, path: str, body: object
) -> None:
    answer = await api.call(method, path, body=body, token=None)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "missing bearer token" in answer.body["error"]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
async def test_a_mutation_with_a_wrong_token_is_401(
    api: Api, method: str, path: str, body: object
) -> None:
    answer = await api.call(method, path, body=body, token=TOKEN + "x")
    assert answer.status == 401
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]


async def test_a_non_bearer_scheme_is_401(api: Api) -> None:
    async with api.session.post(api.url + "/api/silences", json={},
                                headers={"Authorization": f"Basic {TOKEN}"}) as response:
        assert response.status == 401


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
async def test_without_a_configured_token_mutations_are_refused_with_403(
    world: World, method: str, path: str, body: object
) -> None:
    async with running_api(world, token=None) as api:
        answer = await api.call(method, path, body=body, token="anything")
    assert answer.status == 403
    assert "SIAGA_API_TOKEN" in answer.body["error"]


async def test_an_empty_configured_token_counts_as_none(world: World) -> None:
    async with running_api(world, token="") as api:
        answer = await api.call("DELETE", "/api/silences/abc", token="")
    assert answer.status == 403


async def test_every_mutating_route_needs_the_token(world: World) -> None:
    app = make_app(world.context())
    mutating = {(r.method, r.resource.canonical) for r in app.router.routes()
                if r.method in ("POST", "PUT", "PATCH", "DELETE") and r.resource is not None}
    assert mutating == {("POST", "/api/alerts/{fingerprint}/ack"),
                        ("POST", "/api/silences"), ("DELETE", "/api/silences/{silence_id}")}


async def test_reads_need_no_token_even_when_one_is_configured(api: Api) -> None:
    answer = await api.call("GET", "/api/alerts", token=None)
    assert answer.status == 200


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


SILENCE = {"matchers": ["alertname=FloodLevel", "device_id=~pa-manggarai|pa-karet"],
           "created_by": "rina", "comment": "gauge maintenance"}


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


# --- OpenAPI ------------------------------------------------------------------------------


async def test_the_openapi_document_describes_every_route_and_no_other(world: World) -> None:
    app = make_app(world.context())
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    paths = load_openapi()["paths"]
    described = {(method, path) for path, item in paths.items() for method in item}
    assert served == described


def test_the_openapi_document_marks_exactly_the_mutations_as_secured() -> None:
    document = load_openapi()
    assert document["openapi"].startswith("3.1")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            secured = operation.get("security") == [{"bearer": []}]
            assert secured == (method in ("post", "delete")), (method, path)
            if secured:
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_every_reference_in_the_openapi_document_resolves() -> None:
    document = load_openapi()
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]


async def test_the_openapi_document_is_served_as_json(api: Api) -> None:
    answer = await api.get("/openapi.json")
    assert answer.status == 200 and answer.body["info"]["title"] == "Siaga operator API"


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


# --- support ------------------------------------------------------------------------------


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
