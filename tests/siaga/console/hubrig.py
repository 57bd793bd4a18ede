"""The live console's test rig: a real Alerting (engine, alert book, offline checker) and a
real citizens' desk on temporary files, a hub on a clock the test sets, and the stream and
state served over loopback HTTP by an application built as the service's would be."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from devices.kinds import Kind
from devices.readings import Reading, StatusUpdate
from devices.registry import Device, Registry
from ingest.deadletters import DeadLetterStore
from ingest.stats import IngestStats
from reports.book import ReportBook
from reports.model import Report
from reports.settings import ReportsSettings
from rules.alerting import Alerting
from rules.config import RulesFile, load_rules
from siaga.api.context import CONTEXT, ApiContext
from siaga.citizens import CitizenDesk
from siaga.console import state, stream
from siaga.console.context import CONSOLE, ConsoleContext
from siaga.console.hub import ConsoleHub
from siaga.settings import ConsoleSettings

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
S = 1_000_000_000
MONAS = (-6.1754, 106.8272)
# The bundled rules' flood ladder and congestion rule, on gauges reporting every minute.
RULES = """\
rules:
  - name: FloodLevel
    type: ladder
    kind: water-level
    field: level_cm
    clear_margin: 10
    steps:
      - {threshold: siaga3_cm, level: siaga-3, severity: warning}
      - {threshold: siaga2_cm, level: siaga-2, severity: major}
      - {threshold: siaga1_cm, level: siaga-1, severity: critical}
    annotations:
      summary: "{name} is at {level}"
offline:
  expected_interval: {water-level: 60s, air-quality: 60s, traffic: 60s}
  grace_factor: 2
"""


class Clock:
    """The wall clock, set by the test."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def gauge(device_id: str, river: str = "ciliwung") -> Device:
    return Device(id=device_id, kind=Kind.WATER_LEVEL, name=device_id.upper(), lat=-6.2,
                  lon=106.85, labels={"river": river},
                  thresholds={"siaga3_cm": 751, "siaga2_cm": 851, "siaga1_cm": 951})


REGISTRY = Registry([
    gauge("pa-manggarai"), gauge("pa-karet", "krukut"),
    Device(id="aq-gbk", kind=Kind.AIR_QUALITY, name="GBK", lat=-6.21, lon=106.8),
])


@dataclass
class Rig:
    clock: Clock
    alerting: Alerting
    desk: CitizenDesk
    hub: ConsoleHub
    settings: ConsoleSettings
    rules: RulesFile
    data_dir: Path
    key: str | None = None  # the residents' app's API key, made at the first report

    def read(self, device_id: str, level_cm: float, at_ns: int | None = None) -> None:
        """A gauge's reading as the pipeline hands it over, received now."""
        at = self.clock.now if at_ns is None else at_ns
        reading = Reading(Kind.WATER_LEVEL, device_id, at, {"level_cm": level_cm}, None)
        self.alerting.observe([reading], [], self.clock.now)

    def status_says(self, device_id: str, online: bool) -> None:
        update = StatusUpdate(Kind.WATER_LEVEL, device_id, online, self.clock.now)
        self.alerting.observe([], [update], self.clock.now)

    async def report(self, at: tuple[float, float] = MONAS) -> Report:
        if self.key is None:
            self.key = self.desk.book.add_key("qlue")
        key = await self.desk.api_key(self.key)
        fields = [("service_code", "banjir"), ("lat", str(at[0])), ("long", str(at[1])),
                  ("description", "Air setinggi lutut")]
        return (await self.desk.submit(fields, None, key)).report


def load(data_dir: Path) -> RulesFile:
    path = data_dir / "rules.yaml"
    path.write_text(RULES)
    return load_rules(path, REGISTRY)


@contextlib.asynccontextmanager
async def open_rig(tmp_path: Path, settings: ConsoleSettings | None = None,
                   tick_s: float = 0.02, clock: Clock | None = None) -> AsyncIterator[Rig]:
    clock = clock or Clock()
    settings = settings or ConsoleSettings(tile_url="https://tiles.example/{z}/{x}/{y}.png",
                                           tile_attribution="© tiles")
    rules = load(tmp_path)
    reports = ReportsSettings()
    async with Alerting(rules, REGISTRY, tmp_path, webhook_url=None,
                        external_url="http://siaga.test", clock_ns=clock) as alerting:
        with ReportBook.open(reports, tmp_path, clock_ns=clock) as book:
            desk = CitizenDesk(book, CitizenDesk.photo_store(reports, tmp_path), reports,
                               alerting, clock_ns=clock)
            hub = ConsoleHub(REGISTRY, alerting, desk, settings, clock_ns=clock, tick_s=tick_s)
            yield Rig(clock, alerting, desk, hub, settings, rules, tmp_path)


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[asyncio.Event]:
    """The hub's loop, loaded; stopped (and its streams closed) on the way out."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(rig.hub.run(stop))
        assert await rig.hub.wait_loaded(10), "the hub did not load"
        try:
            yield stop
        finally:
            stop.set()


@dataclass(frozen=True)
class Event:
    id: str | None
    name: str
    data: Any


def parse(raw: bytes) -> list[Event]:
    """SSE text as a browser reads it (fields per event; comments and `retry` skipped)."""
    found: list[Event] = []
    for block in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "event" in fields:
            found.append(Event(fields.get("id"), fields["event"], orjson.loads(fields["data"])))
    return found


def published(hub: ConsoleHub, after: int = 0, name: str | None = None) -> list[Event]:
    found = hub.events_after(after)
    assert found is not None, "the ring no longer holds these events"
    events = parse(b"".join(found[1]))
    return [event for event in events if name is None or event.name == name]


@contextlib.contextmanager
def api_context(rig: Rig) -> Iterator[ApiContext]:
    with DeadLetterStore(rig.data_dir / "dead.sqlite") as dead:
        yield ApiContext(
            registry=REGISTRY, alerts=rig.alerting.book, dead_letters=dead,
            outbox=rig.alerting.outbox, ingest_stats=IngestStats(),
            storage_stats=lambda: None, readiness=lambda: [], token=None,
            devices_seen=rig.alerting.devices_seen, latest=rig.alerting.latest,
            clock_ns=rig.clock, desk=rig.desk)


@dataclass(frozen=True)
class Served:
    session: aiohttp.ClientSession
    url: str
    host: str
    port: int


@contextlib.asynccontextmanager
async def serving(rig: Rig) -> AsyncIterator[Served]:
    """The stream and the state on a loopback port, as mount.py would put them, run as the
    service runs its server: a handler is not cancelled when its client goes away (aiohttp's
    TestServer would cancel it, and hide a stream that outlives its console)."""
    with api_context(rig) as context:
        app = web.Application()
        app[CONTEXT] = context
        app[CONSOLE] = ConsoleContext(rig.settings, rig.hub, rig.rules, None)
        app.add_routes([*stream.routes(), *state.routes()])

        async def end_streams(_app: web.Application) -> None:
            rig.hub.close()

        app.on_shutdown.append(end_streams)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port: int = runner.addresses[0][1]
            async with aiohttp.ClientSession() as session:
                yield Served(session, f"http://127.0.0.1:{port}", "127.0.0.1", port)
        finally:
            await runner.cleanup()


class SseReader:
    """An open stream's events, read as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.raw = b""

    async def until(self, predicate: Any, within: float = 10.0) -> list[Event]:
        """Read until `predicate(events so far)` holds; the events."""
        async with asyncio.timeout(within):
            while not predicate(parse(self.raw)):
                chunk = await self.response.content.readany()
                if not chunk:
                    raise AssertionError(f"the stream ended; it sent {self.raw[-500:]!r}")
                self.raw += chunk
        return parse(self.raw)
