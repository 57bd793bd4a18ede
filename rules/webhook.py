"""The SPEC section 3 webhook: Alertmanager v4 body, signed headers, and one POST's outcome.

The notifier says whether to retry (as Alertmanager's `Retrier.Check`); the delivery worker
backs off until a deadline. aiohttp's errors are translated here, never raised past `post`:

    Outcome.kind
    ├── "delivered"  2xx
    ├── "retry"      no connection, no answer in time (timeout), 5xx, 429 and 408;
    │                `retry_after_s` from a `Retry-After` header (seconds or HTTP date)
    └── "failed"     any other answer (3xx, 4xx): the same bytes would fail again
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson
from pydantic import SecretStr

from rules.alert import Notification
from rules.routing import RESERVED_HEADER_PREFIX, RESERVED_HEADERS, Receiver

USER_AGENT = "Siaga"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt for an alert with no end yet
REASON_MAX_CHARS = 200  # a receiver's error page is quoted in logs; one line is enough
REDACTED = "redacted"
_NS_PER_S = 1_000_000_000
# 408 is the server giving up on a slow request, not a judgement of the request: retry it.
RETRY_STATUSES = frozenset({408, 429})


def build_body(notification: Notification, receiver_name: str, external_url: str) -> bytes:
    """The Alertmanager webhook v4 body of one notification for one receiver."""
    base = external_url.rstrip("/")
    labels = dict(notification.labels)
    annotations = dict(notification.annotations)
    alert = {
        "status": notification.status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": format_rfc3339(notification.starts_at_ns),
        "endsAt": (ZERO_TIME if notification.ends_at_ns is None
                   else format_rfc3339(notification.ends_at_ns)),
        "generatorURL": f"{base}/api/alerts/{notification.fingerprint}",
        "fingerprint": notification.fingerprint,
    }
    body = {
        "version": "4",
        "groupKey": group_key(receiver_name, notification.fingerprint),
        "truncatedAlerts": 0,
        "status": notification.status,
        "receiver": receiver_name,
        "groupLabels": {"alertname": labels["alertname"]} if "alertname" in labels else {},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": base,
        "alerts": [alert],
    }
    return orjson.dumps(body)


def group_key(receiver_name: str, fingerprint: str) -> str:
    """One group per alert and receiver: receivers deduplicate incidents by it."""
    return f"{receiver_name}:{fingerprint}"


def format_rfc3339(ns: int) -> str:
    """UTC RFC 3339 with as many fraction digits as needed, like Go's RFC3339Nano."""
    seconds, rest = divmod(ns, _NS_PER_S)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{rest:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def sign(secret: SecretStr | str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256, keyed by the secret, of `<timestamp>.<body>`."""
    key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    digest = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def headers(delivery_id: str, timestamp: int, body: bytes, receiver: Receiver) -> dict[str, str]:
    """The headers of one attempt; the receiver's extra headers never replace Siaga's."""
    extra = {
        name: value for name, value in receiver.headers.items()
        if not _reserved(name)  # the model refuses these already; a second guard costs nothing
    }
    ours = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Siaga-Delivery": delivery_id,
        "X-Siaga-Timestamp": str(timestamp),
    }
    if receiver.secret is not None:
        ours["X-Siaga-Signature"] = sign(receiver.secret, timestamp, body)
    return extra | ours


def _reserved(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith(RESERVED_HEADER_PREFIX) or lowered in RESERVED_HEADERS


def redact_url(url: str) -> str:
    """`url` with its user, password and query values hidden, safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    query = urlencode(
        [(name, REDACTED) for name, _ in parse_qsl(parts.query, keep_blank_values=True)],
        safe="",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST came to, and whether trying again could help."""

    kind: Literal["delivered", "retry", "failed"]
    reason: str  # short, for people: "503 Service Unavailable: try later", "timeout after 10s"
    status: int | None = None  # the HTTP status, None when there was no answer
    retry_after_s: float | None = None  # the receiver's own `Retry-After`, when it gave one


def outcome_for(status: int, text: str, retry_after: str | None, now_s: float) -> Outcome:
    """Judge an HTTP answer (Alertmanager's `Retrier.Check`)."""
    reason = f"{status} {_one_line(text)}".strip()
    if 200 <= status < 300:
        return Outcome("delivered", reason, status)
    if status >= 500 or status in RETRY_STATUSES:
        return Outcome("retry", reason, status, parse_retry_after(retry_after, now_s))
    return Outcome("failed", reason, status)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP dates are GMT; "-0000" parses as naive
    return max(0.0, when.timestamp() - now_s)


async def post(
    session: aiohttp.ClientSession,
    receiver: Receiver,
    delivery_id: str,
    body: bytes,
    now_s: float,
) -> Outcome:
    """POST one attempt of a delivery, signed at `now_s`; never raises for network trouble."""
    timeout = aiohttp.ClientTimeout(total=receiver.timeout_s)
    sent = headers(delivery_id, int(now_s), body, receiver)
    try:
        # Redirects are not followed: a POST turned into a GET would lose the notification.
        async with session.post(receiver.url, data=body, headers=sent, timeout=timeout,
                                allow_redirects=False) as response:
            text = await response.content.read(REASON_MAX_CHARS * 4)
            answer = " ".join(part for part in (
                response.reason or "", text.decode("utf-8", errors="replace")) if part)
            return outcome_for(response.status, answer, response.headers.get("Retry-After"),
                               now_s)
    except TimeoutError:
        return Outcome("retry", f"no answer within {receiver.timeout_s:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        # Some aiohttp errors quote the URL, which may carry credentials.
        message = (str(exc) or type(exc).__name__).replace(receiver.url, redact_url(receiver.url))
        return Outcome("retry", _one_line(message))


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_MAX_CHARS else flat[: REASON_MAX_CHARS - 3] + "..."


def describe(receiver: Receiver) -> str:
    """A receiver for logs: its name and redacted URL."""
    return f"{receiver.name} ({redact_url(receiver.url)})"
