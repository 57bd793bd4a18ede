"""The operator HTTP API: health, readiness, metrics, devices, dead letters, alerts, silences."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import yaml
from aiohttp import web

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Device
from ingest.deadletters import StoredDeadLetter, format_time
from siaga.api import alerts as apialerts
from siaga.api import open311
from siaga.api import reports as apireports
from siaga.api.context import (
    CONTEXT,
    EDGES,
    ApiContext,
    ApiError,
    ErrorBody,
    bearer_auth,
    errors_as_json,
    json_response,
    query_limit,
)
from siaga.api.metrics import CONTENT_TYPE, Exposition, ServiceCollector, StoreCollector

log = logging.getLogger(__name__)

OPENAPI_PATH: Final = Path(__file__).with_name("openapi.yaml")
OPENAPI: Final = web.AppKey("siaga_openapi", dict[str, Any])
METRICS: Final = web.AppKey("siaga_metrics", Exposition)
# Requests are small JSON objects; anything bigger is a mistake or an attack.
MAX_BODY_BYTES: Final = 64 * 1024
# Requests are quick reads of SQLite; a few seconds lets them finish without holding up a stop.
SHUTDOWN_TIMEOUT_S: Final = 5.0
_NS_PER_S: Final = 1_000_000_000


def make_app(context: ApiContext) -> web.Application:
    """The aiohttp application serving `context`.

    Reads are open (they show nothing secret, and monitoring needs them without
    credentials); POST and DELETE need the bearer token (`apicontext.bearer_auth`), and so
    do officers' reads of reports (they show the reporter's contact). Open311 under
    /open311/v2/ checks its own `api_key` and answers errors as GeoReport does.
    """
    app = web.Application(middlewares=[errors_as_json, bearer_auth],
                          client_max_size=MAX_BODY_BYTES)
    app[CONTEXT] = context
    edges: dict[str, ErrorBody] = {open311.PREFIX + "/": open311.open311_error}
    app[EDGES] = edges
    app[OPENAPI] = load_openapi()
    app[METRICS] = exposition(context)
    app.add_routes(routes())
    return app


def routes() -> list[web.RouteDef]:
    """Every route of the API (`openapi.yaml` must describe each; a test checks it)."""
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/openapi.json", openapi),
        web.get("/api/devices", list_devices),
        web.get("/api/devices/{device_id}", get_device),
        web.get("/api/deadletters", list_dead_letters),
        web.get("/api/deadletters/counts", count_dead_letters),
        *apialerts.routes(),
        *apireports.routes(),
        *open311.routes(),
    ]


@contextlib.asynccontextmanager
async def serve_api(context: ApiContext, host: str, port: int,
                    extend: Callable[[web.Application], None] | None = None,
                    ) -> AsyncIterator[int]:
    """Serve the API on `host`:`port` (0: a free port) until exit; yields the bound port.

    `extend` adds routes and middleware of a layer above the API (the console) to the same
    application, before it starts, so both share one port and one error edge.

    With port 0, give one address (not a name resolving to several): each would get its
    own port, and only the first is yielded.
    """
    app = make_app(context)
    if extend is not None:
        extend(app)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
        log.info("HTTP API listening on http://%s:%d", host, bound)
        yield bound
    finally:
        await runner.cleanup()


def load_openapi(path: Path = OPENAPI_PATH) -> dict[str, Any]:
    """The OpenAPI 3.1 description, read once per app from the YAML kept next to the code."""
    with path.open(encoding="utf-8") as file:
        document = yaml.safe_load(file)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected an OpenAPI document (a mapping)")
    return document


async def healthz(request: web.Request) -> web.Response:
    """The process is up and answering."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when subscribed to MQTT and storage is usable; 503 naming what is missing."""
    reasons = list(request.app[CONTEXT].readiness())
    if reasons:
        return json_response({"error": "not ready: " + "; ".join(reasons), "reasons": reasons},
                             status=503)
    return json_response({"status": "ready"})


def exposition(context: ApiContext) -> Exposition:
    """The service's metrics, each read from `context` at every scrape."""
    service = ServiceCollector(
        ingest_stats=context.ingest_stats, storage_stats=context.storage_stats,
        readiness=context.readiness, devices=lambda: len(context.registry),
        devices_seen=lambda: len(context.devices_seen), commit=context.build_commit,
        alerting=context.alerting_metrics)
    return Exposition(service, StoreCollector(context.alerts, context.outbox, context.clock_ns))


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format, written by `prometheus_client`."""
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def list_devices(request: web.Request) -> web.Response:
    """The registry with last seen and latest reading, plus unregistered devices heard from."""
    context = request.app[CONTEXT]
    kind = _kind(request.query.get("kind"))
    now_ns = context.clock_ns()
    ids = [device.id for device in context.registry]
    ids += sorted(set(context.devices_seen).union(context.latest) - set(ids))
    shown = [device_json(context, device_id, now_ns) for device_id in ids]
    if kind is not None:
        shown = [device for device in shown if device["kind"] == kind]
    return json_response({"devices": shown})


def _kind(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if raw not in set(Kind):
        raise ApiError(400, f"kind must be one of {', '.join(Kind)}, got {raw!r}")
    return raw


async def get_device(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    device_id = request.match_info["device_id"]
    known = (device_id in context.registry or device_id in context.devices_seen
             or device_id in context.latest)
    if not known:
        raise ApiError(404, f"no device {device_id!r}: neither in the registry nor heard from")
    return json_response(device_json(context, device_id, context.clock_ns()))


def device_json(context: ApiContext, device_id: str, now_ns: int) -> dict[str, Any]:
    """One device: its catalog entry (if registered), when it was last heard, its values."""
    device = context.registry.get(device_id)
    reading = context.latest.get(device_id)
    seen_ns = context.devices_seen.get(device_id)
    shown: dict[str, Any] = _catalog_json(device) if device is not None else {
        "id": device_id, "registered": False,
        "kind": None if reading is None else str(reading.kind),
    }
    shown["last_seen"] = None if seen_ns is None else format_time(seen_ns)
    shown["last_seen_age_s"] = None if seen_ns is None else (now_ns - seen_ns) / _NS_PER_S
    shown["latest"] = None if reading is None else reading_json(reading)
    return shown


def _catalog_json(device: Device) -> dict[str, Any]:
    return {
        "id": device.id, "registered": True, "kind": str(device.kind), "name": device.name,
        "lat": device.lat, "lon": device.lon, "labels": dict(device.labels),
        "thresholds": dict(device.thresholds), "expected_interval_s": device.interval_s,
    } | (_camera_json(device) if device.kind is Kind.CAMERA else {})


def _camera_json(device: Device) -> dict[str, Any]:
    """What a camera watches (SPEC section 7): its spot, the device it watches over, its
    zones and analytics."""
    return {"spot": device.spot, "watches": device.watches, "zones": list(device.zones),
            "analytics": list(device.analytics)}


def reading_json(reading: Reading) -> dict[str, Any]:
    return {"ts": format_time(reading.ts_ns), "seq": reading.seq, "values": dict(reading.values)}


async def list_dead_letters(request: web.Request) -> web.Response:
    """The newest dead letters first, optionally of one reason code."""
    store = request.app[CONTEXT].dead_letters
    limit = query_limit(request)
    code = request.query.get("code") or None
    letters = await asyncio.to_thread(store.recent, limit, code)
    return json_response({"dead_letters": [dead_letter_json(x) for x in letters]})


async def count_dead_letters(request: web.Request) -> web.Response:
    counts = await asyncio.to_thread(request.app[CONTEXT].dead_letters.counts)
    return json_response({"counts": counts, "total": sum(counts.values())})


def dead_letter_json(letter: StoredDeadLetter) -> dict[str, Any]:
    """A dead letter; its payload as text when it is UTF-8, else as hex (it may be binary)."""
    try:
        payload, encoding = letter.payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = letter.payload.hex(), "hex"
    return {
        "id": letter.id, "received_at": format_time(letter.received_ns), "topic": letter.topic,
        "code": letter.code, "reason": letter.reason, "payload": payload,
        "payload_encoding": encoding,
    }
