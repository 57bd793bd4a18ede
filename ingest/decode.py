"""Raw MQTT messages -> validated readings, detections, status updates or dead letters.

Never raises. A device's telemetry may be a SenML pack (`ingest.senml`), resolved into
readings shaped as Siaga's own and validated the same way; uplinks of LoRaWAN network
servers on their own topics (`ingest.lorawan`, a `ReadingSource`) become readings of the
catalog devices they name, validated the same way too. A camera's `events` channel (SPEC
section 7) decodes to `Detection`s; a plate in one is kept only when the watch list has it
(`ingest.watchlist`), otherwise it is counted and dropped here, before anything downstream
can hold it. Every dead letter that may
hold a plate (a camera's topic, an `events` channel, Frigate's topic, or a payload that
says `plate`) is redacted (`ingest.deadletters.redact_plates`) before it leaves.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol

import orjson
from pydantic import ValidationError

from devices.detections import Detection, explain_event, validate_event
from devices.kinds import Kind
from devices.readings import READING_VALIDATORS, Reading, StatusUpdate, explain, to_reading
from devices.registry import Registry
from devices.structs import fast_readings
from devices.topics import InvalidTopic, Topic, TopicScheme
from ingest.deadletters import DeadLetter, json_bytes, looks_like_plate, redact_plates
from ingest.lorawan import NetworkReading, Refused
from ingest.senml import SenmlRefused, looks_like_senml, to_items
from ingest.watchlist import Watchlist

MAX_BATCH = 1000  # SPEC section 1: a batch holds up to 1000 readings (and events, issue 16)
TOPIC_CACHE_MAX = 200_000  # parsed topics kept; a city's fleet fits, a topic flood does not grow it
ROUTED_TOPIC_MAX = 256  # longer topics are matched each time, not remembered (see _route)

UnknownDevicePolicy = Literal["dead-letter", "accept"]
# What orjson.loads returns, by the names a device developer knows from JSON.
_JSON_TYPES: Final = {
    "NoneType": "null", "bool": "bool", "int": "number", "float": "number", "str": "string",
    "list": "array", "dict": "object",
}
# A dead letter whose payload says `plate` anywhere is redacted whatever its topic: a
# camera may send an event on its telemetry topic, or a device a plate in a field.
_SAYS_PLATE: Final = re.compile(rb"(?i)plate")
# An unknown field of a camera's counts whose name could be a plate is counted under this.
PLATE_LIKE_FIELD: Final = "(a name like a plate)"


class DetectionSource(Protocol):
    """Another source of detections on its own topic: Frigate (`ingest.frigate`)."""

    @property
    def topic(self) -> str: ...

    def to_detections(self, payload: bytes,
                      received_ns: int) -> tuple[list[Detection], str | None]:
        """The message's detections, or why it is refused (a reason naming no value)."""


class ReadingSource(Protocol):
    """Another network's uplinks on its own topics: ChirpStack, The Things Stack
    (`ingest.lorawan`)."""

    @property
    def topic(self) -> str:
        """The subscription filter (MQTT wildcards allowed)."""

    def matches(self, topic: str) -> bool:
        """Whether a message on `topic` is this source's."""

    def read(self, payload: bytes, received_ns: int) -> NetworkReading | Refused:
        """The message as a catalog device's reading (to validate), or why it is none."""


@dataclass(slots=True)
class Decoded:
    """What a run of messages decoded to. The pipeline lets go of the readings and the
    detections once a step has handed them to the rules and made them lines, and of the
    rest at each flush."""

    readings: list[Reading] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    # SPEC: unknown fields are ignored, and counted by device and field name.
    ignored_fields: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Cameras' events; `plate` set only for a listed plate (normalized, as the watch list
    # writes it: the rules look its labels up with `Watchlist.labels_of`).
    detections: list[Detection] = field(default_factory=list)
    plates_listed: int = 0
    plates_unlisted: int = 0  # dropped: counted, never kept


class Decoder:
    """Turns one MQTT message into readings or dead letters, appending to a `Decoded`."""

    def __init__(
        self,
        registry: Registry,
        topics: TopicScheme,
        *,
        unknown_devices: UnknownDevicePolicy = "dead-letter",
        max_future_s: float = 300.0,
        watchlist: Watchlist | None = None,
        frigate: DetectionSource | None = None,
        sources: Sequence[ReadingSource] = (),
        fast: bool = True,
    ) -> None:
        """Without a `watchlist` no plate is listed, so none is kept; `frigate` decodes
        the messages of its topic, `sources` those of theirs (their subscriptions are the
        service's). `fast=False` turns off the fast path (`devices.structs`): every message
        then takes the reference path, as the equivalence tests need."""
        self._registry = registry
        self._topics = topics
        self._accept_unknown = unknown_devices == "accept"
        self._max_future_ns = int(max_future_s * 1e9)
        self._parsed: dict[str, Topic] = {}  # valid topics only: see _parse_topic
        self._watchlist = watchlist or Watchlist()
        self._frigate = frigate
        self._frigate_topic = frigate.topic if frigate is not None else None
        self._sources = tuple(sources)
        self._routes: dict[str, ReadingSource | None] = {}  # topic -> its source, if any
        self._fast = fast

    @property
    def registry(self) -> Registry:
        """The catalog it checks devices against; the pipeline takes series tags from it."""
        return self._registry

    @property
    def watchlist(self) -> Watchlist:
        """The plates it keeps (empty: none)."""
        return self._watchlist

    def decode(self, topic: str, payload: bytes, received_ns: int, out: Decoded) -> None:
        """Append what the message decodes to onto `out`."""
        dead_before = len(out.dead)
        if topic == self._frigate_topic and self._frigate is not None:
            self._decode_frigate(self._frigate, topic, payload, received_ns, out)
        elif self._sources and (source := self._route(topic)) is not None:
            self._decode_network(source, topic, payload, received_ns, out)
        else:
            self._decode(topic, payload, received_ns, out)
        if len(out.dead) > dead_before and self._may_hold_plates(topic, payload):
            out.dead[dead_before:] = [redact_plates(x) for x in out.dead[dead_before:]]

    def _may_hold_plates(self, topic: str, payload: bytes) -> bool:
        return (topic.endswith("/events") or "/camera/" in topic
                or topic == self._frigate_topic or _SAYS_PLATE.search(payload) is not None)

    def _decode(self, topic: str, payload: bytes, received_ns: int, out: Decoded) -> None:
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
        if self._fast and parsed.channel == "telemetry":
            # Readings every one of which the models accept, with no unknown field, none too
            # far ahead: the same readings as below, in about a quarter of the time a reading
            # (devices.structs says what was measured). Anything else (None) takes the
            # reference path below, which gives each refusal its reason.
            readings = fast_readings(parsed.kind, parsed.device_id, payload, received_ns,
                                     max_items=MAX_BATCH,
                                     latest_ns=received_ns + self._max_future_ns)
            if readings is not None:
                out.readings += readings
                return
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            reason = _json_problem(payload, exc)
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "bad-json"))
            return
        item = self._decode_event if parsed.channel == "events" else self._decode_item
        if isinstance(document, dict):
            item(parsed, topic, payload, document, received_ns, out, None)
        elif (isinstance(document, list) and document and parsed.channel == "telemetry"
              and isinstance(document[0], dict) and looks_like_senml(document[0], parsed.kind)):
            self._decode_senml(parsed, topic, payload, document, received_ns, out)
        elif isinstance(document, list):
            self._decode_batch(parsed, topic, payload, document, received_ns, out, item)
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
        decode_item: _ItemDecoder,
    ) -> None:
        noun, code = ("events", "invalid-event") if parsed.channel == "events" else (
            "readings", "invalid-reading")
        if len(items) > MAX_BATCH:
            reason = f"batch of {len(items)} {noun}; at most {MAX_BATCH} per message"
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "batch-too-large"))
            return
        if not items:
            out.dead.append(DeadLetter(topic, payload, "empty batch", received_ns, "bad-json"))
            return
        for index, item in enumerate(items):
            if isinstance(item, dict):
                decode_item(parsed, topic, payload, item, received_ns, out, index)
            else:
                reason = f"item {index}: expected a JSON object, got {_json_type(item)}"
                raw = json_bytes(item)
                out.dead.append(DeadLetter(topic, raw, reason, received_ns, code))

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
                if parsed.kind is Kind.CAMERA and looks_like_plate(name):
                    name = PLATE_LIKE_FIELD  # counted in the open (/metrics): never a plate
                out.ignored_fields[(parsed.device_id, name)] += 1
        out.readings.append(reading)

    def _decode_event(
        self,
        parsed: Topic,
        topic: str,
        payload: bytes,
        item: dict[str, object],
        received_ns: int,
        out: Decoded,
        index: int | None,
    ) -> None:
        """Validate one camera event; its dead letter's reason never repeats a value sent."""
        try:
            model = validate_event(item)
        except ValidationError as exc:
            reason = explain_event(exc)
            self._reject(topic, payload, item, index, reason, received_ns, out, "invalid-event")
            return
        ts_ns = received_ns if model.ts_ns is None else model.ts_ns
        if ts_ns - received_ns > self._max_future_ns:
            reason = f"ts: {(ts_ns - received_ns) / 1e9:.0f} s in the future (device clock wrong?)"
            self._reject(topic, payload, item, index, reason, received_ns, out, "future-ts")
            return
        device = self._registry.get(parsed.device_id)
        if model.zone is not None and device is not None and device.zones \
                and model.zone not in device.zones:
            # A camera's zones are its catalog's (when it lists them): a zone name per event
            # would grow InfluxDB's series and the rules' counts without bound.
            reason = f"zone: not one of the camera's zones ({', '.join(device.zones)})"
            self._reject(topic, payload, item, index, reason, received_ns, out, "invalid-event")
            return
        plate = None if model.plate is None else self._listed(model.plate, out)
        out.detections.append(Detection(parsed.device_id, ts_ns, model.event_id, model.type,
                                        model.label, model.score, model.zone, plate))

    def _listed(self, plate: str, out: Decoded) -> str | None:
        """The plate as listed, or None (counted) when the watch list does not have it."""
        entry = self._watchlist.match(plate)
        if entry is None:
            out.plates_unlisted += 1
            return None
        out.plates_listed += 1
        return entry.plate

    def _decode_senml(self, parsed: Topic, topic: str, payload: bytes, pack: list[object],
                      received_ns: int, out: Decoded) -> None:
        """A SenML pack: each of its times is one reading, validated as Siaga's own."""
        if len(pack) > MAX_BATCH:
            reason = f"SenML pack of {len(pack)} records; at most {MAX_BATCH} per message"
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "batch-too-large"))
            return
        try:
            items = to_items(pack, parsed.kind, received_ns / 1e9)
        except SenmlRefused as exc:
            out.dead.append(DeadLetter(topic, payload, str(exc), received_ns, "invalid-reading"))
            return
        for item in items:
            before = len(out.dead)
            if item.refusal is None:
                self._decode_item(parsed, topic, payload, item.reading, received_ns, out, None)
            else:
                out.dead.append(DeadLetter(topic, payload, item.refusal, received_ns,
                                           "invalid-reading"))
            if len(items) > 1 and len(out.dead) > before:  # say which of the pack's times
                letter = out.dead[-1]
                out.dead[-1] = replace(letter, reason=f"{item.when}: {letter.reason}")

    def _route(self, topic: str) -> ReadingSource | None:
        if topic in self._routes:
            return self._routes[topic]  # remembered: the hot path matches no filter
        found = next((source for source in self._sources if source.matches(topic)), None)
        if len(topic) <= ROUTED_TOPIC_MAX:  # a flood of long topics must not fill memory
            if len(self._routes) >= TOPIC_CACHE_MAX:
                self._routes.clear()
            self._routes[topic] = found
        return found

    def _decode_network(self, source: ReadingSource, topic: str, payload: bytes,
                        received_ns: int, out: Decoded) -> None:
        try:
            result = source.read(payload, received_ns)
        except ValueError:  # a mapper's bug must not stop ingestion; its reason is unknown
            result = Refused("invalid-reading", "uplink could not be read")
        if isinstance(result, Refused):
            out.dead.append(DeadLetter(topic, payload, result.reason, received_ns, result.code))
            return
        parsed = Topic(result.kind, result.device_id, "telemetry")
        self._decode_item(parsed, topic, payload, result.fields, received_ns, out, None)

    def _decode_frigate(self, frigate: DetectionSource, topic: str, payload: bytes,
                        received_ns: int, out: Decoded) -> None:
        try:
            detections, refusal = frigate.to_detections(payload, received_ns)
        except ValueError:  # a mapper's bug must not stop ingestion; its reason is unknown
            detections, refusal = [], "Frigate event could not be read"
        if refusal is not None:
            out.dead.append(DeadLetter(topic, payload, refusal, received_ns, "invalid-event"))
            return
        ahead = max((d.ts_ns - received_ns for d in detections), default=0)
        if ahead > self._max_future_ns:
            # As for Siaga's own events: a camera's clock years ahead would hold its rules'
            # clock there (no hotspot would ever fill its window again).
            reason = f"frame_time: {ahead / 1e9:.0f} s in the future (camera clock wrong?)"
            out.dead.append(DeadLetter(topic, payload, reason, received_ns, "future-ts"))
            return
        for detection in detections:
            if detection.plate is not None:
                detection = detection._replace(plate=self._listed(detection.plate, out))
            out.detections.append(detection)

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
            raw = json_bytes(item)
            out.dead.append(DeadLetter(topic, raw, f"item {index}: {reason}", received_ns, code))


class _ItemDecoder(Protocol):
    def __call__(self, parsed: Topic, topic: str, payload: bytes, item: dict[str, object],
                 received_ns: int, out: Decoded, index: int | None) -> None: ...


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
