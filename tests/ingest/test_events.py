"""Cameras' events channel: detections or dead letters, and a plate kept only when listed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devices.detections import Detection
from devices.registry import bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.deadletters import REDACTED, WITHHELD, WITHHELD_KEY
from ingest.decode import PLATE_LIKE_FIELD, Decoded, Decoder
from ingest.watchlist import Watchlist

NOW_NS = 1_700_000_000 * 10**9
REGISTRY = load_catalog(bundled_catalog_path())
CAMERA = "cam-semanggi"
TOPIC = f"siaga/camera/{CAMERA}/events"
LISTED = "B 1234 XYZ"
UNLISTED = "B 7777 QRS"
WATCHLIST = Watchlist.from_entries([(LISTED, {"agency": "Bapenda DKI"})])


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "type": "new", "label": "illegal-parking", "score": 0.9,
            "zone": "loop-ramp", "ts": "2023-11-14T22:13:20Z", **fields}


def plate_event(plate: str, **fields: Any) -> dict[str, Any]:
    return event(label="plate", plate=plate, **fields)


def decode(payload: object, topic: str = TOPIC, *,
           watchlist: Watchlist | None = WATCHLIST) -> Decoded:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    out = Decoded()
    Decoder(REGISTRY, TopicScheme("siaga"), watchlist=watchlist).decode(topic, body, NOW_NS, out)
    return out


def test_an_event_decodes_to_a_detection_at_its_event_time() -> None:
    out = decode(event())
    assert out.detections == [Detection(CAMERA, NOW_NS, "e1", "new", "illegal-parking", 0.9,
                                        "loop-ramp", None)]
    assert out.dead == [] and out.readings == []


def test_an_event_without_ts_or_zone_is_stamped_at_receipt_in_no_zone() -> None:
    body = event()
    del body["ts"], body["zone"]
    [detection] = decode(body).detections
    assert (detection.ts_ns, detection.zone) == (NOW_NS, None)


def test_a_batch_of_events_decodes_each_and_dead_letters_only_the_bad_one() -> None:
    items = [event(event_id="a"), event(event_id="b", score=1.5), event(event_id="c")]
    out = decode(items)
    assert [d.event_id for d in out.detections] == ["a", "c"]
    [letter] = out.dead
    assert (letter.code, letter.reason) == ("invalid-event", "item 1: score: must be between 0 "
                                                             "and 1")
    assert orjson.loads(letter.payload) == items[1]


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (event(label="ufo"), "invalid-event", "label: unknown label (expected one of"),
        (event(score="0.9"), "invalid-event", "score: must be a number"),
        (event(score=-0.1), "invalid-event", "score: must be between 0 and 1"),
        (event(type="start"), "invalid-event", "type: must be new, update or end"),
        (event(event_id="x" * 65), "invalid-event", "event_id: 1 to 64 letters"),
        (event(event_id=None), "invalid-event", "event_id: must be a string"),
        ({"type": "new", "label": "car", "score": 1}, "invalid-event", "event_id: required"),
        (event(zone="Loop Ramp"), "invalid-event", "zone: 1 to 64 lower-case"),
        (event(ts="yesterday"), "invalid-event", "ts: must be RFC 3339"),
        (event(ts=1_900_000_000), "future-ts", "in the future"),
        (event(plate="B 1 A"), "invalid-event", "only events labelled plate carry one"),
        (event(label="plate"), "invalid-event", "plate: required for label plate"),
        (plate_event("b 1234 xyz"), "invalid-event", "plate: 1 to 16 capital letters"),
        (42, "bad-json", "expected a JSON object or array, got number"),
        ([], "bad-json", "empty batch"),
        ([event()] * 1001, "batch-too-large", "batch of 1001 events"),
        (b"{not json", "bad-json", "not valid UTF-8 JSON"),
    ],
)
def test_an_event_the_contract_refuses_is_a_dead_letter_with_a_reason(
    payload: object, code: str, reason: str
) -> None:
    out = decode(payload)
    assert out.detections == []
    assert [letter.code for letter in out.dead] == [code]
    assert reason in out.dead[0].reason, out.dead[0].reason


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("siaga/traffic/sudirman-setiabudi/events", "bad-topic"),
        ("siaga/camera/no-such-camera/events", "unknown-device"),
        ("siaga/camera/manggarai/events", "kind-mismatch"),
    ],
)
def test_events_of_a_device_that_is_not_a_catalog_camera_are_dead_letters(topic: str,
                                                                          code: str) -> None:
    out = decode(plate_event(UNLISTED), topic)
    assert [letter.code for letter in out.dead] == [code] and out.detections == []
    assert UNLISTED.encode() not in out.dead[0].payload


def test_a_listed_plate_is_kept_as_listed_and_counted() -> None:
    out = decode(plate_event("B 1234 XYZ"))
    [detection] = out.detections
    assert detection.plate == "B1234XYZ"
    assert WATCHLIST.labels_of(detection.plate) == {"agency": "Bapenda DKI"}
    assert (out.plates_listed, out.plates_unlisted) == (1, 0)


def test_an_unlisted_plate_is_dropped_from_its_detection_and_counted() -> None:
    out = decode([plate_event(UNLISTED, event_id="u1"), plate_event(LISTED, event_id="l1")])
    assert [(d.event_id, d.label, d.plate) for d in out.detections] == [
        ("u1", "plate", None), ("l1", "plate", "B1234XYZ")]
    assert (out.plates_listed, out.plates_unlisted) == (1, 1)


def test_without_a_watch_list_no_plate_is_kept() -> None:
    out = decode(plate_event(LISTED), watchlist=None)
    assert [d.plate for d in out.detections] == [None] and out.plates_unlisted == 1


def test_a_refused_plate_event_keeps_its_payload_with_the_plate_redacted() -> None:
    out = decode(plate_event(UNLISTED, score="high"))
    [letter] = out.dead
    assert orjson.loads(letter.payload) == {**plate_event(REDACTED, score="high"),
                                            "zone": "loop-ramp"}
    assert b"7777" not in letter.payload and "7777" not in letter.reason


def test_a_listed_plate_is_redacted_in_a_dead_letter_too() -> None:
    [letter] = decode(plate_event(LISTED, type="begin")).dead
    assert b"1234" not in letter.payload


def test_plates_are_redacted_at_any_depth_and_under_any_key_naming_one() -> None:
    depth = 300  # deeper than orjson writes (254 levels)
    nested = b'{"x":[' * depth + b'{"license_Plate":"B 7777 QRS"}' + b"]}" * depth
    out = decode(b"[" + orjson.dumps(event()) + b',{"deep":' + nested
                 + b',"plate_number":"B 1 A","note":"b7777qrs"}]')
    [letter] = out.dead
    assert UNLISTED.encode() not in letter.payload and b"7777" not in letter.payload
    assert b"B 1 A" not in letter.payload
    assert letter.payload.count(REDACTED.encode()) == 3


def test_a_payload_that_is_not_json_on_the_events_channel_is_withheld_whole() -> None:
    [letter] = decode(b'{"label": "plate", "plate": "B 7777 QRS"').dead
    assert letter.payload == b""
    assert letter.reason.startswith("not valid UTF-8 JSON") and letter.reason.endswith(WITHHELD)


def test_a_key_that_looks_like_a_plate_withholds_the_payload() -> None:
    [letter] = decode({"B7777QRS": 1}).dead
    assert letter.payload == b"" and WITHHELD_KEY in letter.reason


def test_a_plate_sent_on_a_cameras_telemetry_topic_is_redacted_too() -> None:
    topic = f"siaga/camera/{CAMERA}/telemetry"
    [letter] = decode(plate_event(UNLISTED), topic).dead
    assert letter.code == "invalid-reading" and b"7777" not in letter.payload


def test_a_dead_letter_of_another_kind_that_says_plate_is_redacted() -> None:
    topic = "siaga/water-level/manggarai/telemetry"
    [letter] = decode({"level_cm": "x", "plate": UNLISTED}, topic).dead
    assert orjson.loads(letter.payload) == {"level_cm": "x", "plate": REDACTED}


def test_other_dead_letters_keep_their_payload_byte_for_byte() -> None:
    topic = "siaga/water-level/manggarai/telemetry"
    body = b'{"level_cm": "B1234XYZ" , "note":  "abc123"}'
    [letter] = decode(body, topic).dead
    assert letter.payload == body


def test_event_identity_stays_readable_in_a_redacted_dead_letter() -> None:
    # The event id stays; a zone, label, type or time that looks like a plate does not.
    [letter] = decode(event(event_id="cam1-ev42", zone="zone1", score=3)).dead
    kept = orjson.loads(letter.payload)
    assert (kept["event_id"], kept["zone"]) == ("cam1-ev42", REDACTED)


@pytest.mark.parametrize("field", ["label", "type", "ts", "zone"])
def test_a_plate_sent_in_any_field_of_an_event_is_redacted(field: str) -> None:
    [letter] = decode(event(**{field: "B7777QRS"})).dead
    assert b"7777" not in letter.payload and "7777" not in letter.reason


def test_a_plate_sent_as_a_cameras_time_is_in_neither_payload_nor_reason() -> None:
    topic = f"siaga/camera/{CAMERA}/telemetry"
    [letter] = decode({"ts": "B 1234 XYZ", "water_score": 0.1}, topic).dead
    assert letter.reason.startswith("ts: ") and "1234" not in letter.reason
    assert b"1234" not in letter.payload


def test_a_plate_as_a_cameras_unknown_field_name_is_counted_without_its_name() -> None:
    topic = f"siaga/camera/{CAMERA}/telemetry"
    decoded = decode({"water_score": 0.1, "B 7777 QRS": 1}, topic)
    assert len(decoded.readings) == 1
    assert dict(decoded.ignored_fields) == {(CAMERA, PLATE_LIKE_FIELD): 1}


def test_an_event_id_written_like_a_plate_is_redacted_in_a_dead_letter() -> None:
    [letter] = decode(event(event_id=UNLISTED)).dead
    assert "event_id" in letter.reason and orjson.loads(letter.payload)["event_id"] == REDACTED


def test_an_event_in_a_zone_the_catalog_does_not_list_for_its_camera_is_refused() -> None:
    decoded = decode(event(zone="sudirman"))
    assert [d.zone for d in decoded.detections] == ["sudirman"]
    [letter] = decode(event(zone="taman")).dead
    assert letter.reason == (
        "zone: not one of the camera's zones (sudirman, gatot-subroto, loop-ramp)")
