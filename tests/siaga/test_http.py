"""The operator HTTP API, through a real server on a free port: operations, auth, and OpenAPI."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rules.alertschema import AlertStore
from siaga.api.server import load_openapi, make_app, serve_api
from siaga.console.mount import routes as console_routes
from siaga.sandbox.ports import free_port
from tests.siaga.apirig import (
    SILENCE,
    TOKEN,
    Api,
    World,
    open_world,
    running_api,
)

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
             ("DELETE", "/api/silences/abc", None),
             ("POST", "/api/reports/1/updates", {"state": "fixed", "officer": "ops"})]


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
                        ("POST", "/api/silences"), ("DELETE", "/api/silences/{silence_id}"),
                        ("POST", "/api/reports/{report_id}/updates"),
                        # Open311 takes reports with the app's api_key, not the token.
                        ("POST", "/open311/v2/requests.{fmt}")}


async def test_reads_need_no_token_even_when_one_is_configured(api: Api) -> None:
    answer = await api.call("GET", "/api/alerts", token=None)
    assert answer.status == 200


# --- OpenAPI ------------------------------------------------------------------------------


async def test_the_openapi_document_describes_every_route_and_no_other(world: World) -> None:
    app = make_app(world.context())
    app.add_routes(console_routes())  # the console shares the port and the document
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
            # Open311 checks its own api_key; officers' reads show reporters' contacts.
            if path.startswith("/open311/"):
                expected = False
                assert (operation.get("security") == [{"api_key": []}]) == (method == "post")
            elif path.startswith("/api/reports") and path != "/api/reports/stats":
                expected = True
            else:
                expected = method in ("post", "delete")
            assert secured == expected, (method, path)
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
