"""Raw MQTT messages -> validated readings, status updates or dead letters; never raises."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal

import orjson
from pydantic import ValidationError

from devices.readings import READING_VALIDATORS, Reading, StatusUpdate, explain, to_reading
from devices.registry import Registry
from devices.topics import InvalidTopic, Topic, TopicScheme
from ingest.deadletters import DeadLetter

MAX_BATCH = 1000  # SPEC section 1: a batch holds up to 1000 readings
TOPIC_CACHE_MAX = 200_000  # parsed topics kept; a city's fleet fits, a topic flood does not grow it

UnknownDevicePolicy = Literal["dead-letter", "accept"]
# What orjson.loads returns, by the names a device developer knows from JSON.
_JSON_TYPES: Final = {
    "NoneType": "null", "bool": "bool", "int": "number", "float": "number", "str": "string",
    "list": "array", "dict": "object",
}


@dataclass(slots=True)
class Decoded:
    """What a run of messages decoded to; the pipeline empties it at each flush."""

    readings: list[Reading] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    # SPEC: unknown fields are ignored, and counted by device and field name.
    ignored_fields: Counter[tuple[str, str]] = field(default_factory=Counter)


class Decoder:
    """Turns one MQTT message into readings or dead letters, appending to a `Decoded`."""

    def __init__(
        self,
        registry: Registry,
        topics: TopicScheme,
        *,
        unknown_devices: UnknownDevicePolicy = "dead-letter",
        max_future_s: float = 300.0,
    ) -> None:
        self._registry = registry
        self._topics = topics
        self._accept_unknown = unknown_devices == "accept"
        self._max_future_ns = int(max_future_s * 1e9)
        self._parsed: dict[str, Topic] = {}  # valid topics only: see _parse_topic

    @property
    def registry(self) -> Registry:
        """The catalog it checks devices against; the pipeline takes series tags from it."""
        return self._registry

    def decode(self, topic: str, payload: bytes, received_ns: int, out: Decoded) -> None:
        parsed = self._parse_topic(topic)
        if isinstance(parsed, str):
            out.dead.append(DeadLetter(topic, payload, parsed, received_ns, "bad-topic"))
            return
        if parsed.channel == "status" and not payload:
            return  # an empty retained message clears the status: nothing to record
        # Statuses too: `offline` on another kind's topic would mark a real device offline.
        rejection = self._check_device(parsed)
        if rejection is not None:
            code, reason = rejection
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, code))
            return
        if parsed.channel == "status":
            self._decode_status(parsed, topic, payload, received_ns, out)
            return
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            reason = _json_problem(payload, exc)
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "bad-json"))
            return
        if isinstance(document, dict):
            self._decode_item(parsed, topic, payload, document, received_ns, out, None)
        elif isinstance(document, list):
            self._decode_batch(parsed, topic, payload, document, received_ns, out)
        else:
            reason = f"expected a JSON object or array, got {_json_type(document)}"
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "bad-json"))

    def _parse_topic(self, topic: str) -> Topic | str:
        parsed = self._parsed.get(topic)
        if parsed is None:
            try:
                parsed = self._topics.parse(topic)
            except InvalidTopic as exc:
                # Not remembered: a topic level can be 64 KiB long, so a flood of distinct
                # bad topics would hold gigabytes. A valid topic is short (a 64-char id).
                return str(exc)
            if len(self._parsed) >= TOPIC_CACHE_MAX:
                self._parsed.clear()
            self._parsed[topic] = parsed
        return parsed

    def _check_device(self, parsed: Topic) -> tuple[str, str] | None:
        device = self._registry.get(parsed.device_id)
        if device is None:
            if self._accept_unknown:
                return None
            return "unknown-device", f"device {parsed.device_id!r} is not in the catalog"
        if device.kind != parsed.kind:
            return (
                "kind-mismatch",
                f"device {parsed.device_id!r} is a {device.kind} device, not {parsed.kind}",
            )
        return None

    def _decode_status(
        self, parsed: Topic, topic: str, payload: bytes, received_ns: int, out: Decoded
    ) -> None:
        if payload in (b"online", b"offline"):
            online = payload == b"online"
            out.statuses.append(StatusUpdate(parsed.kind, parsed.device_id, online, received_ns))
        else:
            reason = "status must be 'online' or 'offline'"
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "bad-status"))

    def _decode_batch(
        self,
        parsed: Topic,
        topic: str,
        payload: bytes,
        items: list[object],
        received_ns: int,
        out: Decoded,
    ) -> None:
        if len(items) > MAX_BATCH:
            reason = f"batch of {len(items)} readings; at most {MAX_BATCH} per message"
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "batch-too-large"))
            return
        if not items:
            out.dead.append(DeadLetter(topic, payload, "empty batch", received_ns, "bad-json"))
            return
        for index, item in enumerate(items):
            if isinstance(item, dict):
                self._decode_item(parsed, topic, payload, item, received_ns, out, index)
            else:
                reason = f"item {index}: expected a JSON object, got {_json_type(item)}"
                raw = _item_json(item)
                out.dead.append(DeadLetter(topic, raw, reason, received_ns, "invalid-reading"))

    def _decode_item(
        self,
        parsed: Topic,
        topic: str,
        payload: bytes,
        item: dict[str, object],
        received_ns: int,
        out: Decoded,
        index: int | None,
    ) -> None:
        """Validate one reading; a batch item's dead letter keeps only that item."""
        try:
            model = READING_VALIDATORS[parsed.kind](item)
            reading = to_reading(model, parsed.kind, parsed.device_id, received_ns)
        except (ValidationError, ValueError) as exc:
            reason = explain(exc) if isinstance(exc, ValidationError) else str(exc)
            self._reject(topic, payload, item, index, reason, received_ns, out, "invalid-reading")
            return
        if reading.ts_ns - received_ns > self._max_future_ns:
            ahead = (reading.ts_ns - received_ns) / 1e9
            reason = f"ts: {ahead:.0f} s in the future (device clock wrong?)"
            self._reject(topic, payload, item, index, reason, received_ns, out, "future-ts")
            return
        extra = model.__pydantic_extra__  # what `model_extra` returns, minus a property call
        if extra:
            for name in extra:
                out.ignored_fields[(parsed.device_id, name)] += 1
        out.readings.append(reading)

    @staticmethod
    def _reject(
        topic: str,
        payload: bytes,
        item: dict[str, object],
        index: int | None,
        reason: str,
        received_ns: int,
        out: Decoded,
        code: str,
    ) -> None:
        if index is None:
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, code))
        else:
            raw = _item_json(item)
            out.dead.append(DeadLetter(topic, raw, f"item {index}: {reason}", received_ns, code))


def _json_problem(payload: bytes, exc: orjson.JSONDecodeError) -> str:
    if not payload:
        return "empty payload"
    # orjson says "surrogates not allowed" at column 1 for any bad byte: say which and where.
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 JSON: byte {bad.start} ({payload[bad.start]:#04x}): {bad.reason}"
    return f"not valid UTF-8 JSON: {exc}"


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value).__name__, type(value).__name__)


def _item_json(item: object) -> bytes:
    """One batch item as JSON, for its own dead letter.

    orjson reads 1024 levels of nesting but writes only 254 (it raises past that), so an
    item it read may be one it cannot write back: those go through `_deep_json`.
    """
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return _deep_json(item)


def _deep_json(value: object) -> bytes:
    """Compact JSON of what orjson.loads returned, however deep, with an explicit stack."""
    parts: list[bytes] = []
    # Pending values, last first; a bytes entry is literal output (loads never returns bytes).
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, bytes):
            parts.append(node)
        elif isinstance(node, list):
            stack.append(b"]")
            for index in range(len(node) - 1, -1, -1):
                stack.append(node[index])
                if index:
                    stack.append(b",")
            parts.append(b"[")
        elif isinstance(node, dict):
            stack.append(b"}")
            entries = list(node.items())
            for index in range(len(entries) - 1, -1, -1):
                key, child = entries[index]
                stack.extend((child, orjson.dumps(key) + b":"))
                if index:
                    stack.append(b",")
            parts.append(b"{")
        else:
            parts.append(orjson.dumps(node))
    return b"".join(parts)
