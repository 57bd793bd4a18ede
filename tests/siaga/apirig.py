"""The operator API's test rig: real SQLite stores on a set clock (`World`), the API served on
a free port, and a small client (`Api`) that reads its answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Device, Registry
from ingest.deadletters import DeadLetterStore
from ingest.stats import IngestStats
from ingest.storage import StorageStats
from rules.alert import Alert, Notification, Severity, Signal, Timing, step
from rules.alertbook import AlertBook
from rules.outbox import Outbox
from siaga.api.context import ApiContext
from siaga.api.server import serve_api

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
T0_TEXT = "2023-11-14T22:13:20.000Z"
S = 1_000_000_000
TOKEN = "tok-3f9a-operator"


@dataclass
class Clock:
    now_ns: int = T0

    def __call__(self) -> int:
        return self.now_ns


@dataclass
class World:
    """The stores and live state behind one API, as the service would hold them."""

    clock: Clock
    registry: Registry
    book: AlertBook
    dead_letters: DeadLetterStore
    outbox: Outbox
    stats: IngestStats = field(default_factory=IngestStats)
    storage: StorageStats | None = None
    seen: dict[str, int] = field(default_factory=dict)
    latest: dict[str, Reading] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    told: list[Notification] = field(default_factory=list)

    def context(self, token: str | None = TOKEN) -> ApiContext:
        return ApiContext(
            registry=self.registry, alerts=self.book, dead_letters=self.dead_letters,
            outbox=self.outbox, ingest_stats=self.stats, storage_stats=lambda: self.storage,
            readiness=lambda: self.reasons, token=None if token is None else SecretStr(token),
            devices_seen=self.seen, latest=self.latest, clock_ns=self.clock,
        )


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Any


@dataclass(frozen=True)
class Api:
    session: aiohttp.ClientSession
    url: str

    async def call(self, method: str, path: str, *, body: object = None,
                   token: str | None = TOKEN, params: Any = None) -> Answer:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.url + path, json=body, headers=headers,
                                        params=params) as response:
            text = await response.text()
            decoded = await response.json() if response.content_type == "application/json" \
                else text
            return Answer(response.status, decoded, response.headers)

    async def get(self, path: str, **params: Any) -> Answer:
        return await self.call("GET", path, params=params or None)


def device(device_id: str, kind: Kind, **labels: str) -> Device:
    return Device(id=device_id, kind=kind, name=device_id.upper(), lat=-6.2, lon=106.8,
                  labels=labels, thresholds={"siaga3_cm": 751.0, "siaga2_cm": 851.0,
                                             "siaga1_cm": 950.0} if kind is Kind.WATER_LEVEL
                  else {})


@contextlib.contextmanager
def open_world(tmp_path: Path) -> Iterator[World]:
    """Two registered devices, empty stores and no live state, at T0."""
    clock = Clock()
    registry = Registry([device("pa-manggarai", Kind.WATER_LEVEL, river="ciliwung"),
                         device("aq-gbk", Kind.AIR_QUALITY, kota="jakarta-pusat")])
    told: list[Notification] = []  # what the book handed to its dispatcher
    with (AlertBook(tmp_path / "alerts.db", page_max_age_ns=3600 * S,
                    repeat_interval_ns=4 * 3600 * S, clock_ns=clock, send=told.append) as book,
          DeadLetterStore(tmp_path / "dead.db") as dead,
          Outbox(tmp_path / "outbox.db", clock) as outbox):
        yield World(clock, registry, book, dead, outbox, told=told)


@contextlib.asynccontextmanager
async def running_api(world: World, token: str | None = TOKEN) -> AsyncIterator[Api]:
    async with (serve_api(world.context(token), "127.0.0.1", 0) as port,
                aiohttp.ClientSession() as session):
        yield Api(session, f"http://127.0.0.1:{port}")


def signal(subject: str, active: bool, at_ns: int, rule: str = "FloodLevel",
           severity: Severity = Severity.WARNING) -> Signal:
    labels = {"alertname": rule, "severity": severity.value, "device_id": subject}
    return Signal(rule, subject, active, at_ns, severity, labels, {"summary": f"{rule} {subject}"})


def fire(world: World, subject: str, rule: str = "FloodLevel", at_ns: int = T0) -> Alert:
    alert, transition = step(None, signal(subject, True, at_ns, rule), Timing())
    assert alert is not None and transition is not None
    world.book.apply(transition, at_ns)
    return alert


def resolve(world: World, alert: Alert, at_ns: int) -> None:
    _, transition = step(alert, signal(alert.subject, False, at_ns, alert.rule), Timing())
    assert transition is not None
    world.book.apply(transition, at_ns)


# A silence as an operator would post it.
SILENCE = {"matchers": ["alertname=FloodLevel", "device_id=~pa-manggarai|pa-karet"],
           "created_by": "rina", "comment": "gauge maintenance"}
