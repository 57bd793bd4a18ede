"""Fuzzing the decoder: whatever arrives, valid readings or dead letters, never an exception.

Every message must come out accounted for: a single reading (or camera event) is stored or
dead-lettered, a batch's items are each stored or dead-lettered (in order, the letters
saying which item), and everything stored re-validates against its model and its bounds.
No plate survives in a dead letter, and without a watch list none in a detection.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from devices.detections import LABELS, validate_event
from devices.kinds import Kind
from devices.readings import CAMERA_COUNTS, MAX_SEQ, NUMERIC_FIELDS, READING_MODELS
from devices.registry import Device, Registry, bundled_catalog_path, load_catalog
from devices.timestamps import MIN_NS, parse_ts
from devices.topics import InvalidTopic, TopicScheme
from ingest.deadletters import REDACTED, DeadLetter, json_bytes, redact_plates
from ingest.decode import MAX_BATCH, Decoded, Decoder
from ingest.senml import looks_like_senml

NOW_NS = 1_700_000_000 * 10**9
MAX_FUTURE_S = 300.0


def _with_every_kind(registry: Registry) -> Registry:
    """The bundled catalog, plus a device of each kind it has none of (a new kind's
    devices may come later than the kind), so that every kind is fuzzed."""
    extra = [Device.model_validate({"id": f"fuzz-{kind.value}", "kind": kind, "name": "Fuzz",
                                    "lat": -6.2, "lon": 106.8})
             for kind in Kind if not registry.by_kind(kind)]
    return Registry([*registry, *extra])


REGISTRY = _with_every_kind(load_catalog(bundled_catalog_path()))
SCHEME = TopicScheme("siaga")
# Every dead-letter code the decoder may give (storage adds `rejected-by-influxdb` later).
DECODER_CODES = frozenset({
    "bad-topic", "unknown-device", "kind-mismatch", "bad-json", "batch-too-large",
    "invalid-reading", "future-ts", "bad-status", "invalid-event",
})
MAX_REASON_CHARS = 400  # a reason is one short line, however long the input it describes
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DEVICES = {kind: [device.id for device in REGISTRY.by_kind(kind)][:3] for kind in Kind}
# The keys a reading of each kind understands (`ts` is the alias of the model's `ts_ns`).
KNOWN_KEYS = {
    kind: frozenset(field.alias or name for name, field in model.model_fields.items())
    for kind, model in READING_MODELS.items()
}
# Field names that might confuse a model: its own internals, aliases, near misses.
TRICKY_NAMES = [
    "ts_ns", "model_extra", "model_config", "__class__", "__dict__", "__proto__", "values",
    "seq ", "Level_cm", "level_cm\u0000", "", "manggarai level_cm=1 1", "a,b=c d\\", "\n",
]


def new_decoder() -> Decoder:
    return Decoder(REGISTRY, SCHEME, max_future_s=MAX_FUTURE_S)


def decode(topic: str, payload: bytes) -> Decoded:
    out = Decoded()
    new_decoder().decode(topic, payload, NOW_NS, out)
    return out


# --- strategies ------------------------------------------------------------------------

def _telemetry(kind: Kind) -> st.SearchStrategy[str]:
    return st.sampled_from(DEVICES[kind]).map(lambda device: SCHEME.telemetry(kind, device))


good_topics = st.one_of(
    *(_telemetry(kind) for kind in Kind),
    st.sampled_from(DEVICES[Kind.CAMERA]).map(SCHEME.events),
)
topics = st.one_of(
    good_topics,
    good_topics,  # twice: most fuzzing should get past the topic
    st.tuples(
        st.sampled_from(["siaga", "siaga/", "", "other", "siaga/siaga", "$SYS"]),
        st.sampled_from([*Kind, "rain", "", "+", "#", "Water-Level"]) | st.text(max_size=5),
        st.sampled_from([d for ids in DEVICES.values() for d in ids]) | st.text(max_size=70),
        st.sampled_from(["telemetry", "status", "events", "", "telemetry/", "Telemetry"]),
    ).map("/".join),
    st.text(max_size=80),
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
    st.sampled_from([-0.0, 1e-400, 5e-324, 1.7976931348623157e308, 2**63, 2**64, -(2**63) - 1]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# What a well-behaved firmware's extra fields hold: values every JSON parser reads.
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _in_bounds(kind: Kind, name: str) -> st.SearchStrategy[float | int]:
    """Numbers a field accepts: within its bounds, ints and floats, edges included."""
    low, high = _bounds(kind, name)
    floats = st.floats(min_value=low, max_value=high, allow_nan=False)
    ints = st.integers(min_value=math.ceil(low), max_value=math.floor(high))
    return st.one_of(floats, ints, st.sampled_from([low, high]))


def _bounds(kind: Kind, name: str) -> tuple[float, float]:
    low, high = -math.inf, math.inf
    for constraint in READING_MODELS[kind].model_fields[name].metadata:
        low = float(getattr(constraint, "ge", low))
        high = float(getattr(constraint, "le", high))
    return low, high


valid_ts = st.one_of(
    st.integers(min_value=946_684_800, max_value=NOW_NS // 10**9 + 200),
    st.floats(min_value=946_684_800.0, max_value=NOW_NS / 1e9 + 200),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2023, 11, 13))
    .map(lambda moment: moment.replace(tzinfo=UTC).isoformat()),
)
# Around the future limit too (NOW + MAX_FUTURE_S), where `future-ts` begins.
near_future_ts = st.integers(min_value=NOW_NS // 10**9 + 250, max_value=NOW_NS // 10**9 + 350)
any_ts = st.one_of(valid_ts, near_future_ts, json_scalars, st.integers(), st.text(max_size=40))
valid_seq = st.integers(min_value=0, max_value=MAX_SEQ)


@st.composite
def readings(draw: st.DrawFn, kind: Kind, valid: bool) -> dict[str, Any]:
    """A reading of `kind`: in bounds when `valid`, else with any value in any field."""
    names = sorted(NUMERIC_FIELDS[kind])
    required = [name for name in names if READING_MODELS[kind].model_fields[name].is_required()]
    if kind is Kind.AIR_QUALITY:
        required = [draw(st.sampled_from(["pm25", "pm10", "o3", "no2", "so2", "co", "hc"]))]
    if kind is Kind.CAMERA:
        required = [draw(st.sampled_from(CAMERA_COUNTS))]
    chosen = set(required) | set(draw(st.lists(st.sampled_from(names), max_size=4)))
    if not valid and draw(st.booleans()):
        chosen -= set(draw(st.lists(st.sampled_from(names), max_size=2)))
    item: dict[str, Any] = {}
    for name in sorted(chosen):
        value: Any = draw(_in_bounds(kind, name))
        if not valid and draw(st.integers(0, 3)) == 0:
            value = draw(json_values)
        item[name] = value
    if draw(st.booleans()):
        item["ts"] = draw(valid_ts if valid else any_ts)
    if draw(st.booleans()):
        item["seq"] = draw(valid_seq if valid else st.one_of(valid_seq, json_scalars))
    extras = st.dictionaries(st.sampled_from(TRICKY_NAMES) | st.text(max_size=12),
                             plain_values if valid else json_values, max_size=3)
    for name, extra in draw(extras).items():
        if name not in KNOWN_KEYS[kind]:
            item[name] = extra
    return item


plates = st.one_of(
    st.from_regex(r"[A-Z]{1,2} [0-9]{1,4} [A-Z]{1,3}", fullmatch=True),
    st.text(max_size=20),
)


@st.composite
def events(draw: st.DrawFn, valid: bool) -> dict[str, Any]:
    """A camera event: valid ones as the contract says, else with any value anywhere."""
    label = draw(st.sampled_from(sorted(LABELS)))
    item: dict[str, Any] = {
        "event_id": draw(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)),
        "type": draw(st.sampled_from(["new", "update", "end"])),
        "label": label,
        "score": draw(st.floats(0, 1) | st.sampled_from([0, 1])),
    }
    if draw(st.booleans()):
        item["zone"] = draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True))
    if label == "plate":
        item["plate"] = draw(st.from_regex(r"[A-Z]{1,2} [0-9]{1,4} [A-Z]{1,3}", fullmatch=True))
    if draw(st.booleans()):
        item["ts"] = draw(valid_ts)
    if not valid:
        for name in draw(st.lists(st.sampled_from([*item, "plate", "ts", "zone"]), max_size=3)):
            if draw(st.booleans()):
                item.pop(name, None)
            else:
                item[name] = draw(st.one_of(json_values, plates, any_ts))
    return item


def _json(value: object) -> bytes:
    # The standard library writes what orjson refuses to: NaN, Infinity, huge integers.
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """A topic and a payload: garbage, JSON of any shape, readings, batches, mutations."""
    topic = draw(topics)
    kind = Kind.WATER_LEVEL
    if topic.startswith("siaga/"):
        kind = next((k for k in Kind if topic.startswith(f"siaga/{k}/")), Kind.WATER_LEVEL)
    reading = readings(kind, valid=False) | readings(kind, valid=True)
    if topic.endswith("/events"):
        reading = events(valid=False) | events(valid=True)
    item = st.one_of(reading, reading, json_values)
    payload = draw(st.one_of(
        st.binary(max_size=200),
        json_values.map(_json),
        reading.map(_json),
        st.lists(item, max_size=12).map(_json),
        reading.map(_json).flatmap(_mutated),
        st.sampled_from([b"", b" ", b"online", b"offline", b"null", b"[]", b"{}",
                         b"\xef\xbb\xbf{}"]),
    ))
    return topic, payload


def _mutated(payload: bytes) -> st.SearchStrategy[bytes]:
    """A payload with one byte replaced, inserted or removed, or cut short."""
    positions = st.integers(min_value=0, max_value=max(len(payload) - 1, 0))
    byte = st.integers(0, 255).map(lambda b: bytes([b]))
    return st.one_of(
        st.tuples(positions, byte).map(lambda pb: payload[: pb[0]] + pb[1] + payload[pb[0] + 1:]),
        st.tuples(positions, byte).map(lambda pb: payload[: pb[0]] + pb[1] + payload[pb[0]:]),
        positions.map(lambda p: payload[:p] + payload[p + 1:]),
        positions.map(lambda p: payload[:p]),
    )


# --- the invariants ----------------------------------------------------------------------

def may_hold_plates(topic: str, payload: bytes) -> bool:
    """Whether the decoder redacts this message's dead letters (ingest.decode)."""
    return (topic.endswith("/events") or "/camera/" in topic
            or re.search(rb"(?i)plate", payload) is not None)


def kept(topic: str, payload: bytes) -> bytes:
    """What a dead letter keeps of `payload`: itself, or its redaction."""
    if not may_hold_plates(topic, payload):
        return payload
    return redact_plates(DeadLetter(topic, payload, "r", NOW_NS, "x")).payload


def check_no_plate_kept(letter: DeadLetter) -> None:
    """Every value under a key naming a plate is redacted, however deep."""
    if not letter.payload or not re.search(rb"(?i)plate", letter.payload):
        return
    try:
        stack = [orjson.loads(letter.payload)]
    except orjson.JSONDecodeError:
        assert not may_hold_plates(letter.topic, letter.payload), letter
        return
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if "plate" in key.lower() and may_hold_plates(letter.topic, letter.payload):
                    assert value == REDACTED, letter
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def check_accounted(topic: str, payload: bytes, out: Decoded) -> None:
    """Everything that went in is a valid reading, a status or a dead letter: nothing lost."""
    for letter in out.dead:
        assert letter.code in DECODER_CODES, letter
        assert letter.reason.strip(), letter
        assert "\n" not in letter.reason and len(letter.reason) <= MAX_REASON_CHARS, letter
        assert (letter.topic, letter.received_ns) == (topic, NOW_NS)
        check_no_plate_kept(letter)
    assert all(detection.plate is None for detection in out.detections)  # no watch list
    try:
        parsed = SCHEME.parse(topic)
    except InvalidTopic:
        assert [x.code for x in out.dead] == ["bad-topic"] and not out.readings
        return
    if parsed.channel == "status" and not payload:  # clears a retained status
        assert not out.readings and not out.statuses and not out.dead
        return
    device = REGISTRY.get(parsed.device_id)
    if device is None or device.kind != parsed.kind:
        assert [x.code for x in out.dead] in (["unknown-device"], ["kind-mismatch"])
        assert not out.readings and not out.statuses
        return
    if parsed.channel == "status":
        assert not out.readings
        assert len(out.statuses) + len(out.dead) == 1
        assert all(status.device_id == device.id for status in out.statuses)
        return
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        assert [x.code for x in out.dead] == ["bad-json"] and not out.readings
        assert out.dead[0].payload == kept(topic, payload)
        return
    if parsed.channel == "events":
        check_events(topic, parsed.device_id, document, out)
    elif (isinstance(document, list) and document and isinstance(document[0], dict)
          and looks_like_senml(document[0], parsed.kind)):
        check_senml(topic, parsed.kind, parsed.device_id, payload, len(document), out)
    elif isinstance(document, dict):
        check_items(parsed.kind, parsed.device_id, [document], None, out)
    elif isinstance(document, list) and 0 < len(document) <= MAX_BATCH:
        check_items(parsed.kind, parsed.device_id, document, True, out,
                    redacted=may_hold_plates(topic, payload))
    else:
        code = "batch-too-large" if isinstance(document, list) and document else "bad-json"
        assert [x.code for x in out.dead] == [code] and not out.readings
        assert out.dead[0].payload == kept(topic, payload)


def check_senml(topic: str, kind: Kind, device_id: str, payload: bytes, records: int,
                out: Decoded) -> None:
    """A SenML pack (an array whose first item has a SenML label and none of the kind's
    fields, as `[{"s": null}]`): its reading is tests/ingest/test_senml.py's; here, that
    nothing of it is lost. Each of its times is a reading or a dead letter keeping the
    whole pack, and a pack holding nothing to store is a dead letter too."""
    assert out.readings or out.dead
    assert all((r.kind, r.device_id) == (kind, device_id) for r in out.readings)
    assert all(letter.payload == kept(topic, payload) for letter in out.dead)
    if records > MAX_BATCH:
        assert [x.code for x in out.dead] == ["batch-too-large"] and not out.readings


def check_events(topic: str, device_id: str, document: Any, out: Decoded) -> None:
    """Each event became a detection or a dead letter, in order; a plate was counted."""
    assert not out.readings and not out.statuses
    if not isinstance(document, dict | list) or (isinstance(document, list) and not (
            0 < len(document) <= MAX_BATCH)):
        assert len(out.dead) == 1 and not out.detections
        return
    items = [document] if isinstance(document, dict) else document
    assert len(out.detections) + len(out.dead) == len(items)
    rejected = ({_item_index(letter.reason) for letter in out.dead} if isinstance(document, list)
                else set(range(len(out.dead))))
    stored = [item for index, item in enumerate(items) if index not in rejected]
    assert len(stored) == len(out.detections)
    plates = 0
    for item, detection in zip(stored, out.detections, strict=True):
        model = validate_event(item)
        assert (detection.device_id, detection.event_id, detection.label, detection.score,
                detection.zone) == (device_id, model.event_id, model.label, model.score,
                                    model.zone)
        assert detection.ts_ns == (NOW_NS if model.ts_ns is None else model.ts_ns)
        plates += model.plate is not None
    assert (out.plates_unlisted, out.plates_listed) == (plates, 0)


def check_items(kind: Kind, device_id: str, items: list[Any], batch: bool | None,
                out: Decoded, *, redacted: bool = False) -> None:
    """Each item became a reading or a dead letter, never both, never neither, in order."""
    assert len(out.readings) + len(out.dead) == len(items)
    rejected = {_item_index(letter.reason) for letter in out.dead} if batch else set()
    if batch:
        assert len(rejected) == len(out.dead), "one letter per rejected item"
        for letter in out.dead:  # a batch item's letter keeps exactly that item
            item = items[_item_index(letter.reason)]
            if redacted:
                assert letter.payload == kept(letter.topic, json_bytes(item))
            else:
                assert orjson.loads(letter.payload) == item
    stored = [item for i, item in enumerate(items) if i not in rejected]
    if not batch and out.dead:
        stored = []
    assert len(stored) == len(out.readings)
    extras: dict[tuple[str, str], int] = {}
    for item, reading in zip(stored, out.readings, strict=True):
        assert (reading.kind, reading.device_id) == (kind, device_id)
        check_reading_is_valid(kind, item, reading.values, reading.seq, reading.ts_ns)
        for name in item.keys() - KNOWN_KEYS[kind]:
            extras[(device_id, name)] = extras.get((device_id, name), 0) + 1
    assert dict(out.ignored_fields) == extras


def _item_index(reason: str) -> int:
    match = re.match(r"item (\d+): ", reason)
    assert match, f"a batch item's reason names the item: {reason!r}"
    return int(match.group(1))


def check_reading_is_valid(kind: Kind, item: dict[str, Any], values: dict[str, float],
                           seq: int | None, ts_ns: int) -> None:
    """A stored reading holds exactly the known fields sent, within bounds, as floats."""
    sent = {name: value for name, value in item.items() if name in NUMERIC_FIELDS[kind]}
    assert values == sent and all(type(value) is float for value in values.values())
    for name, value in values.items():
        low, high = _bounds(kind, name)
        assert math.isfinite(value) and low <= value <= high
    assert seq == item.get("seq") and (seq is None or 0 <= seq <= MAX_SEQ)
    again = READING_MODELS[kind].model_validate({**values, **({"seq": seq} if seq else {})})
    assert {k: v for k, v in again.__dict__.items() if k in values} == values
    if "ts" in item:
        assert MIN_NS <= ts_ns <= NOW_NS + MAX_FUTURE_S * 1e9
        assert ts_ns == parse_ts(item["ts"])
    else:
        assert ts_ns == NOW_NS


@FUZZ
@given(messages())
def test_any_message_decodes_to_readings_or_dead_letters_without_losing_anything(
    message: tuple[str, bytes],
) -> None:
    topic, payload = message
    out = decode(topic, payload)
    check_accounted(topic, payload, out)
    # `pytest --hypothesis-show-statistics` shows how far into the decoder the examples got.
    event("stored a reading" if out.readings else "no reading")
    event("stored a detection" if out.detections else "no detection")
    for code in sorted({letter.code for letter in out.dead}):
        event(code)


@FUZZ
@given(st.text(max_size=300), st.binary(max_size=300))
def test_arbitrary_topics_and_bytes_never_raise(topic: str, payload: bytes) -> None:
    check_accounted(topic, payload, decode(topic, payload))


@FUZZ
@given(st.sampled_from(list(Kind)).flatmap(
    lambda kind: st.tuples(st.just(kind), readings(kind, valid=True))))
def test_a_valid_reading_with_any_extra_fields_is_stored_without_them(
    case: tuple[Kind, dict[str, Any]],
) -> None:
    kind, item = case
    topic = SCHEME.telemetry(kind, DEVICES[kind][0])
    payload = _json(item)
    out = decode(topic, payload)
    assert out.dead == [] and len(out.readings) == 1
    check_accounted(topic, payload, out)


@FUZZ
@given(st.lists(st.one_of(events(valid=True), events(valid=False), json_values),
                min_size=1, max_size=25), st.booleans())
def test_every_event_of_a_batch_becomes_a_detection_or_a_dead_letter_without_its_plate(
    items: list[Any], single: bool,
) -> None:
    topic = SCHEME.events(DEVICES[Kind.CAMERA][0])
    payload = _json(items[0] if single else items)
    out = decode(topic, payload)
    check_accounted(topic, payload, out)
    # Plates as a camera writes them (with spaces: no event id or zone has one), and not
    # also sent in another field, which a dead letter may keep (an event id is kept).
    sent = {item["plate"] for item in items if isinstance(item, dict)
            and isinstance(item.get("plate"), str) and " " in item["plate"].strip()
            and item["plate"] not in [v for k, v in item.items() if k != "plate"]}
    for letter in out.dead:
        assert not any(plate.encode() in letter.payload or plate in letter.reason
                       for plate in sent), letter


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(readings(Kind.TRAFFIC, valid=True), readings(Kind.TRAFFIC, valid=False),
                          json_values), min_size=1, max_size=25))
# An array whose first item has a SenML label is read as a SenML pack (found by this test
# once the literals Hypothesis draws from the project's code changed).
@example(items=[{"s": None}, None])
def test_every_item_of_a_batch_is_stored_or_dead_lettered_on_its_own(items: list[Any]) -> None:
    topic = SCHEME.telemetry(Kind.TRAFFIC, DEVICES[Kind.TRAFFIC][0])
    payload = _json(items)
    check_accounted(topic, payload, decode(topic, payload))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=1023), st.booleans(), plain_values)
@example(depth=1023, arrays=True, inner=[])  # orjson reads 1024 levels, writes only 254
@example(depth=1022, arrays=False, inner={"k": [1.5, None, "\u00e9", {"x": True}]})
def test_a_batch_item_nested_as_deep_as_the_parser_reads_is_dead_lettered_as_its_exact_json(
    depth: int, arrays: bool, inner: object
) -> None:
    body = orjson.dumps(inner)  # compact, as the item's dead letter is written
    item = (b"[" * depth + body + b"]" * depth) if arrays else (
        b'{"a":' * depth + body + b"}" * depth)
    payload = b'[{"level_cm":1},' + item + b"]"
    topic = SCHEME.telemetry(Kind.WATER_LEVEL, DEVICES[Kind.WATER_LEVEL][0])
    out = decode(topic, payload)
    check_accounted(topic, payload, out)
    if [letter.code for letter in out.dead] == ["invalid-reading"]:  # else: deeper than 1024
        assert out.dead[0].payload == item


# --- timestamps: the strings that are accepted are RFC 3339 ------------------------------

# RFC 3339 section 5.6, with the leniencies timestamps.py documents: `t`/`z` and a space
# as separators, a decimal comma, and any number of fraction digits.
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:[Zz]|([+-])([01]\d|2[0-3]):([0-5]\d))",
    re.ASCII,
)


def _rfc3339_ns(text: str) -> int:
    """The instant an RFC 3339 string names, computed without `fromisoformat`."""
    match = RFC3339.fullmatch(text)
    assert match, text
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                      tzinfo=UTC)
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        moment = moment - offset if sign == "+" else moment + offset
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    return int(moment.timestamp()) * 10**9 + micros * 1000


@st.composite
def near_timestamps(draw: st.DrawFn) -> str:
    """An RFC 3339 string, perhaps with a character replaced, inserted or removed."""
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    text += draw(st.sampled_from(["", ".", ",5", ".123456", ".1234567", ".123456789123"]))
    text += draw(st.sampled_from(["Z", "z", "+07:00", "-00:00", "+23:59", "-07:60", "+24:00",
                                  "+0700", "+7:00", ""]))
    alphabet = st.sampled_from("0123456789 .,:+-TZtz\x00\u0660\uff10x")
    position = st.integers(0, len(text))
    edit = draw(st.sampled_from(["none", "replace", "insert", "delete"]))
    at, char = draw(position), draw(alphabet)
    if edit == "replace":
        text = text[:at] + char + text[at + 1:]
    elif edit == "insert":
        text = text[:at] + char + text[at:]
    elif edit == "delete":
        text = text[:at] + text[at + 1:]
    return text


@settings(max_examples=500, deadline=None)
@given(near_timestamps())
@example("2023-11-14T22:13:20\x00+07:00")  # one stray character after the seconds
@example("2023-11-14T22:13:20.Z")  # a decimal point without digits
@example("2023-11-14T22:13:20.123456abcZ")  # anything after the sixth fraction digit
@example("2023-11-14T22:13:20-07:60")  # offset minutes past 59
def test_a_ts_string_is_accepted_only_if_it_is_rfc_3339_and_then_means_its_instant(
    text: str,
) -> None:
    try:
        ns = parse_ts(text)
    except ValueError as exc:
        assert str(exc).startswith("ts: ") and "\n" not in str(exc)
        return
    assert RFC3339.fullmatch(text), f"accepted a string that is not RFC 3339: {text!r}"
    assert ns == _rfc3339_ns(text)
