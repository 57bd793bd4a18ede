"""LoRaWAN uplinks (ChirpStack v4, The Things Stack v3) through the decoder to readings.

The fixtures are the servers' documented examples, copied in shape:
- CHIRPSTACK_UP: the `up` event's JSON example of chirpstack/chirpstack-docs,
  src/chirpstack/integrations/events.md ("up - Uplink event"), with an `fCnt` and the
  `object` a codec adds (the docs' example has no codec, and protobuf JSON leaves out a
  frame counter of 0); field names as `UplinkEvent` in chirpstack/chirpstack
  api/proto/integration/integration.proto and `UplinkRxInfo` in api/proto/gw/gw.proto.
- THINGS_STACK_UP: the "Uplink message example" of TheThingsIndustries/lorawan-stack-docs,
  doc/content/integrations/data-formats/_index.md, with its `decoded_payload` replaced by
  Siaga's fields (the docs' example decodes `temperature` and `luminosity`).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from devices.kinds import Kind
from devices.registry import Device, Registry
from devices.topics import TopicScheme
from ingest.decode import Decoded, Decoder
from ingest.lorawan import (
    ChirpStackSettings,
    ChirpStackUplinks,
    LorawanSettings,
    ThingsStackSettings,
    ThingsStackUplinks,
    matches,
)

NOW_NS = 1_700_000_000 * 10**9
REGISTRY = Registry(Device.model_validate(entry) for entry in [
    {"id": "pos-lora", "kind": "water-level", "name": "Pos LoRa", "lat": -6.2, "lon": 106.8,
     "dev_eui": "0101010101010101"},
    {"id": "udara-lora", "kind": "air-quality", "name": "Udara LoRa", "lat": -6.2,
     "lon": 106.8, "dev_eui": "0004A30B001C0530"},
    # Known to The Things Stack by its device id only.
    {"id": "dev1", "kind": "traffic", "name": "Jalan LoRa", "lat": -6.2, "lon": 106.8},
])
CHIRPSTACK_TOPIC = ("application/17c82e96-be03-4f38-aef3-f83d48582d97/device/"
                    "0101010101010101/event/up")
THINGS_STACK_TOPIC = "v3/app1@ttn/devices/dev1/up"

CHIRPSTACK_UP: dict[str, Any] = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Test device-profile",
        "deviceName": "Test device",
        "devEui": "0101010101010101",
        "tags": {"key": "value"},
    },
    "devAddr": "00189440",
    "dr": 1,
    "fCnt": 10,
    "fPort": 1,
    "data": "qg==",
    "object": {"level_cm": 412.0, "battery_v": 3.61},
    "rxInfo": [{
        "gatewayId": "0016c001f153a14c",
        "uplinkId": 4217106255,
        "rssi": -36,
        "snr": 10.5,
        "context": "E3OWOQ==",
        "metadata": {"region_name": "eu868", "region_common_name": "EU868"},
    }],
    "txInfo": {
        "frequency": 867100000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 11,
                                "codeRate": "CR_4_5"}},
    },
}
THINGS_STACK_UP: dict[str, Any] = {
    "end_device_ids": {
        "device_id": "dev1",
        "application_ids": {"application_id": "app1"},
        "dev_eui": "0004A30B001C0530",
        "join_eui": "800000000000000C",
        "dev_addr": "00BCB929",
    },
    "correlation_ids": [
        "as:up:01E0WZGT6Y7657CPFPE5WEYDSQ",
        "gs:conn:01E0WDEC6T5T4XXBAX7S1VMFKE",
        "gs:uplink:01E0WZGSZWT07NE5TS2APTV1Z9",
        "ns:uplink:01E0WZGSZXZXZS8RFAWZX0F2FY",
        "rpc:/ttn.lorawan.v3.GsNs/HandleUplink:01E0WZGSZXGE1KS577PFBWRJEE",
    ],
    "received_at": "2020-02-12T15:15:46.014773143Z",
    "uplink_message": {
        "session_key_id": "AXA50tHUGUucuzS/bCGMNw==",
        "f_cnt": 1,
        "frm_payload": "gkHe",
        "decoded_payload": {"pm25": 41.5, "temp_c": 31.0},
        "rx_metadata": [{
            "gateway_ids": {"gateway_id": "gtw1", "eui": "9C5C8E00001A05C4"},
            "time": "2020-02-12T15:15:45.787Z",
            "timestamp": 2463457000,
            "rssi": -35,
            "channel_rssi": -35,
            "snr": 5,
            "uplink_token": "ChIKEAoEZ3R3MRIInFyOAAAaBcQQ6L3Vlgk=",
            "channel_index": 2,
        }],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
            "data_rate_index": 5,
            "coding_rate": "4/6",
            "frequency": "868300000",
            "timestamp": 2463457000,
            "time": "2020-02-12T15:15:45.787Z",
        },
        "consumed_airtime": "0.056576s",
        "locations": {"user": {"latitude": 37.97155556731436, "longitude": 23.72678801175413,
                               "altitude": 10, "source": "SOURCE_REGISTRY"}},
        "received_at": "2020-02-12T15:15:45.789585559Z",
    },
}


def decoder(registry: Registry = REGISTRY) -> Decoder:
    sources = [ChirpStackUplinks(ChirpStackSettings(enabled=True), registry),
               ThingsStackUplinks(ThingsStackSettings(enabled=True), registry)]
    return Decoder(registry, TopicScheme("siaga"), sources=sources)


def decode(topic: str, message: dict[str, Any] | bytes) -> Decoded:
    out = Decoded()
    payload = message if isinstance(message, bytes) else orjson.dumps(message)
    decoder().decode(topic, payload, NOW_NS, out)
    return out


def changed(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `message` with the value at the dotted `path` set (None: removed)."""
    copied = copy.deepcopy(message)
    *parents, last = path.split(".")
    node = copied
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return copied


def test_a_chirpstack_uplink_is_a_reading_of_the_device_with_its_dev_eui() -> None:
    out = decode(CHIRPSTACK_TOPIC, CHIRPSTACK_UP)
    [reading] = out.readings
    assert (reading.kind, reading.device_id, reading.seq) == (Kind.WATER_LEVEL, "pos-lora", 10)
    assert reading.ts_ns == 1_658_136_855_775_023_000  # ChirpStack's time, to the microsecond
    assert reading.values == {"level_cm": 412.0, "battery_v": 3.61, "rssi_dbm": -36.0,
                              "snr_db": 10.5}
    assert out.dead == []


def test_a_things_stack_uplink_is_a_reading_of_the_device_with_its_dev_eui() -> None:
    out = decode(THINGS_STACK_TOPIC, THINGS_STACK_UP)
    [reading] = out.readings
    # The DevEUI (the air-quality monitor) wins over the device id (a traffic detector).
    assert (reading.kind, reading.device_id, reading.seq) == (Kind.AIR_QUALITY, "udara-lora", 1)
    # The Network Server's time of reception (uplink_message.received_at).
    assert reading.ts_ns == 1_581_520_545_789_585_000
    assert reading.values == {"pm25": 41.5, "temp_c": 31.0, "rssi_dbm": -35.0, "snr_db": 5.0}


def test_a_things_stack_uplink_of_an_unknown_dev_eui_maps_by_device_id() -> None:
    message = changed(THINGS_STACK_UP, "end_device_ids.dev_eui", "70B3D57ED005B89A")
    message = changed(message, "uplink_message.decoded_payload", {"speed_kmh": 31})
    [reading] = decode(THINGS_STACK_TOPIC, message).readings
    assert (reading.device_id, reading.values["speed_kmh"]) == ("dev1", 31.0)


def test_the_things_stack_application_server_time_is_used_without_the_network_servers() -> None:
    message = changed(THINGS_STACK_UP, "uplink_message.received_at", None)
    [reading] = decode(THINGS_STACK_TOPIC, message).readings
    assert reading.ts_ns == 1_581_520_546_014_773_000


def test_the_codecs_own_ts_and_seq_win_over_the_networks() -> None:
    message = changed(CHIRPSTACK_UP, "object", {"level_cm": 1, "ts": 1_699_999_000, "seq": 7.0})
    [reading] = decode(CHIRPSTACK_TOPIC, message).readings
    assert (reading.ts_ns, reading.seq) == (1_699_999_000 * 10**9, 7)


def test_the_strongest_of_several_gateways_gives_rssi_and_snr() -> None:
    gateways = [{"gatewayId": "a", "rssi": -110, "snr": -7.25},
                {"gatewayId": "b", "rssi": -88, "snr": 2.5},
                {"gatewayId": "c", "snr": 9}]  # no RSSI: not compared
    [reading] = decode(CHIRPSTACK_TOPIC, changed(CHIRPSTACK_UP, "rxInfo", gateways)).readings
    assert (reading.values["rssi_dbm"], reading.values["snr_db"]) == (-88.0, 2.5)


def test_a_missing_frame_counter_is_zero_as_protobuf_json_leaves_it_out() -> None:
    [reading] = decode(CHIRPSTACK_TOPIC, changed(CHIRPSTACK_UP, "fCnt", None)).readings
    assert reading.seq == 0


def test_an_uplink_without_a_decoded_payload_needs_a_codec() -> None:
    out = decode(CHIRPSTACK_TOPIC, changed(CHIRPSTACK_UP, "object", None))
    [letter] = out.dead
    assert letter.code == "no-codec"
    assert letter.reason == ("ChirpStack uplink of 'pos-lora' has no decoded payload: give the "
                             "device a payload codec that returns Siaga's fields for a "
                             "water-level device")
    out = decode(THINGS_STACK_TOPIC,
                 changed(THINGS_STACK_UP, "uplink_message.decoded_payload", None))
    assert [letter.code for letter in out.dead] == ["no-codec"]


def test_an_unknown_dev_eui_is_an_unknown_device() -> None:
    message = changed(CHIRPSTACK_UP, "deviceInfo.devEui", "70B3D57ED005B89A")
    [letter] = decode(CHIRPSTACK_TOPIC, message).dead
    assert (letter.code, letter.reason) == (
        "unknown-device", "no catalog device has dev_eui '70b3d57ed005b89a'")
    message = changed(THINGS_STACK_UP, "end_device_ids.dev_eui", "70B3D57ED005B89A")
    message = changed(message, "end_device_ids.device_id", "eui-70b3d57ed005b89a")
    [letter] = decode(THINGS_STACK_TOPIC, message).dead
    assert (letter.code, letter.reason) == (
        "unknown-device",
        "no catalog device has dev_eui '70b3d57ed005b89a' nor id 'eui-70b3d57ed005b89a'")


def test_decoded_fields_are_validated_as_the_devices_own_readings() -> None:
    out = decode(CHIRPSTACK_TOPIC, changed(CHIRPSTACK_UP, "object", {"level_cm": 5000.0,
                                                                     "colour": "blue"}))
    [letter] = out.dead
    assert (letter.code, letter.reason) == ("invalid-reading",
                                            "level_cm: must be <= 1200 (got 5000.0)")
    assert letter.topic == CHIRPSTACK_TOPIC and letter.payload.startswith(b'{"deduplicationId"')
    # An unknown field of a good uplink is counted as ignored, as a device's own would be.
    out = decode(CHIRPSTACK_TOPIC, changed(CHIRPSTACK_UP, "object", {"level_cm": 50.0,
                                                                     "colour": "blue"}))
    assert out.ignored_fields == {("pos-lora", "colour"): 1}


def test_a_gateway_snr_out_of_range_is_refused_with_its_field() -> None:
    message = changed(CHIRPSTACK_UP, "rxInfo", [{"rssi": -36, "snr": 45}])
    [letter] = decode(CHIRPSTACK_TOPIC, message).dead
    assert letter.reason == "snr_db: must be <= 30 (got 45.0)"


@pytest.mark.parametrize(("topic", "payload", "code", "reason"), [
    (CHIRPSTACK_TOPIC, b"{", "bad-json", "ChirpStack uplink: not valid UTF-8 JSON"),
    (CHIRPSTACK_TOPIC, orjson.dumps(changed(CHIRPSTACK_UP, "deviceInfo", None)),
     "invalid-reading", "ChirpStack uplink: deviceInfo: required"),
    (CHIRPSTACK_TOPIC, orjson.dumps(changed(CHIRPSTACK_UP, "deviceInfo.devEui", "01")),
     "invalid-reading", "ChirpStack uplink: deviceInfo.devEui: string should match pattern "
     "'^[0-9A-Fa-f]{16}$'"),
    (THINGS_STACK_TOPIC, orjson.dumps(changed(THINGS_STACK_UP, "uplink_message", None)),
     "invalid-reading", "The Things Stack uplink: uplink_message: required"),
    (THINGS_STACK_TOPIC, b"[]", "invalid-reading",
     "The Things Stack uplink: reading: must be a JSON object, not array"),
])
def test_a_message_that_is_no_uplink_is_a_dead_letter(
        topic: str, payload: bytes, code: str, reason: str) -> None:
    out = decode(topic, payload)
    assert out.readings == []
    [letter] = out.dead
    assert (letter.code, letter.reason) == (code, reason)


def test_siaga_topics_still_decode_beside_the_lorawan_sources() -> None:
    out = decode("siaga/water-level/pos-lora/telemetry", b'{"level_cm": 12}')
    assert [r.device_id for r in out.readings] == ["pos-lora"]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), [
    ("application/+/device/+/event/up", CHIRPSTACK_TOPIC, True),
    ("application/+/device/+/event/up", CHIRPSTACK_TOPIC.replace("/up", "/join"), False),
    ("v3/+/devices/+/up", THINGS_STACK_TOPIC, True),
    ("v3/+/devices/+/up", "v3/app1/devices/dev1/up", True),
    ("v3/+/devices/+/up", "v3/app1@ttn/devices/dev1/down/sent", False),
    ("v3/#", "v3/app1@ttn/devices/dev1/up", True),
    ("v3/+/devices/+/up", "siaga/water-level/x/telemetry", False),
])
def test_topics_match_mqtt_filters(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize("topic", ["v3/#/up", "application/a+/up", ""])
def test_a_topic_that_is_no_mqtt_filter_is_refused_in_the_settings(topic: str) -> None:
    with pytest.raises(ValidationError):
        LorawanSettings.model_validate({"chirpstack": {"enabled": True, "topic": topic}})


def test_the_settings_default_to_off_with_the_servers_own_topics() -> None:
    settings = LorawanSettings()
    assert (settings.chirpstack.enabled, settings.chirpstack.topic) == (
        False, "application/+/device/+/event/up")
    assert (settings.things_stack.enabled, settings.things_stack.topic) == (
        False, "v3/+/devices/+/up")
