"""What every API handler shares: the context, errors as JSON, bearer auth, query and body parsing.

Errors (all answered as `{"error": "..."}` by `errors_as_json`):

    ApiError(status, message)    raised by handlers and the auth check: 400, 401, 403, 404, 409
    web.HTTPException            aiohttp's own (unknown route 404, wrong method 405, body 413)
    a class in STATUS_OF         raised on purpose below the API (siaga_core.errors): an
                                 InputError 400, 404 or 409, a StorageError 503
    RequestPayloadError          aiohttp's: a body that cannot be read as sent (its
                                 Content-Encoding is not what it says): 400
    ConnectionResetError         the client went away mid-request: logged at info, unanswered
    any other Exception          a bug: logged with its traceback, answered 500
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, SecretStr, ValidationError

from devices.readings import Reading
from devices.registry import Registry
from ingest.deadletters import DeadLetterStore
from ingest.stats import IngestStats
from ingest.storage import StorageStats
from reports.errors import (
    KeyRefused,
    PhotoTooLarge,
    ReportRefused,
    TooManyReports,
    UnknownReport,
)
from rules.alertbook import AlertBook, AlertNotActive, UnknownSilence
from rules.alerting import AlertingMetrics
from rules.outbox import Outbox
from rules.silences import SilenceError
from siaga_core.errors import InputError, StorageError

if TYPE_CHECKING:
    from siaga.citizens import CitizenDesk

log = logging.getLogger(__name__)

# Methods that change state; everything else only reads and stays open (documented).
MUTATING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LIMIT_DEFAULT: Final = 100  # a screenful or two of rows
LIMIT_MAX: Final = 1000  # bounds one response (dead letters carry payloads of up to 64 KiB)
NO_TOKEN_MESSAGE: Final = (
    "mutating endpoints are disabled until a token is configured: set http.token / SIAGA_API_TOKEN"
)
_REALM: Final = 'Bearer realm="siaga"'
# The HTTP edge of the error tree: the status of an error raised on purpose below the API,
# answered with its message. The first class that matches wins, so the most specific comes
# first; an error in none of them is a bug (500).
STATUS_OF: Final[Mapping[type[Exception], int]] = {
    SilenceError: 400,  # a silence or matcher that cannot be
    AlertNotActive: 409,  # acknowledging a resolved alert: the alert's state, not the request
    UnknownSilence: 404,
    UnknownReport: 404,  # no such report, category, photo or key
    KeyRefused: 403,  # GeoReport: a missing or wrong api_key is 403
    PhotoTooLarge: 413,
    TooManyReports: 429,  # with Retry-After (errors_as_json adds it)
    ReportRefused: 400,
    InputError: 400,
    StorageError: 503,  # the service's trouble, not the caller's: ask again later
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ApiContext:
    """Everything the API reads or changes; the service fills it and keeps the mappings live.

    `devices_seen` (device id -> wall-clock ns of its latest message) and `latest` (device
    id -> its latest reading) are read on the event loop, where the pipeline updates them.
    `readiness` names what keeps the service from being ready; empty means ready.
    """

    registry: Registry
    alerts: AlertBook
    dead_letters: DeadLetterStore
    outbox: Outbox
    ingest_stats: IngestStats
    storage_stats: Callable[[], StorageStats | None]
    readiness: Callable[[], Sequence[str]]
    token: SecretStr | None
    devices_seen: Mapping[str, int] = field(default_factory=dict)
    latest: Mapping[str, Reading] = field(default_factory=dict)
    clock_ns: Callable[[], int] = time.time_ns
    desk: CitizenDesk | None = None  # residents' reports; None: the service takes none
    external_url: str | None = None  # the base of links in answers (a report's media_url)
    build_commit: str = "unknown"  # siaga_build_info's commit label (SIAGA_BUILD_COMMIT)
    # Notification latency, Alertmanager counts, devices by state, read at each scrape.
    alerting_metrics: Callable[[], AlertingMetrics | None] = lambda: None


CONTEXT: Final = web.AppKey("siaga_api_context", ApiContext)
# An error's body for the paths under a prefix, when it is not `{"error": ...}`: Open311's
# clients expect GeoReport's error list. Those paths check their own credentials (an
# `api_key`), so the bearer token is not asked of them.
ErrorBody = Callable[[web.Request, int, str, Mapping[str, str] | None], web.Response]
EDGES: Final = web.AppKey("siaga_api_edges", dict[str, ErrorBody])


class ApiError(Exception):
    """An answer other than success, with the status code and a message for the caller."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(data: object, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    """`data` as JSON through orjson (which refuses NaN, so clients never get invalid JSON)."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None
                   ) -> web.Response:
    return json_response({"error": message}, status, headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as `{"error": "..."}` with its status code."""
    respond = _error_body(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return respond(request, exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep headers such as Allow (405), drop the ones describing aiohttp's text body.
        kept = {k: v for k, v in exc.headers.items()
                if k.lower() not in ("content-type", "content-length")}
        return respond(request, exc.status, _routing_message(request, exc), kept)
    except RequestPayloadError as exc:
        answer = respond(request, 400, f"the request body cannot be read: {_last_line(exc)}",
                         None)
        # What is left of the body is unreadable too: aiohttp, which reads it out after
        # the answer to keep the connection, would log that as an unhandled exception.
        # The body is over, and so is the connection.
        request.content.feed_eof()
        answer.force_close()
        return answer
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # Not a bug, so no traceback: a resident's phone lost its signal mid-upload.
            log.info("HTTP API: %s %s: the client went away mid-request", request.method,
                     request.path)
            return respond(request, 400, "the connection was lost mid-request", None)
        status = status_of(exc)
        if status is None:
            log.exception("HTTP API: %s %s failed", request.method, request.path)
            return respond(request, 500, "internal error; the service log has the details",
                           None)
        if status >= 500:
            log.warning("HTTP API: %s %s: %s", request.method, request.path, exc)
        headers = ({"Retry-After": str(exc.retry_after_s)}
                   if isinstance(exc, TooManyReports) else None)
        return respond(request, status, str(exc), headers)


def _last_line(exc: Exception) -> str:
    # aiohttp's payload errors read "400, message:\n  Can not decode content-encoding: gzip".
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _client_gone(request: web.Request) -> bool:
    transport = request.transport  # aiohttp drops it when the connection is lost
    return transport is None or transport.is_closing()


def _plain_error(request: web.Request, status: int, message: str,
                 headers: Mapping[str, str] | None) -> web.Response:
    return error_response(status, message, headers)


def _error_body(request: web.Request) -> ErrorBody:
    for prefix, body in request.app.get(EDGES, {}).items():
        if request.path.startswith(prefix):
            return body
    return _plain_error


def own_credentials(request: web.Request) -> bool:
    """The path is under an edge that checks its own credentials (see EDGES)."""
    return any(request.path.startswith(prefix) for prefix in request.app.get(EDGES, {}))


def status_of(exc: Exception) -> int | None:
    """The status STATUS_OF gives `exc`; None when it is not an error raised on purpose."""
    return next((status for kind, status in STATUS_OF.items() if isinstance(exc, kind)), None)


def _routing_message(request: web.Request, exc: web.HTTPException) -> str:
    # Handlers raise ApiError; aiohttp's own errors come from routing and body limits.
    if isinstance(exc, web.HTTPNotFound):
        return f"no endpoint {request.path}: /openapi.json lists them"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"{request.method} is not allowed on {request.path}"
    return exc.reason


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mutating requests need the configured bearer token; reads are open."""
    if request.method in MUTATING_METHODS and not own_credentials(request):
        check_token(request.app[CONTEXT].token, request.headers.get("Authorization"))
    return await handler(request)


def check_token(expected: SecretStr | None, authorization: str | None) -> None:
    """Raise 403 when no token is configured (refuse rather than be open), 401 when the
    request's is missing or wrong."""
    # An empty token is a blank in the configuration, not a password anyone should type.
    if expected is None or not expected.get_secret_value():
        raise ApiError(403, NO_TOKEN_MESSAGE)
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "missing bearer token: send Authorization: Bearer <token>",
                       {"WWW-Authenticate": _REALM})
    # Constant time over equal-length digests: the answer's timing tells neither how much
    # of a guess matched nor how long the token is.
    if not hmac.compare_digest(_digest(given.strip()), _digest(expected.get_secret_value())):
        raise ApiError(401, "invalid bearer token",
                       {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'})


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def query_limit(request: web.Request) -> int:
    """The `limit` query parameter: 1 to LIMIT_MAX, LIMIT_DEFAULT when absent."""
    raw = request.query.get("limit")
    if raw is None:
        return LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be an integer, got {raw!r}") from None
    if not 1 <= limit <= LIMIT_MAX:
        raise ApiError(400, f"limit must be between 1 and {LIMIT_MAX}, got {limit}")
    return limit


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """The request's JSON body validated by `model`; 400 naming each problem otherwise."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid body: " + describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: `field: problem; field: problem`."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
