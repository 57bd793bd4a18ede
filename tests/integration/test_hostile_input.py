"""The hostile corpus through a real Mosquitto to the running service and a real InfluxDB.

Each hostile message is published between valid readings. The service must stay up, turn
each hostile message into exactly its dead letters (reasons naming the problem), and store
every valid reading intact, with nothing the hostile messages tried to smuggle in.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ingest.deadletters import DeadLetterStore, StoredDeadLetter
from ingest.settings import InfluxSettings
from siaga.broker.auth import SIMULATOR_USER
from siaga.broker.config import connect_packet, remaining_length
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.hostile.corpus import Case, cases_via
from tests.ingest.test_lineprotocol_fuzz import INFLUXDB_1_6_STORED, parse_line, point_line
from tests.integration.support import (
    Publisher,
    influx_count,
    make_settings,
    running_service,
    unique_name,
)
from tests.polling import eventually

TS_VALID = 1_690_000_000  # event time of the valid readings (July 2023), one second apart
DEVICE = "manggarai"
# What a water_level point of manggarai may hold: its tags (SPEC section 2) and fields.
ALLOWED_COLUMNS = {"time", "device_id", "kota", "river", "level_cm", "battery_v", "seq"}
SETTLE_S = 15.0  # the whole corpus is stored or dead-lettered within this


def valid_reading(seq: int) -> dict[str, Any]:
    return {"ts": TS_VALID + seq, "seq": seq, "level_cm": 200.5 + seq % 100, "battery_v": 12.5}


def _v1(influx: InfluxDB1) -> tuple[InfluxSettings, str]:
    database = unique_name("siaga_")
    return InfluxSettings(api="v1", url=influx.url, database=database), database


def _rows(influx: InfluxDB1, database: str, query: str) -> list[dict[str, Any]]:
    result = influx.query(query, database, epoch="ns")
    rows: list[dict[str, Any]] = []
    for statement in result.get("results", []):
        for series in statement.get("series", []):
            for values in series["values"]:
                rows.append(dict(zip(series["columns"], values, strict=True)))
    return rows


def _unmatched(letters: list[StoredDeadLetter], cases: list[Case], prefix: str) -> list[str]:
    """Pair each expected letter with a stored one; return what is missing or left over."""
    pool: dict[tuple[str, str], list[StoredDeadLetter]] = defaultdict(list)
    for letter in letters:
        pool[(letter.topic, letter.code)].append(letter)
    problems = []
    for case in cases:
        topic = case.topic(prefix)
        for expected in case.dead:
            whole = not expected.reason.startswith("item ")
            candidates = pool[(topic, expected.code)]
            found = next((letter for letter in candidates if expected.reason in letter.reason
                          and (not whole or letter.payload == case.payload)), None)
            if found is None:
                problems.append(f"{case.name}: no {expected.code} letter with {expected.reason!r}")
            else:
                candidates.remove(found)
    leftover = [letter for letters in pool.values() for letter in letters]
    problems.extend(f"unexpected: {letter.code} {letter.reason!r}" for letter in leftover)
    return problems


async def test_hostile_messages_between_valid_readings_become_their_dead_letters_only(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path)
    prefix = settings.mqtt.topic_prefix
    valid_topic = f"{prefix}/water-level/{DEVICE}/telemetry"
    cases = cases_via("mqtt", "not-subscribed")  # the latter never reach the service
    delivered = [case for case in cases if case.via == "mqtt"]
    expected_dead = sum(len(case.dead) for case in delivered)
    hostile_stored = {stored.seq: stored.values for case in delivered for stored in case.stored}

    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        for seq, case in enumerate(cases):
            publisher.publish(valid_topic, valid_reading(seq))
            publisher.publish(case.topic(prefix), case.payload)
        valid_seqs = range(len(cases) + 1)
        publisher.publish(valid_topic, valid_reading(valid_seqs[-1]))
        await eventually(lambda: publisher.acked >= 2 * len(cases) + 1, SETTLE_S)

        def count() -> int:
            return influx_count(influxdb1, database, "water_level", "level_cm")

        expected_points = len(valid_seqs) + len(hostile_stored)
        await eventually(lambda: service.stats.dead_lettered >= expected_dead
                         and count() >= expected_points, SETTLE_S)
        # Still up and still storing after the whole corpus.
        publisher.publish(valid_topic, valid_reading(len(valid_seqs)))
        valid_seqs = range(len(valid_seqs) + 1)
        await eventually(lambda: count() == expected_points + 1, SETTLE_S)
        publisher.close()
        stats = service.stats

    assert stats.messages == len(valid_seqs) + len(delivered)
    assert stats.dead_lettered == expected_dead
    with DeadLetterStore(tmp_path / "deadletters.sqlite") as store:
        letters = store.recent(limit=expected_dead + 100)
    assert _unmatched(letters, delivered, prefix) == []
    assert Counter(letter.code for letter in letters) == stats.dead_letters

    rows = _rows(influxdb1, database, "SELECT * FROM water_level")
    by_seq = {row["seq"]: row for row in rows}
    assert len(by_seq) == len(rows) == len(valid_seqs) + len(hostile_stored)
    for seq in valid_seqs:
        expected = valid_reading(seq)
        row = by_seq[seq]
        assert (row["time"], row["level_cm"], row["battery_v"]) == (
            expected["ts"] * 10**9, expected["level_cm"], expected["battery_v"])
    for seq, values in hostile_stored.items():
        stored = {name: by_seq[seq][name] for name in ("level_cm", "battery_v")}
        assert stored == {"battery_v": None, **values}, seq
    # Nothing smuggled in: one series, the catalog's tags, the SPEC's fields.
    assert {column for row in rows for column in row} <= ALLOWED_COLUMNS
    assert {(row["device_id"], row["kota"], row["river"]) for row in rows} == {
        (DEVICE, "Jakarta Selatan", "Ciliwung")}
    assert [row["name"] for row in _rows(influxdb1, database, "SHOW MEASUREMENTS")] == [
        "water_level"]
    fields = _rows(influxdb1, database, "SHOW FIELD KEYS FROM water_level")
    assert {(row["fieldKey"], row["fieldType"]) for row in fields} == {
        ("battery_v", "float"), ("level_cm", "float"), ("seq", "integer")}


async def test_a_payload_over_64_kib_is_refused_by_the_broker_and_what_follows_is_stored(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path)
    prefix = settings.mqtt.topic_prefix
    oversized = cases_via("broker-refuses-payload")
    assert all(len(case.payload) > 65536 for case in oversized)
    assert any(case.stored for case in oversized)  # one that would be stored if it came
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        for case in oversized:
            publisher.publish(case.topic(prefix), case.payload)
        publisher.publish(f"{prefix}/water-level/{DEVICE}/telemetry", valid_reading(0))
        await eventually(lambda: publisher.acked >= len(oversized) + 1)
        await eventually(lambda: influx_count(influxdb1, database, "water_level", "seq") == 1)
        publisher.close()
    assert (service.stats.messages, service.stats.dead_lettered) == (1, 0)
    assert [row["seq"] for row in _rows(influxdb1, database, "SELECT seq FROM water_level")] == [0]


async def test_topics_the_broker_refuses_never_reach_the_service_which_stays_up(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    influx, database = _v1(influxdb1)
    settings = make_settings(mosquitto.url, influx, tmp_path)
    prefix = settings.mqtt.topic_prefix
    refused = cases_via("broker-refuses-topic")
    assert refused
    async with running_service(settings) as service:
        for case in refused:
            # paho refuses to send these: a raw client shows what the broker does with them.
            closed = await asyncio.to_thread(
                _raw_publish, mosquitto, case.topic_bytes(prefix), case.payload)
            assert closed, f"{case.name}: the broker kept the connection"
        publisher = Publisher(mosquitto)
        publisher.publish(f"{prefix}/water-level/{DEVICE}/telemetry", valid_reading(0))
        await eventually(lambda: influx_count(influxdb1, database, "water_level", "seq") == 1)
        publisher.close()
    assert (service.stats.messages, service.stats.dead_lettered) == (1, 0)


def test_the_line_protocol_parser_reads_labels_as_influxdb_stores_them(
    influxdb1: InfluxDB1,
) -> None:
    database = unique_name("lp_")
    influxdb1.query(f'CREATE DATABASE "{database}"')
    values = sorted(INFLUXDB_1_6_STORED)
    lines = [point_line("m", {"k": value, "z": "end"}, {"f": float(index)}, None, index + 1)
             for index, value in enumerate(values)]
    _write_lines(influxdb1, database, lines)
    stored = {int(row["f"]): row["k"] for row in _rows(influxdb1, database, "SELECT * FROM m")}
    assert len(stored) == len(values)
    for index, value in enumerate(values):
        assert stored[index] == parse_line(lines[index]).tags["k"] == INFLUXDB_1_6_STORED[value]


def _write_lines(influx: InfluxDB1, database: str, lines: list[str]) -> None:
    request = urllib.request.Request(f"{influx.url}/write?db={database}&precision=ns",
                                     data="\n".join(lines).encode(), method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status == 204


def _raw_publish(broker: Mosquitto, topic: bytes, payload: bytes) -> bool:
    """Publish at QoS 0 over a bare MQTT 3.1.1 connection; True if the broker then hung up."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(connect_packet(unique_name("raw-"), SIMULATOR_USER,
                                    broker.users[SIMULATOR_USER]))
        assert sock.recv(4) == b"\x20\x02\x00\x00", "CONNACK: connection accepted"
        body = struct.pack(">H", len(topic)) + topic + payload
        sock.sendall(b"\x30" + remaining_length(len(body)) + body)
        try:
            return sock.recv(1) == b""
        except TimeoutError:
            return False


