"""Cameras' detections as `camera_event` points: Point's line, InfluxDB 1.6.7's reading of it,
and the pipeline storing them before the ack, each (device, event, type) observed once.

The InfluxDB tests run the real server (the session's `influxdb1`), hence the marker.
"""

# Point's methods carry no annotations.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from devices.detections import Detection
from devices.kinds import EVENT_MEASUREMENT
from devices.readings import Reading, StatusUpdate
from devices.topics import TopicScheme
from ingest.deadletters import DeadLetterStore
from ingest.decode import Decoder
from ingest.influx import V1Writer
from ingest.lineprotocol import encode_event, event_series_key, event_time_ns
from ingest.pipeline import Pipeline, RecentEvents
from ingest.settings import IngestSettings
from ingest.spool import Spool
from ingest.stats import IngestStats
from ingest.storage import Storage
from ingest.watchlist import Watchlist
from siaga.sandbox.influxdb import InfluxDB1
from tests.ingest.test_pipeline import CATALOG, ListInbox, acked, running
from tests.integration.support import unique_name

CAMERA = "cam-semanggi"
TOPIC = f"siaga/camera/{CAMERA}/events"
TS_S = 1_700_000_000
PROMPT = IngestSettings(batch_size=100, flush_interval_s=60, linger_s=0)
TRICKY_IDS = ['a"b', "back\\slash", "end\\", '\\"', 'x" y=1,z', "é ü"]


def point_line(tags: dict[str, str], event_id: str, score: float, plate: str | None,
               ts_ns: int) -> str:
    point = Point(EVENT_MEASUREMENT)
    for key, value in tags.items():
        point.tag(key, value)
    point.field("event_id", event_id).field("score", score)
    if plate is not None:
        point.field("plate", plate)
    line: str = point.time(ts_ns, WritePrecision.NS).to_line_protocol()
    return line


@pytest.mark.parametrize("event_id", TRICKY_IDS)
@pytest.mark.parametrize("plate", [None, "B1234XYZ", 'P"\\'])
def test_an_event_line_is_points_line(event_id: str, plate: str | None) -> None:
    tags = {"device_id": CAMERA, "kota": "Jakarta Selatan"}
    key = event_series_key(EVENT_MEASUREMENT, tags, "plate", "new", "loop-ramp")
    ts_ns = TS_S * 10**9 + 123
    assert encode_event(key, event_id, 0.5, plate, ts_ns) == point_line(
        {**tags, "label": "plate", "type": "new", "zone": "loop-ramp"}, event_id, 0.5, plate,
        event_time_ns(ts_ns, event_id))


def test_events_of_one_microsecond_get_distinct_stable_times_within_it() -> None:
    # Two objects of one Frigate frame, or a batch of events stamped with their receipt:
    # one series and one time, unless made distinct (a review found the later overwrote).
    ts_ns = TS_S * 10**9 + 123_456_789
    times = {event_time_ns(ts_ns, f"e{index}") for index in range(30)}
    assert len(times) == 30 and all(ts_ns - 789 <= t < ts_ns - 789 + 1000 for t in times)
    assert event_time_ns(ts_ns, "e7") == event_time_ns(ts_ns, "e7")


def test_events_stamped_in_whole_seconds_get_distinct_stable_times_within_a_millisecond() -> None:
    ts_ns = TS_S * 10**9
    times = {event_time_ns(ts_ns, f"e{index}") for index in range(100)}
    assert len(times) == 100 and all(ts_ns <= t < ts_ns + 1_000_000 for t in times)
    assert event_time_ns(ts_ns, "e7") == event_time_ns(ts_ns, "e7")


def test_the_recent_events_pass_each_key_once_and_forget_the_oldest() -> None:
    recent = RecentEvents(size=2)

    def detection(event_id: str, kind: str = "new") -> Detection:
        return Detection(CAMERA, 0, event_id, kind, "car", 1.0, None, None)  # type: ignore[arg-type]

    assert recent.fresh([detection("a"), detection("a"), detection("a", "end")]) == [
        detection("a"), detection("a", "end")]
    # `a` seen again is the newest; `b` pushes out the oldest, `a end`.
    assert recent.fresh([detection("a"), detection("b")]) == [detection("b")]
    assert recent.fresh([detection("a", "end")]) == [detection("a", "end")]
    assert recent.fresh([detection("b")]) == []


def test_each_update_of_an_event_reaches_the_rules_and_a_redelivered_one_does_not() -> None:
    # Frigate sends an update per frame; only the first reached the rules, so a listed
    # plate read at a later update, or a car seen for an hour, was missed (a review).
    recent = RecentEvents()

    def update(frame_s: int) -> Detection:
        return Detection(CAMERA, frame_s * 10**9, "ev1", "update", "plate", 0.9,  # type: ignore[arg-type]
                         None, "B1234XYZ")

    assert recent.fresh([update(1), update(2), update(2), update(3)]) == [
        update(1), update(2), update(3)]
    assert recent.fresh([update(2)]) == []  # the same frame again: a redelivery


# --- the real InfluxDB -------------------------------------------------------------------

def database_rows(influxdb1: InfluxDB1, database: str, query: str) -> list[dict[str, Any]]:
    """Rows of an InfluxQL query, tags and fields by column, `time` in nanoseconds."""
    result = influxdb1.query(query, database, epoch="ns")
    return [dict(zip(series["columns"], values, strict=True))
            for statement in result.get("results", []) for series in statement.get("series", [])
            for values in series["values"]]


@pytest.mark.integration
async def test_influxdb_reads_string_fields_with_quotes_and_backslashes_back_exactly(
    influxdb1: InfluxDB1,
) -> None:
    database = unique_name("events_")
    tags = {"device_id": CAMERA, "road": "Jl. Jenderal Sudirman"}
    key = event_series_key(EVENT_MEASUREMENT, tags, "plate", "new", None)
    lines = [encode_event(key, event_id, 0.25, 'B"1\\', TS_S * 10**9)
             for event_id in TRICKY_IDS]
    async with V1Writer(influxdb1.url, database) as writer:
        await writer.write("\n".join(lines).encode())
    rows = database_rows(influxdb1, database, f"SELECT * FROM {EVENT_MEASUREMENT}")
    assert sorted(row["event_id"] for row in rows) == sorted(TRICKY_IDS)
    assert {(row["plate"], row["score"], row["label"], row["type"], row["road"], row.get("zone"))
            for row in rows} == {('B"1\\', 0.25, "plate", "new", "Jl. Jenderal Sudirman", None)}


class Recording:
    """The rules' side of the pipeline: what it was handed."""

    def __init__(self) -> None:
        self.detections: list[Detection] = []

    def observe(self, readings: Sequence[Reading], statuses: Sequence[StatusUpdate],
                received_ns: int) -> None:
        pass

    def observe_detections(self, detections: Sequence[Detection], received_ns: int) -> None:
        self.detections.extend(detections)


@contextlib.asynccontextmanager
async def influx_storage(influxdb1: InfluxDB1, database: str,
                         tmp_path: Path) -> AsyncIterator[tuple[Storage, DeadLetterStore]]:
    async with V1Writer(influxdb1.url, database) as writer:
        with DeadLetterStore(tmp_path / "deadletters.sqlite") as dead_letters:
            storage = Storage(writer, Spool(tmp_path / "spool", 1 << 20),
                              on_rejected=lambda rejected: None)
            yield storage, dead_letters


def event(event_id: str, kind: str = "new", **fields: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": kind, "label": "illegal-parking",
                         "score": 0.75, "zone": "loop-ramp", "ts": TS_S, **fields})


@pytest.mark.integration
async def test_detections_are_stored_before_the_ack_and_a_redelivery_is_one_point_seen_once(
    influxdb1: InfluxDB1, tmp_path: Path,
) -> None:
    database = unique_name("events_")

    def stored() -> list[dict[str, Any]]:
        return database_rows(influxdb1, database, f"SELECT * FROM {EVENT_MEASUREMENT}")

    observer, stats = Recording(), IngestStats()
    inbox = ListInbox(stored)
    watchlist = Watchlist.from_entries([("B 1234 XYZ", {"agency": "Bapenda DKI"})])
    decoder = Decoder(CATALOG, TopicScheme("siaga"), watchlist=watchlist)
    async with influx_storage(influxdb1, database, tmp_path) as (storage, dead_letters):
        pipeline = Pipeline(inbox, decoder, storage, dead_letters, stats, PROMPT, observer)
        async with running(pipeline):
            inbox.put(event("p1"), TOPIC)
            await acked(inbox, 1)
            inbox.put(event("p1"), TOPIC)  # QoS 1 redelivery of the same message
            inbox.put(event("p1", "end"), TOPIC)
            inbox.put(orjson.dumps([
                orjson.loads(event("l1", label="plate", plate="B 1234 XYZ")),
                orjson.loads(event("u1", label="plate", plate="B 7777 QRS"))]), TOPIC)
            await acked(inbox, 4)
    assert len(inbox.acks[0].seen) == 1  # the first message's point, stored before its ack
    points = stored()
    assert len(points) == 4  # the redelivered event is the same point again
    rows = {(row["event_id"], row["type"]): row for row in points}
    assert sorted(rows) == [("l1", "new"), ("p1", "end"), ("p1", "new"), ("u1", "new")]
    first = rows[("p1", "new")]
    assert (first["device_id"], first["label"], first["zone"], first["score"],
            first["kota"]) == (CAMERA, "illegal-parking", "loop-ramp", 0.75, "Jakarta Selatan")
    assert TS_S * 10**9 <= first["time"] < TS_S * 10**9 + 1_000_000
    assert rows[("l1", "new")]["plate"] == "B1234XYZ"
    assert rows[("u1", "new")]["plate"] is None
    assert [(d.event_id, d.type) for d in observer.detections] == [
        ("p1", "new"), ("p1", "end"), ("l1", "new"), ("u1", "new")]
    assert (stats.detections, stats.plates_listed, stats.plates_unlisted) == (5, 1, 1)
