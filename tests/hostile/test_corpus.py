"""Every case of the hostile corpus through the decoder: the dead letters and readings it pins.

The same cases go through a real broker to the running service in
`tests/integration/test_hostile_input.py`; here they run in milliseconds, including the
ones no MQTT client can publish (wildcards in a topic name).
"""

from __future__ import annotations

import math
import tracemalloc

import pytest

from devices.registry import bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.decode import Decoded, Decoder
from tests.hostile.corpus import Case, load_corpus

NOW_NS = 1_700_100_000 * 10**9  # after every `ts` in the corpus, before its future one
PREFIX = "siaga"
REGISTRY = load_catalog(bundled_catalog_path())
TEXT_CASES = [case for case in load_corpus() if case.topic_is_text]


def decode(case: Case) -> Decoded:
    out = Decoded()
    Decoder(REGISTRY, TopicScheme(PREFIX)).decode(case.topic(PREFIX), case.payload, NOW_NS, out)
    return out


@pytest.mark.parametrize("case", TEXT_CASES, ids=lambda case: case.name)
def test_each_case_gives_exactly_its_dead_letters_with_reasons_naming_the_problem(
    case: Case,
) -> None:
    out = decode(case)
    assert [letter.code for letter in out.dead] == [letter.code for letter in case.dead]
    for letter, expected in zip(out.dead, case.dead, strict=True):
        assert expected.reason in letter.reason, (letter.reason, expected.reason)
        assert letter.topic == case.topic(PREFIX)
        if not letter.reason.startswith("item "):  # a whole message keeps its raw bytes
            assert letter.payload == case.payload


@pytest.mark.parametrize("case", TEXT_CASES, ids=lambda case: case.name)
def test_each_case_stores_exactly_its_readings_and_nothing_of_unknown_fields(
    case: Case,
) -> None:
    out = decode(case)
    got = [(reading.seq, reading.values) for reading in out.readings]
    assert got == [(stored.seq, stored.values) for stored in case.stored]
    for reading, stored in zip(out.readings, case.stored, strict=True):
        for name, value in stored.values.items():  # -0.0 stays -0.0
            assert math.copysign(1, reading.values[name]) == math.copysign(1, value)


def test_a_batch_item_too_deep_for_orjson_to_write_keeps_its_exact_json() -> None:
    [case] = [case for case in load_corpus() if case.name == "arrays-nested-1024-deep-closed"]
    [letter] = decode(case).dead
    assert letter.payload == case.payload[1:-1]  # the one item: 1023 levels


def test_a_flood_of_distinct_bad_topics_does_not_pile_up_in_the_decoder() -> None:
    decoder = Decoder(REGISTRY, TopicScheme(PREFIX))
    long_id = "a" * 60_000  # a topic level may be 64 KiB; the device id pattern allows 64
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for index in range(500):
            out = Decoded()
            decoder.decode(f"{PREFIX}/water-level/{long_id}{index}/telemetry", b"{}", NOW_NS, out)
            assert [letter.code for letter in out.dead] == ["bad-topic"]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 2_000_000  # 500 remembered topics would be 30 MB
