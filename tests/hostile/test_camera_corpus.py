"""Hostile camera payloads (`cameras.yaml`) through the decoder: clean dead letters, no plate.

The same cases go through Mosquitto to the running service in
`tests/integration/test_camera_privacy.py`.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from devices.registry import bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.deadletters import REDACTED, WITHHELD, WITHHELD_KEY
from ingest.decode import Decoded, Decoder
from tests.hostile.corpus import Case, load_corpus

CAMERA_CORPUS = Path(__file__).with_name("cameras.yaml")
CASES = load_corpus(CAMERA_CORPUS)
PLATE_MARK = b"7777"  # in every plate of the file, and nowhere else
NOW_NS = 1_700_100_000 * 10**9
PREFIX = "siaga"
REGISTRY = load_catalog(bundled_catalog_path())


def decode(case: Case) -> Decoded:
    out = Decoded()
    Decoder(REGISTRY, TopicScheme(PREFIX)).decode(case.topic(PREFIX), case.payload, NOW_NS, out)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_camera_case_gives_exactly_its_dead_letters(case: Case) -> None:
    out = decode(case)
    assert [letter.code for letter in out.dead] == [letter.code for letter in case.dead]
    for letter, expected in zip(out.dead, case.dead, strict=True):
        assert expected.reason in letter.reason, (letter.reason, expected.reason)
        assert letter.topic == case.topic(PREFIX)
        assert "\n" not in letter.reason and len(letter.reason) <= 400
    assert out.readings == [] and all(d.plate is None for d in out.detections)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_no_camera_case_leaves_a_plate_in_a_dead_letter(case: Case) -> None:
    for letter in decode(case).dead:
        assert PLATE_MARK not in letter.payload, letter.payload[:200]
        assert PLATE_MARK.decode() not in letter.reason
        if letter.payload:
            orjson.loads(letter.payload)  # what is kept of a payload is JSON
        else:
            assert WITHHELD in letter.reason or WITHHELD_KEY in letter.reason


def test_a_plate_is_replaced_rather_than_the_whole_payload_dropped() -> None:
    [case] = [case for case in CASES if case.name == "plate-deep-inside-an-unknown-field"]
    [letter] = decode(case).dead
    assert orjson.loads(letter.payload)["meta"] == {
        "ocr": [{"plate_text": REDACTED, "conf": 0.8}], "note": REDACTED}

