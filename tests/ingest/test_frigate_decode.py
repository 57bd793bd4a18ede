"""Frigate's messages through the decoder: routed by topic, plates kept only when listed."""

from __future__ import annotations

from typing import Any

from devices.topics import TopicScheme
from ingest.deadletters import REDACTED, WITHHELD
from ingest.decode import Decoded, Decoder
from ingest.frigate import FrigateMapper
from ingest.watchlist import Watchlist
from tests.ingest.test_frigate import NOW_NS, REGISTRY, SETTINGS, message, published

TOPIC = SETTINGS.topic


def decode(payload: bytes, topic: str = TOPIC, watchlist: Watchlist | None = None) -> Decoded:
    decoder = Decoder(REGISTRY, TopicScheme("siaga"), watchlist=watchlist,
                      frigate=FrigateMapper(SETTINGS, REGISTRY))
    out = Decoded()
    decoder.decode(topic, payload, NOW_NS, out)
    return out


def test_a_frigate_message_on_its_topic_becomes_detections_of_the_mapped_camera() -> None:
    out = decode(published(message("car_new.json")))
    assert [(d.device_id, d.type, d.label) for d in out.detections] == [
        ("cam-manggarai", "new", "car")]
    assert out.dead == []


def test_a_plate_frigate_read_is_dropped_unless_listed() -> None:
    payload = published(message("car_update_plate.json"))
    unlisted = decode(payload)
    assert [d.plate for d in unlisted.detections if d.label == "plate"] == [None]
    assert unlisted.plates_unlisted == 1
    listed = decode(payload, watchlist=Watchlist.from_entries([("B 1234 XYZ", {})]))
    assert [d.plate for d in listed.detections if d.label == "plate"] == ["B1234XYZ"]
    assert listed.plates_listed == 1


def test_a_refused_frigate_message_is_a_dead_letter_without_personal_data() -> None:
    document: dict[str, Any] = message("car_new.json")
    document["after"]["score"] = document["after"]["top_score"] = 7  # not a score
    document["after"]["recognized_license_plate"] = ["B 7777 QRS", 0.9]
    document["after"]["sub_label"] = ["Budi Santoso", 0.95]
    [letter] = decode(published(document)).dead
    assert (letter.code, letter.topic) == ("invalid-event", TOPIC)
    assert "score" in letter.reason
    assert b"7777" not in letter.payload and b"Budi" not in letter.payload
    assert REDACTED.encode() in letter.payload


def test_a_frigate_message_that_is_not_json_is_withheld() -> None:
    [letter] = decode(b'{"type": "new", "after": {"recognized_license_plate": "B 7777').dead
    assert letter.payload == b"" and letter.reason.endswith(WITHHELD)


def test_without_a_frigate_input_its_topic_is_a_bad_topic() -> None:
    out = Decoded()
    Decoder(REGISTRY, TopicScheme("siaga")).decode(TOPIC, published(message("car_new.json")),
                                                   NOW_NS, out)
    assert [letter.code for letter in out.dead] == ["bad-topic"]


def test_a_frigate_frame_time_years_ahead_is_a_dead_letter() -> None:
    # Siaga's own events are held to max_future_s; Frigate's were not, and a camera's
    # clock in 2096 held its rules' clock there (no hotspot would fill its window again).
    document = message("car_new.json")
    document["after"]["frame_time"] = 4_000_000_000.0
    out = decode(published(document))
    assert out.detections == []
    assert [(letter.code, "in the future" in letter.reason) for letter in out.dead] == [
        ("future-ts", True)]
    assert len(decode(published(message("car_new.json"))).detections) == 1  # as sent: taken
