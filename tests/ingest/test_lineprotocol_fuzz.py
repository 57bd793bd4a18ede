"""Fuzzing line protocol: any decoded reading with any catalog labels round-trips exactly.

`encode` must equal influxdb-client's `Point`, and what it writes must read back, through
the parser below, as exactly the measurement, tags, fields and timestamp that went in. The
parser follows InfluxDB 1.x (`models/points.go`), the server the integration tests run:

- a `,`, ` ` or `=` is escaped when the character before it is a backslash;
- escapes are then removed by plain replacement: `\\,` `\\ ` `\\=` in keys and tag values,
  `\\,` `\\ ` in the measurement; any other backslash is literal.

`INFLUXDB_1_6_STORED` pins what InfluxDB 1.6.7 stored for lines Point wrote; the parser
must agree with it, and `tests/integration/test_hostile_input.py` checks it against the
real server.
"""

# Point's methods carry no annotations.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, reject, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision
from pydantic import ValidationError

from devices.kinds import MEASUREMENTS, Kind
from devices.readings import Reading
from devices.registry import RESERVED_LABELS, Device, Registry
from devices.topics import TopicScheme
from ingest.decode import Decoded, Decoder
from ingest.lineprotocol import SEQ_FIELD, encode
from tests.ingest.test_decode_fuzz import NOW_NS, readings

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEVICE_ID = "fuzz-gauge-01"

# Label value -> what InfluxDB 1.6.7 stored for `Point("m").tag("k", value)`. Only a
# trailing backslash is not stored as written: Point adds a space after it, which the
# backslash then escapes.
INFLUXDB_1_6_STORED: dict[str, str] = {
    "a\\": "a ",
    "\\": " ",
    "a\\\\": "a\\ ",
    "é\\": "é ",
    "a\\,b": "a\\,b",
    "a\\ b": "a\\ b",
    "a\\=b": "a\\=b",
    "a\\\\b": "a\\\\b",
    "a\\nb": "a\\nb",
    "a\\\\,b": "a\\\\,b",
    "x\\\\ y": "x\\\\ y",
    " lead": " lead",
    "trail ": "trail ",
    "a=b": "a=b",
    "a,b": "a,b",
    '"q"': '"q"',
    "#x": "#x",
    'a\\"b': 'a\\"b',
    "\\,": "\\,",
    "a\\\\\\ b": "a\\\\\\ b",
    "manggarai level_cm=1 1": "manggarai level_cm=1 1",
}


@dataclass(frozen=True)
class ParsedLine:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int]
    ts_ns: int


def parse_line(line: str) -> ParsedLine:
    """Read one line of line protocol as InfluxDB 1.x does (numeric fields only)."""
    sections = _split(line, " ")
    assert len(sections) == 3, f"expected key, fields and time: {line!r}"
    key, fields, stamp = sections
    measurement, *tag_pairs = _split(key, ",")
    tags = dict(_pair(text) for text in tag_pairs)
    values: dict[str, float | int] = {}
    for name, raw in (_pair(text) for text in _split(fields, ",")):
        assert name not in values, f"field {name!r} twice"
        values[name] = int(raw[:-1]) if raw.endswith("i") else float(raw)
    return ParsedLine(_unescape(measurement, ",", " "), tags, values, int(stamp))


def _split(text: str, separator: str) -> list[str]:
    """Split at each `separator` not preceded by a backslash (InfluxDB 1.x's scan rule)."""
    parts, start = [], 0
    for index, char in enumerate(text):
        if char == separator and (index == 0 or text[index - 1] != "\\"):
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _pair(text: str) -> tuple[str, str]:
    key, *rest = _split(text, "=")
    assert len(rest) == 1, f"expected one unescaped = in {text!r}"
    return _unescape(key, ",", " ", "="), _unescape(rest[0], ",", " ", "=")


def _unescape(text: str, *specials: str) -> str:
    for special in specials:
        text = text.replace("\\" + special, special)
    return text


def point_line(measurement: str, tags: Mapping[str, str], values: Mapping[str, float],
               seq: int | None, ts_ns: int) -> str:
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, number in values.items():
        point.field(key, float(number))
    if seq is not None:
        point.field(SEQ_FIELD, seq)
    line: str = point.time(ts_ns, WritePrecision.NS).to_line_protocol()
    return line


# --- strategies ------------------------------------------------------------------------

CONTROL_CHARACTERS = [chr(code) for code in range(0x20)] + ["\x7f"]  # the catalog refuses them
# What line protocol must escape, what YAML and terminals find awkward, and any other
# character (the catalog refuses control characters; `registry_labels` leaves those out).
label_text = st.text(
    alphabet=st.one_of(
        st.sampled_from([*",= \"'\\#{}:[]&*!|>%@`", "\u00a0", "\u2028", "\ufeff", "\U0001f30a"]),
        st.characters(exclude_categories=["Cs"], exclude_characters=CONTROL_CHARACTERS),
    ),
    min_size=1,
    max_size=16,
)
label_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda key: key not in RESERVED_LABELS
)


@st.composite
def registry_labels(draw: st.DrawFn) -> dict[str, str]:
    """Labels the catalog accepts: drawn freely, kept only if `Device` validates them."""
    labels = draw(st.dictionaries(label_keys, label_text, max_size=5))
    try:
        return dict(_device(labels).labels)
    except ValidationError:
        reject()


def _device(labels: Mapping[str, str], kind: Kind = Kind.WATER_LEVEL) -> Device:
    return Device.model_validate({"id": DEVICE_ID, "kind": kind, "name": "Fuzz", "lat": -6.2,
                                  "lon": 106.8, "labels": dict(labels)})


@st.composite
def decoded_readings(draw: st.DrawFn) -> tuple[Kind, Reading]:
    """A reading as the decoder produces it from a valid payload of any kind."""
    kind = draw(st.sampled_from(list(Kind)))
    registry = Registry([_device({}, kind)])
    out = Decoded()
    payload = orjson.dumps(draw(readings(kind, valid=True)))
    Decoder(registry, TopicScheme("siaga")).decode(
        TopicScheme("siaga").telemetry(kind, DEVICE_ID), payload, NOW_NS, out)
    assert out.dead == [], out.dead
    [reading] = out.readings
    return kind, reading


def _same_number(a: float | int, b: float | int) -> bool:
    # Exact, and -0.0 is not 0.0: the sign is part of what was sent.
    return type(a) is type(b) and a == b and math.copysign(1, a) == math.copysign(1, b)


def _ends_in_a_backslash(value: str) -> bool:
    return value.endswith("\\")


# --- properties --------------------------------------------------------------------------

@FUZZ
@given(decoded_readings(), registry_labels())
@example((Kind.WATER_LEVEL, Reading(Kind.WATER_LEVEL, DEVICE_ID, NOW_NS, {"level_cm": -0.0}, 0)),
         {"note": "manggarai level_cm=1 1\u2028x", "kota": 'a\\,b "c" d=e'})
def test_a_decoded_reading_with_any_catalog_labels_encodes_as_point_and_reads_back_exactly(
    decoded: tuple[Kind, Reading], labels: dict[str, str]
) -> None:
    # A trailing backslash cannot round-trip: the catalog refuses it (see below).
    assume(not any(_ends_in_a_backslash(value) for value in labels.values()))
    kind, reading = decoded
    tags = Registry([_device(labels, kind)]).tags(DEVICE_ID)
    measurement = MEASUREMENTS[kind]
    line = encode(measurement, tags, reading.values, reading.seq, reading.ts_ns)

    assert line == point_line(measurement, tags, reading.values, reading.seq, reading.ts_ns)
    parsed = parse_line(line)
    assert (parsed.measurement, parsed.tags, parsed.ts_ns) == (measurement, dict(tags),
                                                               reading.ts_ns)
    sent: dict[str, float | int] = dict(reading.values)
    if reading.seq is not None:
        sent[SEQ_FIELD] = reading.seq
    assert parsed.fields.keys() == sent.keys()
    assert all(_same_number(parsed.fields[name], sent[name]) for name in sent), (parsed, sent)


@pytest.mark.parametrize(("value", "stored"), sorted(INFLUXDB_1_6_STORED.items()))
def test_the_parser_reads_point_lines_as_influxdb_1_6_stored_them(value: str,
                                                                   stored: str) -> None:
    line = point_line("m", {"k": value, "z": "end"}, {"f": 1.0}, None, 1)
    assert parse_line(line).tags == {"k": stored, "z": "end"}


@pytest.mark.parametrize("value", ["Kali Ciliwung\\", "\\", "C:\\data\\\\"])
def test_the_catalog_refuses_label_values_line_protocol_cannot_round_trip(value: str) -> None:
    with pytest.raises(ValidationError):
        _device({"river": value})


def test_a_label_value_ending_in_a_backslash_is_stored_with_a_space_instead() -> None:
    # Why the catalog refuses it (test above): the stored value would differ from the label.
    tags = {"device_id": DEVICE_ID, "river": "Ciliwung\\"}
    line = encode("water_level", tags, {"level_cm": 1.0}, None, 1)
    assert parse_line(line).tags["river"] == "Ciliwung "


def test_a_label_that_would_start_a_second_line_is_refused_by_the_catalog() -> None:
    with pytest.raises(ValidationError, match="control characters"):
        _device({"kota": "x level_cm=9999 1\nwater_level,device_id=other level_cm=1"})


def test_labels_shaped_like_line_protocol_stay_inside_their_tag() -> None:
    labels = {"kota": "x level_cm=9999 1", "river": "a,device_id=other"}
    tags = Registry([_device(labels)]).tags(DEVICE_ID)
    parsed = parse_line(encode("water_level", tags, {"level_cm": 1.0}, 7, 1))
    assert parsed == ParsedLine("water_level", {**labels, "device_id": DEVICE_ID},
                                {"level_cm": 1.0, "seq": 7}, 1)
