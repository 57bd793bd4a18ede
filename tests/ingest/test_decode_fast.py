"""The decoder with its fast path (devices.structs) decodes exactly as without it.

Two decoders on the same catalog, one with `fast=False`: for any message the `Decoded`
they append must be equal in everything (readings with their values' types, order and
signs; dead letters with codes, reasons and kept payloads; ignored-field counts; statuses,
detections, plate counts). Messages come from the decoder's fuzzer (any topic, any bytes)
and from the token-by-token JSON writer of tests/devices/test_structs.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from devices.kinds import Kind
from ingest.decode import MAX_BATCH, Decoded, Decoder
from tests.devices.test_structs import (
    RAW_VALUES,
    WHITESPACE,
    any_items,
    exactly,
    json_text,
    payloads,
    valid_items,
)
from tests.ingest.test_decode_fuzz import (
    DEVICES,
    MAX_FUTURE_S,
    NOW_NS,
    REGISTRY,
    SCHEME,
    _mutated,
    messages,
)

FAST = Decoder(REGISTRY, SCHEME, max_future_s=MAX_FUTURE_S)
REFERENCE = Decoder(REGISTRY, SCHEME, max_future_s=MAX_FUTURE_S, fast=False)
SAME = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decoded(decoder: Decoder, topic: str, payload: bytes) -> Decoded:
    out = Decoded()
    decoder.decode(topic, payload, NOW_NS, out)
    return out


def assert_same(topic: str, payload: bytes) -> Decoded:
    """Both decoders append the same; returns what they appended."""
    fast, reference = decoded(FAST, topic, payload), decoded(REFERENCE, topic, payload)
    assert fast == reference
    # `==` takes 1 for 1.0 and -0.0 for 0.0, and ignores the order of a dict and a Counter;
    # InfluxDB and the line protocol do not.
    assert exactly(fast.readings) == exactly(reference.readings)
    assert list(fast.ignored_fields.items()) == list(reference.ignored_fields.items())
    return reference


def telemetry(kind: Kind) -> str:
    return SCHEME.telemetry(kind, DEVICES[kind][0])


@SAME
@given(messages())
def test_any_message_decodes_the_same_with_the_fast_path(message: tuple[str, bytes]) -> None:
    out = assert_same(*message)
    event("readings" if out.readings else "no reading")


@st.composite
def telemetry_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(list(Kind)))
    payload = draw(payloads(kind))
    if draw(st.integers(0, 4)) == 0:
        payload = draw(_mutated(payload))
    return telemetry(kind), payload


@SAME
@given(telemetry_messages())
@example(("siaga/water-level/manggarai/telemetry", b'{"level_cm": 1, "depth": 2}'))
@example(("siaga/water-level/manggarai/telemetry", b'{"level_cm": 1, "level_cm": "x"}'))
@example(("siaga/water-level/manggarai/telemetry", b'{"level_cm": "x", "level_cm": 1}'))
@example(("siaga/water-level/manggarai/telemetry", b'[{"level_cm": 1}, {"level_cm": 1201}]'))
@example(("siaga/water-level/manggarai/telemetry", b'[{"level_cm": 1, "ts": 1700000301}]'))
@example(("siaga/water-level/manggarai/telemetry", b'[{"n": "level_cm", "v": 1}]'))  # SenML
def test_telemetry_written_token_by_token_decodes_the_same_with_the_fast_path(
    message: tuple[str, bytes],
) -> None:
    out = assert_same(*message)
    event("readings" if out.readings else "no reading")
    event("dead letters" if out.dead else "no dead letter")
    event("ignored fields" if out.ignored_fields else "no ignored field")


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(Kind)).flatmap(
    lambda kind: st.tuples(st.just(kind), valid_items(kind), any_items(kind))),
    st.sampled_from([0, 1, 2, MAX_BATCH - 1, MAX_BATCH, MAX_BATCH + 1]),
    st.lists(st.integers(0, MAX_BATCH), max_size=3), WHITESPACE)
def test_a_batch_of_any_size_with_bad_items_anywhere_decodes_the_same(
    case: tuple[Kind, dict[str, Any], Any], size: int, spoiled: list[int], space: str,
) -> None:
    kind, good, bad = case
    items = [orjson.dumps(good).decode()] * size
    for at in spoiled:
        if size:
            items[at % size] = json_text(bad) if at % 3 else RAW_VALUES[at % len(RAW_VALUES)]
    out = assert_same(telemetry(kind), ("[" + space + f",{space}".join(items) + "]").encode())
    if size > MAX_BATCH and not spoiled:  # a spoiled one may be JSON no parser reads
        assert [letter.code for letter in out.dead] == ["batch-too-large"]


EXAMPLES: dict[Kind, dict[str, Any]] = {
    Kind.WATER_LEVEL: {"level_cm": -190, "battery_v": 3.7, "rssi_dbm": -97.5},
    Kind.AIR_QUALITY: {"pm25": 35.5, "pm10": 60, "co": 800.25, "temp_c": 31.2, "rh_pct": 70},
    Kind.TRAFFIC: {"speed_kmh": 42.5, "volume_vph": 1800, "occupancy_pct": 12.5},
    Kind.CAMERA: {"vehicles_per_min": 22, "water_score": 0.0, "people": -0.0},
}


@pytest.mark.parametrize("kind", list(Kind))
def test_a_valid_batch_of_each_kind_decodes_the_same_and_stores_every_reading(
    kind: Kind,
) -> None:
    items = [{**EXAMPLES[kind], "seq": index, "ts": 1_699_999_000 + index / 4}
             for index in range(20)]
    out = assert_same(telemetry(kind), orjson.dumps(items))
    assert [reading.seq for reading in out.readings] == list(range(20)) and not out.dead


@pytest.mark.parametrize(("kind", "payload"), [
    (Kind.WATER_LEVEL, b'{"level_cm": 1, "depth": 2, "colour": "blue"}'),
    (Kind.CAMERA, b'[{"people": 1, "B 1234 XYZ": 1}, {"people": 2, "note": 1}]'),
    (Kind.AIR_QUALITY, b'[{"pm25": 1}, {"pm25": 2, "pm1": 3}]'),
])
def test_unknown_fields_are_counted_the_same(kind: Kind, payload: bytes) -> None:
    out = assert_same(telemetry(kind), payload)
    assert out.ignored_fields and not out.dead


@pytest.mark.parametrize("payload", [
    b'[{"level_cm": 1}, {"level_cm": 2, "ts": 1700000301}]',  # the second too far ahead
    b'[{"level_cm": 1}, {"level_cm": null}]',
    b'{"level_cm": 1, "seq": 1.0}',
    b'{"battery_v": 3.7}',
])
def test_a_refusal_keeps_its_reason_and_the_readings_beside_it(payload: bytes) -> None:
    out = assert_same(telemetry(Kind.WATER_LEVEL), payload)
    assert len(out.dead) == 1 and out.dead[0].reason


@pytest.mark.parametrize(("topic", "payload"), [
    ("siaga/water-level/manggarai/status", b"online"),
    ("siaga/water-level/nowhere/telemetry", b'{"level_cm": 1}'),
    ("siaga/traffic/manggarai/telemetry", b'{"speed_kmh": 1}'),
    ("siaga/water-level/manggarai/events", b'{"level_cm": 1}'),
    ("siaga/water-level/manggarai/telemetry", b'[{"bn": "x:", "n": "level_cm", "v": 1}]'),
])
def test_what_the_fast_path_does_not_take_decodes_as_before(topic: str, payload: bytes) -> None:
    assert_same(topic, payload)
