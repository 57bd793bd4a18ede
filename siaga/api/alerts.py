"""The API's alert side: alerts (list, one with its history, acknowledge), silences, deliveries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Self

import orjson
from aiohttp import web
from pydantic import Field, model_validator

from ingest.deadletters import format_time
from rules.alert import Alert, AlertStatus
from rules.alertbook import AlertView, HistoryEntry
from rules.outbox import Delivery
from rules.silences import Matcher, Silence, parse_matcher
from siaga.api.context import CONTEXT, ApiContext, ApiError, json_response, query_limit, read_body
from siaga.api.timefmt import parse_time
from siaga_core.configfile import StrictModel
from siaga_core.durations import parse_duration, to_ns

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/alerts", list_alerts),
        web.get("/api/alerts/{fingerprint}", get_alert),
        web.post("/api/alerts/{fingerprint}/ack", acknowledge),
        web.get("/api/silences", list_silences),
        web.post("/api/silences", add_silence),
        web.delete("/api/silences/{silence_id}", expire_silence),
        web.get("/api/deliveries/dead", list_dead_deliveries),
    ]


class _Body(StrictModel):
    """A request body: a typo in it is refused, never ignored."""


class AckBody(_Body):
    by: str = Field(min_length=1, pattern=r"\S")
    comment: str = ""


class SilenceBody(_Body):
    """Either `duration` (from `starts_at`, default now) or `ends_at`."""

    matchers: list[str] = Field(min_length=1)
    duration: str | None = None
    starts_at: str | None = None
    ends_at: str | None = None
    created_by: str = Field(min_length=1, pattern=r"\S")
    # Required, as in Alertmanager: a silence hides alerts, so it must say why.
    comment: str = Field(min_length=1, pattern=r"\S")

    @model_validator(mode="after")
    def _one_end(self) -> Self:
        if (self.duration is None) == (self.ends_at is None):
            raise ValueError("give exactly one of duration (e.g. 2h) or ends_at (RFC 3339)")
        return self


async def list_alerts(request: web.Request) -> web.Response:
    """Alerts, newest first: `status=`, repeated `match=name=value`, `limit=`."""
    context = request.app[CONTEXT]
    status = _status(request.query.get("status"))
    matchers = _matchers(request.query.getall("match", []))
    limit = query_limit(request)
    views = await asyncio.to_thread(context.alerts.alerts, status, matchers, limit)
    return json_response({"alerts": [alert_json(view) for view in views]})


async def get_alert(request: web.Request) -> web.Response:
    """One alert with its history, newest entry first (`limit=` entries)."""
    context = request.app[CONTEXT]
    fingerprint = request.match_info["fingerprint"]
    limit = query_limit(request)
    view = await asyncio.to_thread(context.alerts.get, fingerprint)
    if view is None:
        raise ApiError(404, f"no alert with fingerprint {fingerprint!r}")
    history = await asyncio.to_thread(context.alerts.history, fingerprint, limit)
    return json_response(alert_json(view) | {"history": [history_json(x) for x in history]})


async def acknowledge(request: web.Request) -> web.Response:
    """Someone is on it: no more repeat notifications until it resolves or escalates."""
    context = request.app[CONTEXT]
    fingerprint = request.match_info["fingerprint"]
    body = await read_body(request, AckBody)
    # A resolved alert raises AlertNotActive: 409 (context.STATUS_OF).
    view = await asyncio.to_thread(context.alerts.acknowledge, fingerprint, body.by,
                                   body.comment, context.clock_ns())
    if view is None:
        raise ApiError(404, f"no alert with fingerprint {fingerprint!r}")
    return json_response(alert_json(view))


async def list_silences(request: web.Request) -> web.Response:
    """Active and pending silences; `expired=true` adds the expired ones (who silenced what)."""
    context = request.app[CONTEXT]
    expired = _flag(request.query.get("expired", "false"), "expired")
    now_ns = context.clock_ns()
    silences = await asyncio.to_thread(context.alerts.silences, expired, now_ns)
    return json_response({"silences": [silence_json(s, now_ns) for s in silences]})


async def add_silence(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    body = await read_body(request, SilenceBody)
    matchers = _matchers(body.matchers)
    now_ns = context.clock_ns()
    starts_ns = now_ns if body.starts_at is None else parse_time(body.starts_at, "starts_at")
    if body.ends_at is not None:
        ends_ns = parse_time(body.ends_at, "ends_at")
    else:
        ends_ns = starts_ns + _positive_duration_ns(body.duration or "")
    # A silence that cannot be raises SilenceError: 400 (context.STATUS_OF).
    silence = await asyncio.to_thread(context.alerts.add_silence, matchers, starts_ns, ends_ns,
                                      body.created_by, body.comment, now_ns)
    return json_response(silence_json(silence, now_ns), status=201)


async def expire_silence(request: web.Request) -> web.Response:
    """End a silence now; the firing alerts it kept back are told at once (when wired)."""
    context = request.app[CONTEXT]
    silence_id = request.match_info["silence_id"]
    now_ns = context.clock_ns()
    # An unknown id raises UnknownSilence: 404 (context.STATUS_OF).
    silence = await asyncio.to_thread(context.alerts.expire_silence, silence_id, now_ns)
    await asyncio.to_thread(_tell_released, context, now_ns)
    return json_response(silence_json(silence, now_ns))


def _tell_released(context: ApiContext, now_ns: int) -> None:
    # The book hands what it releases to its dispatcher (the service wires one).
    context.alerts.refresh_after_silence_change(now_ns)


async def list_dead_deliveries(request: web.Request) -> web.Response:
    """Notifications given up on, the most recent first."""
    outbox = request.app[CONTEXT].outbox
    dead = await asyncio.to_thread(outbox.dead, query_limit(request))
    return json_response({"deliveries": [delivery_json(x) for x in dead]})


def alert_json(view: AlertView) -> dict[str, Any]:
    alert, ack = view.alert, view.ack
    return {
        **_alert_record_json(alert),
        "acknowledged": None if ack is None else {
            "at": format_time(ack.at_ns), "by": ack.by, "comment": ack.comment},
        "silenced_by": view.silenced_by,
        "notified": {
            "status": view.notified.status,
            "at": None if view.notified.at_ns is None else format_time(view.notified.at_ns),
        },
    }


def _alert_record_json(alert: Alert) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint, "rule": alert.rule, "subject": alert.subject,
        "status": alert.status.value, "severity": alert.severity.value,
        "labels": dict(alert.labels), "annotations": dict(alert.annotations),
        "starts_at": format_time(alert.starts_at_ns),
        "ends_at": None if alert.ends_at_ns is None else format_time(alert.ends_at_ns),
        "active_at": format_time(alert.active_at_ns),
        "evaluated_at": format_time(alert.evaluated_at_ns),
    }


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "id": entry.id, "change": entry.change, "status": entry.status.value,
        "severity": entry.severity.value, "labels": dict(entry.labels),
        "at": format_time(entry.at_ns), "recorded_at": format_time(entry.recorded_at_ns),
        "paged": entry.paged, "reason": entry.reason, "note": entry.note,
    }


def silence_json(silence: Silence, now_ns: int) -> dict[str, Any]:
    return {
        "id": silence.id,
        # The syntax POST /api/silences takes, so a listed silence can be copied.
        "matchers": [str(matcher) for matcher in silence.matchers],
        "starts_at": format_time(silence.starts_at_ns),
        "ends_at": format_time(silence.ends_at_ns),
        "created_by": silence.created_by, "comment": silence.comment,
        "state": silence.state(now_ns),
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    try:
        body: object = orjson.loads(delivery.body)
    except orjson.JSONDecodeError:
        body = delivery.body.decode("utf-8", errors="replace")
    return {
        "id": delivery.id, "receiver": delivery.receiver, "fingerprint": delivery.fingerprint,
        "created_at": format_time(delivery.created_ns), "state": delivery.state,
        "attempts": delivery.attempts, "last_error": delivery.last_error,
        "finished_at": None if delivery.finished_ns is None else format_time(delivery.finished_ns),
        "body": body,
    }


def _status(raw: str | None) -> AlertStatus | None:
    if raw is None or raw == "":
        return None
    try:
        return AlertStatus(raw)
    except ValueError:
        known = ", ".join(status.value for status in AlertStatus)
        raise ApiError(400, f"status must be one of {known}, got {raw!r}") from None


def _matchers(texts: list[str]) -> list[Matcher]:
    """Parsed matchers; a MatcherError (a SilenceError) answers 400 (context.STATUS_OF)."""
    return [parse_matcher(text) for text in texts]


def _flag(raw: str, name: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ApiError(400, f"{name} must be true or false, got {raw!r}")


def _positive_duration_ns(text: str) -> int:
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise ApiError(400, f"duration: {exc}") from None
    if duration <= timedelta(0):
        raise ApiError(400, f"duration must be positive, got {text!r}")
    return to_ns(duration)
