"""A batch InfluxDB 1.x takes in part: split, good lines stored once, the rest dead-lettered.

What a real InfluxDB 1.6.7 answers (`/write?db=&precision=ns`) to a batch with some bad lines:
HTTP 400, and it has already WRITTEN every line it could parse and type-check. The body is
`{"error": "partial write: <reason> dropped=<n>"}`, where `<reason>` is the first field type
conflict (`field type conflict: input field "battery_v" on measurement "water_level" is type
float, already exists as type integer`), or, when no line conflicts, the unparsable lines
(`unable to parse '<line>': <why>`, newline-joined); `dropped` counts the type conflicts only
(a parse error alone gives `dropped=0`). A batch of only unparsable lines gets a plain
`unable to parse ...` 400, with nothing written.

So the storage's split-and-retry sends good lines more than once: the whole batch (written in
part), then the halves that still hold a bad line. These tests show that costs nothing:
InfluxDB keeps one point per series and timestamp, the storage counts each line once, and
every refused line is dead-lettered alone with the server's reason for that very line.

A refusal of a valid-looking reading happens for real when another writer (an old script, a
Telegraf) created a field with another type: here `battery_v` as an integer, which Siaga
always writes as a float. Field types are kept per shard (7 days by default), so the other
writer's point must fall in the readings' week.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from devices.registry import load_catalog
from ingest.deadletters import DeadLetter, DeadLetterStore
from ingest.influx import RejectedWriteError, V1Writer
from ingest.lineprotocol import encode
from ingest.settings import InfluxSettings
from ingest.spool import Spool
from ingest.storage import Rejection, Storage
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.integration.support import (
    Publisher,
    influx_rows,
    make_settings,
    running_service,
    unique_name,
)
from tests.polling import eventually

TS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z, one second per seq after it
CONFLICT = ('field type conflict: input field "battery_v" on measurement "water_level" '
            "is type float, already exists as type integer")
DAMAGED = "water_level,device_id=pa-01 level_cm=7,seq=99i 170000x"  # damaged on disk: no number
BAD_SEQS = (2, 5, 6, 11)  # the readings that carry a battery voltage
SIZE = 16


def reading_line(seq: int, device_id: str = "pa-01") -> str:
    """Siaga's line for a reading; those of BAD_SEQS carry `battery_v` (a float, as always)."""
    values = {"level_cm": 700.0 + seq} | ({"battery_v": 12.5} if seq in BAD_SEQS else {})
    return encode("water_level", {"device_id": device_id}, values, seq, TS + seq * 10**9)


async def legacy_database(influx: InfluxDB1) -> str:
    """A database where another writer already made `battery_v` an integer field.

    In the same week as the readings: InfluxDB 1.x keeps field types per shard (a shard
    group spans 7 days by default), so a point of another week would conflict with nothing.
    """
    database = unique_name("partial_")
    async with V1Writer(influx.url, database) as writer:
        await writer.write(f"water_level,device_id=legacy battery_v=12i {TS}".encode())
    return database


def stored_seqs(influx: InfluxDB1, database: str, device_id: str = "pa-01") -> list[int]:
    """Every stored point's seq, in time order (InfluxDB keeps one point per series and time:
    the same line sent twice is one point, so doubling is checked in the storage's counts)."""
    rows = influx_rows(influx, database,
                       f"SELECT seq FROM water_level WHERE device_id = '{device_id}'")
    return [int(row["seq"]) for row in rows]


def level_count(influx: InfluxDB1, database: str) -> int:
    rows = influx_rows(influx, database,
                       "SELECT count(level_cm) FROM water_level WHERE device_id = 'pa-01'")
    return int(rows[0]["count"]) if rows else 0


async def test_influxdb_1x_writes_the_good_lines_of_a_batch_it_answers_400(
    influxdb1: InfluxDB1,
) -> None:
    # The premise of the split, and of the stand-in of tests/ingest/test_storage.py.
    database = await legacy_database(influxdb1)
    lines = [reading_line(seq) for seq in range(8)] + [DAMAGED]
    async with V1Writer(influxdb1.url, database) as writer:
        with pytest.raises(RejectedWriteError) as caught:
            await writer.write("\n".join(lines).encode())
        with pytest.raises(RejectedWriteError) as damaged_only:
            await writer.write(DAMAGED.encode())
    assert caught.value.status == 400
    # Only the first conflict is named (not the damaged line), and dropped counts conflicts.
    assert caught.value.message == f"partial write: {CONFLICT} dropped=3"
    assert stored_seqs(influxdb1, database) == [0, 1, 3, 4, 7]
    assert damaged_only.value.status == 400
    assert damaged_only.value.message.startswith(f"unable to parse '{DAMAGED}': ")


async def test_a_partly_refused_batch_is_stored_once_and_its_bad_lines_dead_lettered(
    influxdb1: InfluxDB1, tmp_path: Path,
) -> None:
    database = await legacy_database(influxdb1)
    lines = [reading_line(seq) for seq in range(SIZE)]
    good = [seq for seq in range(SIZE) if seq not in BAD_SEQS]
    reported: list[Rejection] = []
    async with V1Writer(influxdb1.url, database) as writer:
        storage = Storage(writer, Spool(tmp_path / "spool", 1 << 20), reported.extend)
        outcome = await storage.store(lines)
    assert stored_seqs(influxdb1, database) == good
    assert level_count(influxdb1, database) == len(good)
    assert (outcome.written, outcome.spooled) == (len(good), 0)
    assert storage.stats.written_total == len(good)  # each line counted once, not per send
    assert outcome.rejected == [(lines[seq], f"partial write: {CONFLICT} dropped=1")
                                for seq in BAD_SEQS]
    assert storage.stats.rejected_total == len(BAD_SEQS)
    assert reported == []  # a direct store hands its rejections back; only the drain reports


async def test_the_drain_delivers_a_partly_bad_segment_once_and_dead_letters_the_rest(
    influxdb1: InfluxDB1, tmp_path: Path,
) -> None:
    # A spooled segment may also hold a damaged line: each refused line gets its own reason,
    # although the server's answer to the whole segment named only the first conflict.
    database = await legacy_database(influxdb1)
    lines = [reading_line(seq) for seq in range(SIZE)]
    lines.insert(9, DAMAGED)
    good = [seq for seq in range(SIZE) if seq not in BAD_SEQS]
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.append("\n".join(lines).encode())
    with DeadLetterStore(tmp_path / "deadletters.sqlite") as letters:

        def dead_letter(rejected: list[Rejection]) -> None:  # as the service records them
            letters.add_many([DeadLetter("(spool)", line.encode(), f"InfluxDB refused: {why}",
                                         1, "rejected-by-influxdb") for line, why in rejected])

        async with V1Writer(influxdb1.url, database) as writer:
            storage = Storage(writer, spool, dead_letter)
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                group.create_task(storage.drain(stop))
                await eventually(lambda: spool.empty, what="the segment drained")
                stop.set()
        kept = sorted(letters.recent(limit=100), key=lambda letter: letter.id)
    assert stored_seqs(influxdb1, database) == good
    assert storage.stats.written_total == len(good)
    bad_lines = [lines[seq] for seq in BAD_SEQS[:3]] + [DAMAGED, lines[BAD_SEQS[3] + 1]]
    assert [letter.payload.decode() for letter in kept] == bad_lines
    reasons = [letter.reason for letter in kept]
    assert reasons[3].startswith(f"InfluxDB refused: unable to parse '{DAMAGED}': ")
    assert set(reasons[:3] + reasons[4:]) == {f"InfluxDB refused: partial write: {CONFLICT} "
                                              "dropped=1"}


async def test_readings_influxdb_refuses_are_dead_lettered_and_the_rest_stored_once(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path,
) -> None:
    # End to end: one store-and-forward message of SIZE readings (one batch, split on the
    # refusal), then single readings; every message acknowledged, nothing lost or doubled.
    database = await legacy_database(influxdb1)
    settings = make_settings(mosquitto.url, InfluxSettings(url=influxdb1.url, database=database),
                             tmp_path)
    registry = load_catalog(settings.catalog_path)
    device = "manggarai"
    topic = f"{settings.mqtt.topic_prefix}/water-level/{device}/telemetry"
    readings = [{"ts": TS // 10**9 + seq, "seq": seq, "level_cm": 700.0 + seq}
                | ({"battery_v": 12.5} if seq in BAD_SEQS else {}) for seq in range(SIZE)]
    singles = [{"ts": TS // 10**9 + seq, "seq": seq, "level_cm": 700.0 + seq}
               for seq in range(SIZE, SIZE + 4)]
    good = [seq for seq in range(SIZE + 4) if seq not in BAD_SEQS]
    async with running_service(settings, registry) as service:
        publisher = Publisher(mosquitto)
        try:
            publisher.publish(topic, readings)
            for single in singles:
                publisher.publish(topic, single)
            await eventually(lambda: service.stats.acked >= 1 + len(singles),
                             what="every message acknowledged by the service")
        finally:
            publisher.close()
        snapshot = service.snapshot()
    assert stored_seqs(influxdb1, database, device) == good
    assert snapshot["stored"] == len(good)
    assert service.stats.acked == 1 + len(singles)
    with DeadLetterStore(tmp_path / "deadletters.sqlite") as store:
        letters = sorted(store.recent(limit=100), key=lambda letter: letter.id)
    seqs = [re.search(r",seq=(\d+)i ", letter.payload.decode()) for letter in letters]
    assert [int(found.group(1)) for found in seqs if found] == list(BAD_SEQS)
    assert len(letters) == len(BAD_SEQS)
    assert {(letter.topic, letter.code, letter.reason) for letter in letters} == {
        (topic, "rejected-by-influxdb", f"InfluxDB refused: partial write: {CONFLICT} dropped=1")}
