"""The pipeline in one process: messages in, durable readings and acknowledgements out.

Everything but the broker and InfluxDB is the real thing: the decoder on the bundled catalog,
the spool in a temporary directory, the dead-letter store in SQLite, and storage over the v1
writer. The broker's side is `ListInbox`, the other side of the `Inbox` protocol: messages
put in by the test, acknowledgements recorded. InfluxDB's side is `WriteEndpoint`, a real
HTTP server in the test that answers `/write` with 204 or, on demand, 503.

Each acknowledgement records what was durable at that moment (a `witness`), so a test can
assert the order that matters, "durable, then acknowledged", without timing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import orjson
import pytest
from aiohttp import web

from devices.detections import Detection
from devices.readings import Reading, StatusUpdate
from devices.registry import bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from ingest.deadletters import DeadLetterStore
from ingest.decode import Decoder
from ingest.inbox import Message
from ingest.influx import V1Writer
from ingest.pipeline import QUEUED_BATCHES, STOP_WRITES_S, Pipeline
from ingest.settings import IngestSettings
from ingest.spool import SEGMENT_SUFFIX, Spool
from ingest.stats import IngestStats
from ingest.storage import Storage
from tests.polling import eventually

CATALOG = load_catalog(bundled_catalog_path())
TOPIC = "siaga/water-level/manggarai/telemetry"
RECEIVED_NS = 1_700_000_000 * 10**9
SPOOL_BUDGET = 1 << 20  # far more than a test writes
# A batch goes out as soon as the writer is idle; each test waits for what it needs.
PROMPT = IngestSettings(batch_size=100, flush_interval_s=60, linger_s=0)
# A batch that is never due while a test runs: only the stop sends it.
NEVER_DUE = IngestSettings(batch_size=100, flush_interval_s=60, linger_s=60)
_SEQ = re.compile(r",seq=(\d+)i ")
_SERIES = re.compile(r"(\w+),(?:.*,)?device_id=([^, ]+)")

Seen = TypeVar("Seen")


def payload(seq: int) -> bytes:
    return orjson.dumps({"seq": seq, "level_cm": 100 + seq})


def seq_of(message: Message) -> int:
    seq = orjson.loads(message.payload)["seq"]
    assert isinstance(seq, int)
    return seq


def seqs(lines: Iterable[str]) -> list[int]:
    """The `seq` of each reading in `lines` of line protocol, in order."""
    return [int(match[1]) for line in lines if (match := _SEQ.search(line))]


@dataclass(frozen=True, slots=True)
class Ack(Generic[Seen]):
    messages: list[Message]
    seen: Seen  # what the test's witness saw at the moment of the ack


class ListInbox(Generic[Seen]):
    """The pipeline's side of a subscriber, in process: the test puts messages in.

    Each `ack` is recorded with what `witness()` returns at that moment.
    """

    def __init__(self, witness: Callable[[], Seen]) -> None:
        self._witness = witness
        self._waiting: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self._next_mid = 1
        self.acks: list[Ack[Seen]] = []

    def put(self, body: bytes, topic: str = TOPIC) -> Message:
        message = Message(topic, body, self._next_mid, 1, 0, RECEIVED_NS)
        self._next_mid += 1
        self._waiting.append(message)
        self._arrived.set()
        return message

    @property
    def waiting(self) -> list[Message]:
        return list(self._waiting)

    @property
    def acked(self) -> list[Message]:
        return [message for ack in self.acks for message in ack.messages]

    async def wait(self, seconds: float) -> None:
        if self._waiting:
            return
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), seconds)

    def take(self, limit: int) -> list[Message]:
        return [self._waiting.popleft() for _ in range(min(limit, len(self._waiting)))]

    def ack(self, messages: list[Message]) -> int:
        self.acks.append(Ack(list(messages), self._witness()))
        return len(messages)


class WriteEndpoint:
    """InfluxDB's `/write` over HTTP: keeps the lines while `status` is 204, else refuses."""

    def __init__(self) -> None:
        self.status = 204
        self.lines: list[str] = []
        self.attempts = 0
        self.url = ""
        self.gate: asyncio.Event | None = None  # when set, writes wait until it opens

    async def write(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.text()
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 204:
            return web.json_response({"error": "unavailable"}, status=self.status)
        self.lines.extend(body.split("\n"))
        return web.Response(status=204)


class Unobserved:
    """The pipeline's observer, the rules' side, which these tests do not look at."""

    def observe(self, readings: Sequence[Reading], statuses: Sequence[StatusUpdate],
                received_ns: int) -> None:
        pass

    def observe_detections(self, detections: Sequence[Detection], received_ns: int) -> None:
        pass


class Observed(Unobserved):
    """The rules' side: the seqs of the readings handed to them, in order."""

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def observe(self, readings: Sequence[Reading], statuses: Sequence[StatusUpdate],
                received_ns: int) -> None:
        self.seqs.extend(reading.seq for reading in readings if reading.seq is not None)


@dataclass
class Rig:
    """Real storage, spool and dead letters around a pipeline fed by a `ListInbox`."""

    endpoint: WriteEndpoint
    spool: Spool
    dead_letters: DeadLetterStore
    storage: Storage
    durability: list[str | None] = field(default_factory=list)  # what on_durability heard
    stats: IngestStats = field(default_factory=IngestStats)

    def pipeline(self, inbox: ListInbox[Seen], settings: IngestSettings = PROMPT) -> Pipeline:
        return Pipeline(inbox, Decoder(CATALOG, TopicScheme("siaga")), self.storage,
                        self.dead_letters, self.stats, settings, Unobserved(),
                        on_durability=self.durability.append)

    def stored(self) -> list[str]:
        return list(self.endpoint.lines)

    def spooled(self) -> list[str]:
        """The lines of the spool's segments as they are on disk, oldest first."""
        paths = sorted(self.spool.directory.glob(f"*{SEGMENT_SUFFIX}"))
        return [line for path in paths for line in path.read_text().split("\n")]

    def committed_dead_letters(self) -> list[tuple[str, bytes]]:
        """(code, payload) of the dead letters another connection reads: the committed ones."""
        uri = f"file:{self.dead_letters.path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            rows: list[tuple[str, bytes]] = db.execute(
                "SELECT code, payload FROM dead_letters ORDER BY id").fetchall()
        return rows


@pytest.fixture
async def endpoint() -> AsyncIterator[WriteEndpoint]:
    endpoint = WriteEndpoint()
    app = web.Application()
    app.router.add_post("/write", endpoint.write)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    endpoint.url = f"http://{host}:{port}"
    yield endpoint
    await runner.cleanup()


@contextlib.asynccontextmanager
async def rigged(tmp_path: Path, endpoint: WriteEndpoint,
                 spool_budget: int = SPOOL_BUDGET) -> AsyncIterator[Rig]:
    async with V1Writer(endpoint.url, "siaga", create_database=False) as writer:
        with DeadLetterStore(tmp_path / "deadletters.sqlite") as dead_letters:
            spool = Spool(tmp_path / "spool", spool_budget)
            # The drain (which would report to `on_rejected`) is not run in these tests.
            storage = Storage(writer, spool, on_rejected=lambda rejected: None)
            yield Rig(endpoint, spool, dead_letters, storage)


@pytest.fixture
async def rig(tmp_path: Path, endpoint: WriteEndpoint) -> AsyncIterator[Rig]:
    async with rigged(tmp_path, endpoint) as rig:
        yield rig


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[asyncio.Event]:
    """Run `pipeline` for the block; at its end, stop it and wait until it has returned."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(pipeline.run(stop))
        try:
            yield stop
        finally:
            stop.set()


async def acked(inbox: ListInbox[Seen], count: int) -> None:
    await eventually(lambda: len(inbox.acked) >= count, what=f"{count} messages acked")


async def test_a_message_is_acked_only_once_its_readings_are_stored(rig: Rig) -> None:
    inbox = ListInbox(rig.stored)
    async with running(rig.pipeline(inbox)):
        for seq in range(3):
            inbox.put(payload(seq))
            await acked(inbox, seq + 1)
    assert [seq_of(message) for message in inbox.acked] == [0, 1, 2]
    for ack in inbox.acks:
        assert {seq_of(message) for message in ack.messages} <= set(seqs(ack.seen))
    assert seqs(rig.endpoint.lines) == [0, 1, 2]


async def test_each_message_s_latency_to_durable_and_to_the_rules_is_observed_once(
    rig: Rig,
) -> None:
    inbox = ListInbox(rig.stored)
    two_s_later = lambda: RECEIVED_NS + 2_000_000_000  # noqa: E731 - the pipeline's clock
    pipeline = Pipeline(inbox, Decoder(CATALOG, TopicScheme("siaga")), rig.storage,
                        rig.dead_letters, rig.stats, PROMPT, Unobserved(), two_s_later)
    async with running(pipeline):
        for seq in range(3):
            inbox.put(payload(seq))
        await acked(inbox, 3)
    for histogram in (rig.stats.durable_latency, rig.stats.rules_latency):
        assert histogram.snapshot().count == 3
        assert histogram.total == 6.0  # 2 s for each, on the pipeline's clock


async def test_while_influxdb_is_down_readings_are_spooled_then_acked(rig: Rig) -> None:
    rig.endpoint.status = 503
    inbox = ListInbox(rig.spooled)
    async with running(rig.pipeline(inbox)):
        sent = inbox.put(payload(7))
        await acked(inbox, 1)
    [ack] = inbox.acks
    assert ack.messages == [sent]
    assert seqs(ack.seen) == [7]
    assert rig.endpoint.lines == []


async def test_bad_json_is_dead_lettered_and_committed_before_the_ack(rig: Rig) -> None:
    inbox = ListInbox(rig.committed_dead_letters)
    async with running(rig.pipeline(inbox)):
        sent = inbox.put(b"{level_cm: 1}")
        await acked(inbox, 1)
    [ack] = inbox.acks
    assert ack.messages == [sent]
    assert ack.seen == [("bad-json", b"{level_cm: 1}")]


async def test_stop_flushes_the_partial_batch_and_acks_it(rig: Rig) -> None:
    inbox = ListInbox(rig.stored)
    async with running(rig.pipeline(inbox, NEVER_DUE)):
        sent = [inbox.put(payload(seq)) for seq in range(2)]
        await eventually(lambda: rig.stats.messages == 2, what="both messages in a batch")
        assert inbox.acks == []  # the batch is not due: only the stop can send it
    assert inbox.acked == sent
    assert seqs(inbox.acks[-1].seen) == [0, 1]


async def test_on_durability_is_told_once_per_change(tmp_path: Path,
                                                     endpoint: WriteEndpoint) -> None:
    # A spool that takes nothing: while InfluxDB refuses, readings cannot be made durable.
    async with rigged(tmp_path, endpoint, spool_budget=1) as rig:
        inbox = ListInbox(rig.stored)
        async with running(rig.pipeline(inbox)):
            inbox.put(payload(1))
            await acked(inbox, 1)
            inbox.put(payload(2))
            await acked(inbox, 2)
            assert rig.durability == [None]  # at the first store after start, not again
            endpoint.status = 503
            refused_from = endpoint.attempts
            inbox.put(payload(3))
            await eventually(lambda: endpoint.attempts >= refused_from + 2,
                             what="the third batch tried twice")
            assert len(inbox.acked) == 2
            endpoint.status = 204
            await acked(inbox, 3)
    [durable, refused, durable_again] = rig.durability
    assert (durable, durable_again) == (None, None)
    assert refused is not None and refused.startswith("spool full")


async def test_a_device_not_in_the_catalog_sending_two_kinds_writes_each_to_its_own(
        rig: Rig) -> None:
    # Accepted unknown devices have no kind of record: the series key remembered for a
    # device must be its kind's, or a water level lands in `traffic` (the review's case).
    inbox = ListInbox(rig.stored)
    pipeline = Pipeline(inbox, Decoder(CATALOG, TopicScheme("siaga"), unknown_devices="accept"),
                        rig.storage, rig.dead_letters, rig.stats, PROMPT, Unobserved())
    async with running(pipeline):
        inbox.put(b'{"ts": 1700000000, "speed_kmh": 30, "vehicles_per_min": 5}',
                  "siaga/traffic/dev-x/telemetry")
        inbox.put(b'{"ts": 1700000001, "level_cm": 150}', "siaga/water-level/dev-x/telemetry")
        await acked(inbox, 2)
    assert [line.split(" ")[0] for line in rig.stored()] == [
        "traffic,device_id=dev-x", "water_level,device_id=dev-x"]


async def test_a_write_carries_at_most_batch_messages_messages(rig: Rig) -> None:
    # Lines are bounded by batch_size, messages by batch_messages: single readings must not
    # wait for 20,000 of them, a broker's whole in-flight window, before a write.
    settings = IngestSettings(batch_size=1000, batch_messages=2, flush_interval_s=60,
                              linger_s=60)
    inbox = ListInbox(rig.stored)
    async with running(rig.pipeline(inbox, settings)):
        for seq in range(4):
            inbox.put(payload(seq))
        await acked(inbox, 4)
        assert rig.endpoint.attempts == 2
        assert [len(ack.messages) for ack in inbox.acks] == [2, 2]


def one_message_batches_behind_a_gate(
        rig: Rig, *, stop_writes_s: float = STOP_WRITES_S
) -> tuple[ListInbox[list[str]], Observed, Pipeline, asyncio.Event]:
    """A pipeline whose batches are one message each, seen by an `Observed`; its writes
    wait until the gate returned (closed) is set."""
    rig.endpoint.gate = gate = asyncio.Event()
    inbox = ListInbox(rig.stored)
    observed = Observed()
    settings = IngestSettings(batch_size=1, flush_interval_s=60, linger_s=0)
    pipeline = Pipeline(inbox, Decoder(CATALOG, TopicScheme("siaga")), rig.storage,
                        rig.dead_letters, rig.stats, settings, observed,
                        stop_writes_s=stop_writes_s)
    return inbox, observed, pipeline, gate


async def test_the_rules_judge_the_queued_batches_while_a_write_hangs(rig: Rig) -> None:
    # Alerts must not wait for a slow InfluxDB: while the first write hangs, the collector
    # hands the rules every batch the queue holds, and the one it waits to queue; only
    # then does it stop taking messages (the bound on what is held).
    inbox, observed, pipeline, gate = one_message_batches_behind_a_gate(rig)
    held = 1 + QUEUED_BATCHES + 1  # the write's, the queue's, the collector's
    async with running(pipeline):
        for seq in range(held + 3):
            inbox.put(payload(seq))
        await eventually(lambda: len(observed.seqs) >= held and rig.endpoint.attempts == 1,
                         what=f"{held} readings judged and the first write begun")
        assert not inbox.acks
        assert observed.seqs == list(range(held))
        assert len(inbox.waiting) == 3  # not taken: the collector waits to queue its batch
        gate.set()
        await acked(inbox, held + 3)
    assert observed.seqs == list(range(held + 3))
    assert seqs(rig.endpoint.lines) == list(range(held + 3))


async def test_a_stop_out_of_time_for_influxdb_spools_the_batches_left(rig: Rig) -> None:
    # On stop InfluxDB has `stop_writes_s` in all (none here): the write in flight ends,
    # the batches after it go to the spool, and each message is acked once durable.
    inbox, observed, pipeline, gate = one_message_batches_behind_a_gate(rig, stop_writes_s=0.0)
    async with running(pipeline) as stop:
        for seq in range(3):
            inbox.put(payload(seq))
        await eventually(lambda: len(observed.seqs) == 3 and rig.endpoint.attempts == 1,
                         what="3 readings judged and the first write begun")
        stop.set()
        gate.set()
    assert seqs(rig.endpoint.lines) == [0]
    assert seqs(rig.spooled()) == [1, 2]
    assert [seq_of(message) for message in inbox.acked] == [0, 1, 2]
    assert rig.endpoint.attempts == 1


async def test_a_step_of_several_devices_and_a_camera_writes_lines_in_message_order(
        rig: Rig) -> None:
    # One step takes all four messages: its readings are made lines at once, and the
    # camera's detection keeps its place between them (line i stays message i's, which is
    # how a line InfluxDB refuses is dead-lettered under its topic).
    inbox = ListInbox(rig.stored)
    inbox.put(payload(1), "siaga/water-level/katulampa/telemetry")
    inbox.put(b'{"pm25": 80.5}', "siaga/air-quality/dki1-bundaran-hi/telemetry")
    inbox.put(orjson.dumps({"event_id": "e1", "type": "new", "label": "illegal-parking",
                            "score": 0.75, "zone": "loop-ramp"}),
              "siaga/camera/cam-semanggi/events")
    inbox.put(payload(2), TOPIC)
    async with running(rig.pipeline(inbox, NEVER_DUE)):
        await eventually(lambda: rig.stats.messages == 4, what="the four messages taken")
    assert len(inbox.acks) == 1  # one batch
    assert [_SERIES.match(line).groups() for line in rig.stored()] == [  # type: ignore[union-attr]
        ("water_level", "katulampa"), ("air_quality", "dki1-bundaran-hi"),
        ("camera_event", "cam-semanggi"), ("water_level", "manggarai")]
