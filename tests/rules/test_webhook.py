"""The SPEC section 3 webhook: body, signature, headers, redaction, and one POST's outcome."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from rules.alert import Notification, fingerprint
from rules.routing import Receiver
from rules.webhook import (
    ZERO_TIME,
    build_body,
    format_rfc3339,
    headers,
    outcome_for,
    parse_retry_after,
    post,
    redact_url,
    sign,
)
from tests.receiver import Answer, RecordingReceiver

STARTS_NS = 1_600_675_200_123_000_000  # 2020-09-21T08:00:00.123Z
ENDS_NS = 1_600_680_000_000_000_000  # 2020-09-21T09:20:00Z
FLOOD = fingerprint("FloodLevel", "pa-katulampa")


# --- the body ---


def notification(**changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "fingerprint": FLOOD,
        "status": "firing",
        "reason": "new",
        "labels": {"alertname": "FloodLevel", "severity": "major", "device_id": "pa-katulampa",
                   "kind": "water-level", "level": "siaga-2", "river": "Ciliwung"},
        "annotations": {"summary": "Katulampa at Siaga 2", "description": "160 cm",
                        "value": "160"},
        "starts_at_ns": STARTS_NS,
        "ends_at_ns": None,
    } | changes
    return Notification(**fields)


def test_the_body_is_an_alertmanager_v4_message_with_one_alert() -> None:
    sent = notification()
    body = orjson.loads(build_body(sent, "bpbd", "https://siaga.example/"))
    assert body == {
        "version": "4",
        "groupKey": f"bpbd:{FLOOD}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "bpbd",
        "groupLabels": {"alertname": "FloodLevel"},
        "commonLabels": dict(sent.labels),
        "commonAnnotations": dict(sent.annotations),
        "externalURL": "https://siaga.example",
        "alerts": [{
            "status": "firing",
            "labels": dict(sent.labels),
            "annotations": dict(sent.annotations),
            "startsAt": "2020-09-21T08:00:00.123Z",
            "endsAt": ZERO_TIME,
            "generatorURL": f"https://siaga.example/api/alerts/{FLOOD}",
            "fingerprint": FLOOD,
        }],
    }


def test_a_resolved_body_carries_the_end_time() -> None:
    body = orjson.loads(build_body(
        notification(status="resolved", reason="resolved", ends_at_ns=ENDS_NS),
        "bpbd", "https://siaga.example"))
    assert body["status"] == body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2020-09-21T09:20:00Z"


def test_the_group_key_is_stable_per_alert_and_receiver() -> None:
    first = orjson.loads(build_body(notification(), "bpbd", "https://siaga.example"))
    later = orjson.loads(build_body(
        notification(reason="changed", labels={"alertname": "FloodLevel", "level": "siaga-1"}),
        "bpbd", "https://siaga.example"))
    other = orjson.loads(build_body(notification(), "monitoring", "https://siaga.example"))
    assert first["groupKey"] == later["groupKey"] != other["groupKey"]


@pytest.mark.parametrize(("ns", "text"), [
    (0, "1970-01-01T00:00:00Z"),
    (STARTS_NS, "2020-09-21T08:00:00.123Z"),
    (1_600_675_200_000_000_001, "2020-09-21T08:00:00.000000001Z"),
])
def test_times_are_rfc3339_in_utc_with_only_the_fraction_needed(ns: int, text: str) -> None:
    assert format_rfc3339(ns) == text


# --- signature and headers ---


def test_the_signature_is_an_hmac_of_timestamp_dot_body() -> None:
    body = b'{"version":"4"}'
    expected = hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k3y", 1_700_000_000, body) == f"sha256={expected}"
    assert sign(SecretStr("k3y"), 1_700_000_000, body) == f"sha256={expected}"


def test_headers_carry_delivery_timestamp_signature_and_extras() -> None:
    receiver = Receiver(name="bpbd", url="https://bpbd.example/", secret=SecretStr("k3y"),
                        headers={"Authorization": "Bearer t"})
    sent = headers("d1", 1_700_000_000, b"{}", receiver)
    assert sent == {
        "Authorization": "Bearer t",
        "Content-Type": "application/json",
        "User-Agent": "Siaga",
        "X-Siaga-Delivery": "d1",
        "X-Siaga-Timestamp": "1700000000",
        "X-Siaga-Signature": sign("k3y", 1_700_000_000, b"{}"),
    }


def test_without_a_secret_there_is_no_signature() -> None:
    sent = headers("d1", 1, b"{}", Receiver(name="a", url="https://a.example/"))
    assert "X-Siaga-Signature" not in sent


def test_extra_headers_never_replace_siagas_even_if_they_got_past_validation() -> None:
    sneaky = Receiver.model_construct(  # skips the validator that refuses these
        name="a", url="https://a.example/", secret=None, timeout_s=10.0,
        headers={"x-siaga-delivery": "forged", "CONTENT-TYPE": "text/plain", "X-Team": "ops"})
    sent = headers("d1", 1, b"{}", sneaky)
    assert {name.lower() for name in sent} == {
        "x-team", "content-type", "user-agent", "x-siaga-delivery", "x-siaga-timestamp"}
    assert sent["X-Siaga-Delivery"] == "d1"
    assert sent["Content-Type"] == "application/json"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://bpbd.example/hook", "https://bpbd.example/hook"),
    ("https://user:pass@bpbd.example:8443/hook", "https://redacted@bpbd.example:8443/hook"),
    ("https://bpbd.example/hook?token=abc&channel=ops",
     "https://bpbd.example/hook?token=redacted&channel=redacted"),
    ("http://tok@[::1]:9000/x?key=1", "http://redacted@[::1]:9000/x?key=redacted"),
])
def test_urls_are_logged_without_credentials_or_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --- judging answers ---


@pytest.mark.parametrize(("status", "kind"), [
    (200, "delivered"), (202, "delivered"), (204, "delivered"),
    (500, "retry"), (502, "retry"), (503, "retry"), (429, "retry"), (408, "retry"),
    (400, "failed"), (401, "failed"), (404, "failed"), (410, "failed"), (301, "failed"),
])
def test_statuses_say_whether_to_retry(status: int, kind: str) -> None:
    assert outcome_for(status, "text", None, 0.0).kind == kind


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after("120", 0.0) == 120.0


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:00 GMT", now) == pytest.approx(40.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e9x"])
def test_an_unreadable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, 0.0) is None


# --- one POST against a real receiver ---


async def attempt(receiver: Receiver, body: bytes = b"{}") -> Any:
    async with aiohttp.ClientSession() as session:
        return await post(session, receiver, "d1", body, time.time())


async def test_a_post_sends_the_bytes_and_a_signature_that_verifies(
    server: RecordingReceiver,
) -> None:
    body = build_body(notification(), "bpbd", "https://siaga.example")
    receiver = Receiver(name="bpbd", url=server.url, secret=SecretStr("k3y"))
    outcome = await attempt(receiver, body)
    assert (outcome.kind, outcome.status) == ("delivered", 200)
    (seen,) = server.requests
    assert seen.body == body
    signed = seen.headers["X-Siaga-Timestamp"].encode() + b"." + seen.body
    expected = "sha256=" + hmac.new(b"k3y", signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(seen.headers["X-Siaga-Signature"], expected)
    assert abs(int(seen.headers["X-Siaga-Timestamp"]) - time.time()) < 5


async def test_a_503_with_retry_after_asks_to_retry_then(server: RecordingReceiver) -> None:
    server.default = Answer(503, {"Retry-After": "7"})
    outcome = await attempt(Receiver(name="a", url=server.url))
    assert (outcome.kind, outcome.status, outcome.retry_after_s) == ("retry", 503, 7.0)
    assert outcome.reason.startswith("503 Service Unavailable")


async def test_a_404_fails_for_good(server: RecordingReceiver) -> None:
    server.default = Answer(404)
    outcome = await attempt(Receiver(name="a", url=server.url))
    assert (outcome.kind, outcome.status) == ("failed", 404)


async def test_no_answer_in_time_is_retried(server: RecordingReceiver) -> None:
    server.default = Answer(200, delay_s=2.0)
    outcome = await attempt(Receiver(name="a", url=server.url, timeout_s=0.2))
    assert (outcome.kind, outcome.status) == ("retry", None)
    assert outcome.reason == "no answer within 0.2s"


async def test_a_receiver_that_is_down_is_retried() -> None:
    down = RecordingReceiver()  # its port held but never listening: connections are refused
    try:
        outcome = await attempt(Receiver(name="a", url=down.url))
    finally:
        await down.stop()
    assert (outcome.kind, outcome.status) == ("retry", None)
    assert outcome.reason
