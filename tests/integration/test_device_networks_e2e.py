"""Device networks end to end: `siaga run` as a real process with `lorawan:` enabled, the
session's Mosquitto and InfluxDB 1.6.7. A ChirpStack uplink, a The Things Stack uplink (as a
Mosquitto bridge would bring it into the local broker) and a SenML pack on a device's own
topic become points with their signal fields; an uplink of a DevEUI the catalog lacks is a
dead letter saying so.

ChirpStack and The Things Stack are not in Debian's archive: their messages are published
here in the shapes their documentation gives (see tests/ingest/test_lorawan.py).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import ADMIN_USER, Mosquitto
from tests.integration.support import (
    Publisher,
    ServiceProcess,
    influx_rows,
    make_settings,
    unique_name,
    write_config,
)
from tests.polling import wait_until

TOKEN = "officer-token-for-the-device-networks-test"
CATALOG = {"devices": [
    {"id": "pos-chirp", "kind": "water-level", "name": "Pos ChirpStack", "lat": -6.2,
     "lon": 106.8, "dev_eui": "0101010101010101"},
    {"id": "udara-ttn", "kind": "air-quality", "name": "Udara TTN", "lat": -6.21,
     "lon": 106.81, "dev_eui": "0004A30B001C0530"},
    {"id": "pos-senml", "kind": "water-level", "name": "Pos SenML", "lat": -6.22,
     "lon": 106.82},
]}
AT_S = int(time.time()) - 120  # when the uplinks were heard: two minutes ago


def rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def chirpstack_up(dev_eui: str) -> dict[str, Any]:
    """ChirpStack v4's `up` event (chirpstack-docs src/chirpstack/integrations/events.md)
    with a codec's `object` and a frame counter."""
    return {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": rfc3339(AT_S),
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
            "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
            "applicationName": "Siaga gauges",
            "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
            "deviceProfileName": "Ultrasonic gauge", "deviceName": "Pos ChirpStack",
            "devEui": dev_eui, "tags": {},
        },
        "devAddr": "00189440", "dr": 5, "fCnt": 17, "fPort": 2, "data": "AZw=",
        "object": {"level_cm": 412.0, "battery_v": 3.61},
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -97,
                    "snr": -3.5, "context": "E3OWOQ==",
                    "metadata": {"region_name": "as923", "region_common_name": "AS923"}}],
        "txInfo": {"frequency": 923200000, "modulation": {"lora": {
            "bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}},
    }


def things_stack_up() -> dict[str, Any]:
    """The Things Stack v3's uplink (lorawan-stack-docs doc/content/integrations/
    data-formats/_index.md) with Siaga's fields as the formatter's output."""
    return {
        "end_device_ids": {"device_id": "udara-ttn-1", "application_ids": {
            "application_id": "siaga-air"}, "dev_eui": "0004A30B001C0530",
            "join_eui": "800000000000000C", "dev_addr": "00BCB929"},
        "correlation_ids": ["as:up:01E0WZGT6Y7657CPFPE5WEYDSQ"],
        "received_at": rfc3339(AT_S + 1),
        "uplink_message": {
            "session_key_id": "AXA50tHUGUucuzS/bCGMNw==", "f_port": 1, "f_cnt": 5,
            "frm_payload": "gkHe", "decoded_payload": {"pm25": 41.5, "temp_c": 31.0},
            "rx_metadata": [{"gateway_ids": {"gateway_id": "gtw1", "eui": "9C5C8E00001A05C4"},
                             "time": rfc3339(AT_S), "timestamp": 2463457000, "rssi": -112,
                             "channel_rssi": -112, "snr": -9.25, "channel_index": 2}],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 10}},
                         "coding_rate": "4/5", "frequency": "923400000"},
            "received_at": rfc3339(AT_S),
            "consumed_airtime": "0.370688s",
        },
    }


@pytest.fixture
def service(mosquitto: Mosquitto, influxdb1: InfluxDB1,
            tmp_path: Path) -> Iterator[tuple[ServiceProcess, str, str]]:
    """`siaga run` with both LoRaWAN inputs on; yields it, its database and topic prefix."""
    catalog = tmp_path / "devices.yaml"
    catalog.write_bytes(orjson.dumps(CATALOG))
    database = unique_name("networks_")
    # The network servers' topics are outside Siaga's prefix. `siaga broker init` grants
    # them to the service user of a site that enables them (tests/siaga/test_provision.py);
    # the session broker's ACL is written for Siaga's own topics, so here the service reads
    # as the test broker's admin.
    settings = make_settings(mosquitto.url_for(ADMIN_USER),
                             InfluxSettings(url=influxdb1.url, database=database),
                             tmp_path / "data", catalog=catalog)
    lorawan = {"chirpstack": {"enabled": True},
               "things_stack": {"enabled": True, "topic": "v3/+/devices/+/up"}}
    config = write_config(settings, tmp_path / "siaga.yaml", token=TOKEN, lorawan=lorawan)
    process = ServiceProcess(config, tmp_path / "siaga.log")
    process.start()
    try:
        yield process, database, settings.mqtt.topic_prefix
    finally:
        process.stop()


def dead_letters(base: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{base}/api/deadletters",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        letters: list[dict[str, Any]] = json.load(answer)["dead_letters"]
        return letters


def test_lorawan_uplinks_and_a_senml_pack_are_stored_with_their_signal_fields(
        service: tuple[ServiceProcess, str, str], mosquitto: Mosquitto,
        influxdb1: InfluxDB1) -> None:
    process, database, prefix = service
    senml = [{"bn": "urn:dev:siaga:pos-senml:", "bt": AT_S, "n": "level", "u": "m", "v": 1.5},
             {"n": "battery", "u": "V", "v": 12.4},
             {"n": "level", "u": "m", "t": 60, "v": 1.52}]
    publisher = Publisher(mosquitto, user=ADMIN_USER)  # as the servers and the bridge would
    try:
        publisher.publish("application/17c82e96-be03-4f38-aef3-f83d48582d97/device/"
                          "0101010101010101/event/up", chirpstack_up("0101010101010101"))
        publisher.publish("v3/siaga-air@ttn/devices/udara-ttn-1/up", things_stack_up())
        publisher.publish(f"{prefix}/water-level/pos-senml/telemetry", senml)
        publisher.publish("application/17c82e96-be03-4f38-aef3-f83d48582d97/device/"
                          "70b3d57ed005b89a/event/up", chirpstack_up("70b3d57ed005b89a"))
        publisher.wait_acked(4)

        def rows(query: str) -> list[dict[str, Any]]:
            return influx_rows(influxdb1, database, query)

        water = 'SELECT * FROM "water_level" GROUP BY "device_id"'
        air = 'SELECT * FROM "air_quality"'
        wait_until(lambda: len(rows(water)) == 3 and len(rows(air)) == 1, 30,
                   "the three water-level points and the air-quality point in InfluxDB")
        letters = dead_letters(process.base)
    finally:
        publisher.close()

    by_device: dict[str, list[dict[str, Any]]] = {}
    for row in rows(water):
        by_device.setdefault(row["device_id"], []).append(row)
    [chirp] = by_device["pos-chirp"]
    assert (chirp["time"], chirp["level_cm"], chirp["battery_v"]) == (
        rfc3339(AT_S), 412, 3.61)
    assert (chirp["rssi_dbm"], chirp["snr_db"], chirp["seq"]) == (-97, -3.5, 17)
    [ttn] = rows(air)
    assert (ttn["device_id"], ttn["time"], ttn["pm25"], ttn["temp_c"]) == (
        "udara-ttn", rfc3339(AT_S), 41.5, 31)
    assert (ttn["rssi_dbm"], ttn["snr_db"], ttn["seq"]) == (-112, -9.25, 5)
    assert [(row["time"], row["level_cm"], row["battery_v"])
            for row in by_device["pos-senml"]] == [
        (rfc3339(AT_S), 150, 12.4), (rfc3339(AT_S + 60), 152, None)]

    [letter] = letters
    assert (letter["code"], letter["reason"]) == (
        "unknown-device", "no catalog device has dev_eui '70b3d57ed005b89a'")
    assert letter["topic"].endswith("/device/70b3d57ed005b89a/event/up")
