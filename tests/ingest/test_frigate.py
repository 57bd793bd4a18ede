"""Frigate input: Frigate's own `frigate/events` messages mapped to Siaga detections."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from devices.kinds import Kind
from devices.registry import Device, Registry
from ingest.frigate import FrigateMapper, FrigateSettings, redact, zone_slug
from siaga_core.errors import ConfigurationError

FIXTURES = Path(__file__).parent / "frigate"
NOW_NS = 1_704_067_300 * 10**9
PLATES = ("B1234XYZ", "B 2024 KRT")
REGISTRY = Registry([
    Device(id="cam-manggarai", kind=Kind.CAMERA, name="Pintu Air Manggarai", lat=-6.2087,
           lon=106.8497, zones=("bus-lane", "jalan-sudirman")),
    Device(id="cam-karet", kind=Kind.CAMERA, name="Karet LPR", lat=-6.2064, lon=106.8157),
    Device(id="manggarai", kind=Kind.WATER_LEVEL, name="PA Manggarai", lat=-6.2086,
           lon=106.8496),
])
SETTINGS = FrigateSettings(enabled=True, cameras={"manggarai_gate": "cam-manggarai",
                                                  "karet_lpr": "cam-karet"},
                           zones={"bus_lane": "bus-lane"})


def message(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return document


def published(document: dict[str, Any]) -> bytes:
    """The bytes Frigate sends: `json.dumps` with its default separators."""
    return json.dumps(document).encode()


def mapped(name: str, settings: FrigateSettings = SETTINGS) -> tuple[list[Any], str | None]:
    return FrigateMapper(settings, REGISTRY).to_detections(published(message(name)), NOW_NS)


def test_a_new_car_becomes_one_new_detection_of_the_mapped_camera() -> None:
    [detection], reason = mapped("car_new.json")
    assert reason is None
    assert detection._asdict() == {
        "device_id": "cam-manggarai", "ts_ns": 1_704_067_205_104_518_000,
        "event_id": "1704067203.512337-k3v9qa", "type": "new", "label": "car",
        "score": 0.810546875, "zone": "bus-lane", "plate": None}


def test_an_update_keeps_the_id_and_takes_the_first_current_zone_slugged() -> None:
    detections, reason = mapped("car_update_plate.json", FrigateSettings(
        enabled=True, cameras={"manggarai_gate": "cam-manggarai"}, plates_on_objects=False))
    [car] = detections
    assert reason is None
    assert (car.event_id, car.type, car.zone) == ("1704067203.512337-k3v9qa", "update",
                                                  "jalan-sudirman")
    assert car.ts_ns == 1_704_067_207_305_962_000


def test_a_plate_read_on_a_car_is_a_new_plate_detection_beside_the_car() -> None:
    [car, plate], reason = mapped("car_update_plate.json")
    assert reason is None
    assert (car.label, car.plate) == ("car", None)
    assert (plate.label, plate.type, plate.plate, plate.score) == ("plate", "new", "B1234XYZ",
                                                                    0.912)
    assert plate.event_id == "1704067203.512337-k3v9qa:plate"
    assert (plate.device_id, plate.ts_ns, plate.zone) == (car.device_id, car.ts_ns, car.zone)


def test_the_end_is_stamped_with_end_time_and_ends_the_plate_too() -> None:
    [car, plate], reason = mapped("car_end.json")
    assert reason is None
    assert (car.type, plate.type) == ("end", "end")
    assert car.ts_ns == 1_704_067_215_733_018_000
    assert car.zone is None  # the car has left every zone


def test_a_plate_already_read_before_an_update_stays_an_update() -> None:
    document = message("car_end.json")
    document["type"] = "update"
    document["after"]["end_time"] = None
    [_, plate], _ = FrigateMapper(SETTINGS, REGISTRY).to_detections(published(document), NOW_NS)
    assert plate.type == "update"


def test_a_false_positive_is_no_detection_and_no_error() -> None:
    assert mapped("person_false_positive.json") == ([], None)


def test_an_unmapped_camera_is_passed_over_counted_and_named_once_in_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    # A site maps the cameras it wants watched; the others' many updates are not errors.
    mapper = FrigateMapper(SETTINGS, REGISTRY)
    payload = published(message("unknown_camera_new.json"))
    with caplog.at_level(logging.INFO, logger="ingest.frigate"):
        results = [mapper.to_detections(payload, NOW_NS) for _ in range(3)]
    assert results == [([], None)] * 3
    assert mapper.ignored == {"camera": 3}
    assert [r.getMessage().count("'parking_garage'") for r in caplog.records] == [1]


def test_a_camera_name_frigate_could_not_have_is_not_shown_back() -> None:
    document = message("car_new.json")
    document["after"]["camera"] = "B 1234 XYZ\n"
    _, reason = FrigateMapper(SETTINGS, REGISTRY).to_detections(published(document), NOW_NS)
    assert reason == "frigate: after.camera: not a Frigate camera name"


def test_a_label_siaga_does_not_take_is_passed_over_and_counted() -> None:
    mapper = FrigateMapper(SETTINGS, REGISTRY)
    assert mapper.to_detections(published(message("dog_new.json")), NOW_NS) == ([], None)
    assert mapper.ignored == {"label": 1}


def test_a_label_can_be_mapped_to_one_of_ours() -> None:
    settings = SETTINGS.model_copy(update={"labels": {"dog": "person"}})
    [detection], _ = mapped("dog_new.json", settings)
    assert detection.label == "person"


def test_a_dedicated_plate_object_carries_its_text_as_read() -> None:
    [detection], reason = mapped("license_plate_new.json")
    assert reason is None
    assert (detection.device_id, detection.label, detection.plate, detection.type) == (
        "cam-karet", "plate", "B 2024 KRT", "new")


def test_a_plate_object_not_read_yet_is_no_detection() -> None:
    document = message("license_plate_new.json")
    document["after"]["recognized_license_plate"] = None
    result = FrigateMapper(SETTINGS, REGISTRY).to_detections(published(document), NOW_NS)
    assert result == ([], None)


def test_an_unreadable_plate_is_refused_without_echoing_it() -> None:
    document = message("license_plate_new.json")
    document["after"]["recognized_license_plate"] = ["B\u00d81234\tXYZ", 0.5]
    detections, reason = FrigateMapper(SETTINGS, REGISTRY).to_detections(
        published(document), NOW_NS)
    assert detections == []
    assert reason is not None and reason.startswith("frigate: plate:")
    assert "1234" not in reason and "XYZ" not in reason


def test_an_unreadable_plate_on_a_car_leaves_the_car() -> None:
    document = message("car_update_plate.json")
    document["after"]["recognized_license_plate"] = ["<script>", 0.5]
    [car], reason = FrigateMapper(SETTINGS, REGISTRY).to_detections(published(document), NOW_NS)
    assert (car.label, reason) == ("car", None)


def test_an_id_too_long_for_siaga_is_refused_without_echoing_it() -> None:
    document = message("car_new.json")
    document["after"]["id"] = "B1234XYZ" * 9
    detections, reason = FrigateMapper(SETTINGS, REGISTRY).to_detections(
        published(document), NOW_NS)
    assert detections == []
    assert reason is not None and reason.startswith("frigate: event_id:")
    assert "B1234XYZ" not in reason


def test_a_score_below_min_score_is_no_detection() -> None:
    settings = SETTINGS.model_copy(update={"min_score": 0.9})
    assert mapped("car_new.json", settings) == ([], None)


def test_without_top_score_the_score_is_taken() -> None:
    document = message("car_new.json")
    del document["after"]["top_score"]
    [car], _ = FrigateMapper(SETTINGS, REGISTRY).to_detections(published(document), NOW_NS)
    assert car.score == 0.84765625


@pytest.mark.parametrize(("payload", "expected"), [
    (b'{"type": "new", "after": {', "frigate: not JSON (Frigate publishes one JSON object "
                                    "per event)"),
    (b"[]", "frigate: must be a JSON object with type, before and after"),
    (b'{"type": "started", "after": {}}', "frigate: type: must be new, update or end"),
    (b'{"type": "new", "after": null}', "frigate: after: must be a JSON object"),
    (b'{"type": "new", "after": {"camera": 7}}', "frigate: after.camera: must be a string"),
])
def test_a_malformed_message_is_refused_with_a_reason(payload: bytes, expected: str) -> None:
    assert FrigateMapper(SETTINGS, REGISTRY).to_detections(payload, NOW_NS) == ([], expected)


def test_a_score_sent_as_a_string_is_refused_without_echoing_it() -> None:
    document = message("car_new.json")
    document["after"]["top_score"] = "0.99 B1234XYZ"
    _, reason = FrigateMapper(SETTINGS, REGISTRY).to_detections(published(document), NOW_NS)
    assert reason == "frigate: score: must be a number"


def test_zone_names_are_slugged_to_siaga_zones() -> None:
    assert zone_slug("Jalan Sudirman") == "jalan-sudirman"
    assert zone_slug("_Bus Lane #2") == "bus-lane-2"
    assert zone_slug("###") is None


def test_a_mapping_to_a_device_not_in_the_catalog_is_refused_at_start() -> None:
    settings = FrigateSettings(enabled=True, cameras={"gate": "cam-nowhere",
                                                      "river": "manggarai"})
    with pytest.raises(ConfigurationError) as caught:
        FrigateMapper(settings, REGISTRY)
    assert str(caught.value) == (
        "frigate.cameras.gate: no device 'cam-nowhere' in the catalog\n"
        "frigate.cameras.river: 'manggarai' is a water-level device, not a camera")


def test_settings_refuse_labels_siaga_does_not_know_and_wildcard_topics() -> None:
    with pytest.raises(ValidationError, match="unknown label 'doggo'"):
        FrigateSettings(labels={"dog": "doggo"})
    with pytest.raises(ValidationError, match="topic"):
        FrigateSettings(topic="frigate/#")
    with pytest.raises(ValidationError, match="map at least one Frigate camera"):
        FrigateSettings(enabled=True)


def test_the_topic_is_frigates_own_by_default() -> None:
    assert FrigateMapper(FrigateSettings(), REGISTRY).topic == "frigate/events"


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.json")))
def test_redaction_leaves_no_plate_in_a_dead_letter(name: str) -> None:
    document = message(name)
    document["after"]["sub_label"] = ["Budi Santoso", 0.81]
    redacted = redact(published(document))
    assert redacted is not None
    assert not any(plate.encode() in redacted for plate in PLATES)
    assert b"Budi" not in redacted
    # Everything else stays, for the operator to see what was refused.
    assert orjson.loads(redacted)["after"]["camera"] == document["after"]["camera"]


def test_a_payload_that_is_not_json_is_withheld_whole_by_redaction() -> None:
    assert redact(b'{"recognized_license_plate": "B1234XYZ"') is None


def test_a_plate_score_out_of_range_gives_way_to_the_objects_score() -> None:
    document = message("car_update_plate.json")
    document["after"]["recognized_license_plate"] = ["B1234XYZ", 91.2]
    [car, plate], reason = FrigateMapper(SETTINGS, REGISTRY).to_detections(
        published(document), NOW_NS)
    assert (reason, plate.score) == (None, car.score)
