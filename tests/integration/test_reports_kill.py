"""SIGKILL during intake loses no acknowledged report (issue 14), end to end at the HTTP edge.

`siaga run` takes reports from several concurrent Open311 clients (form-urlencoded, and
multipart with a JPEG for some); once a few hundred are acknowledged it is killed with
SIGKILL while requests are in flight, then started again. Every report that got its 201 must
read back through the API with the words that were sent, and its photo must be served whole;
the book must hold nothing that was not sent, and every photo on disk must be a complete file.
On SQLite in the data directory and on PostgreSQL (a fresh database per test).

The report book's own SIGKILL test (tests/reports/test_book.py) proves a committed insert
survives; this one proves the service answers 201 only after that commit, and comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import orjson
import pytest
from PIL import Image
from pydantic import SecretStr

from ingest.settings import InfluxSettings
from reports.book import ReportBook, ReportQuery
from reports.settings import ReportsSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.postgres import PostgreSQL
from siaga.settings import Settings
from tests.integration.support import ServiceProcess, make_settings, unique_name, write_config
from tests.polling import eventually

TOKEN: Final = "officer-token-for-the-kill-test"
CLIENTS: Final = 8  # concurrent apps posting; enough to keep requests in flight at the kill
ACKNOWLEDGED_BEFORE_KILL: Final = 300  # "a few hundred" acknowledged, then SIGKILL
PHOTO_EVERY: Final = 3  # every third report of a client carries a photo
PHOTO_SIZE: Final = (32, 24)
# Categories without required attributes, and neither banjir nor macet, whose reports the
# rules correlate with sensors: this test is about intake, not correlation.
CATEGORIES: Final = ("sampah", "pohon", "jalan-rusak", "parkir-liar")
READ_CONCURRENCY: Final = 8
_PHOTO_NAME: Final = re.compile(r"[0-9a-f]{64}\.(jpg|png|webp)")


@dataclass(frozen=True, slots=True)
class Sent:
    """One report as posted: its unique words, and the size of its photo if it had one."""

    description: str
    photo_size: tuple[int, int] | None


@dataclass
class Intake:
    """What the clients sent and what the service acknowledged, as the clients saw it."""

    sent: dict[str, Sent] = field(default_factory=dict)  # by description
    acknowledged: dict[str, Sent] = field(default_factory=dict)  # by service_request_id
    in_flight: int = 0
    killed: bool = False
    cut_off: set[str] = field(default_factory=set)  # in flight at the kill: fate unknown
    problems: list[str] = field(default_factory=list)  # anything else: a failure


@dataclass(frozen=True, slots=True)
class Setup:
    config: Path
    data_dir: Path
    reports: ReportsSettings


@pytest.fixture(params=["sqlite", "postgresql"])
def reports_settings(request: pytest.FixtureRequest) -> Iterator[ReportsSettings]:
    """The book's settings: SQLite in the data dir, or a fresh PostgreSQL database."""
    settings = ReportsSettings(rate_limit_per_minute=1_000_000)  # the load is not throttled
    if request.param == "sqlite":
        yield settings
        return
    server: PostgreSQL = request.getfixturevalue("postgres")
    name = f"kill_{uuid.uuid4().hex}"
    url = server.create_database(name)
    yield settings.model_copy(update={"database_url": SecretStr(url)})
    server.drop_database(name)


@pytest.fixture
def setup(reports_settings: ReportsSettings, mosquitto: Mosquitto, influxdb1: InfluxDB1,
          tmp_path: Path) -> Setup:
    influx = InfluxSettings(api="v1", url=influxdb1.url, database=unique_name("siaga_"))
    settings: Settings = make_settings(mosquitto.url, influx, tmp_path / "data")
    reports = reports_settings.model_dump(mode="json", exclude_none=True)
    url = reports_settings.database_url
    if url is not None:  # secrets dump as "**********": the file gets them as they are
        reports["database_url"] = url.get_secret_value()
    config = write_config(settings, tmp_path / "siaga.yaml", token=TOKEN, reports=reports)
    return Setup(config, settings.data_dir, reports_settings)


@pytest.fixture
def service(setup: Setup, tmp_path: Path) -> Iterator[ServiceProcess]:
    # Depends on `setup`, hence on the database: stopped before the database is dropped.
    process = ServiceProcess(setup.config, tmp_path / "service.log")
    yield process
    process.stop()


def add_key(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "siaga", "reports", "keys", "add", "loadtest", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].strip()


def photo(client: int, number: int) -> bytes:
    """A small JPEG, different for each report (a flat colour from the numbers)."""
    colour = (number * 37 % 256, client * 31 % 256, number // 7 * 13 % 256)
    out = io.BytesIO()
    Image.new("RGB", PHOTO_SIZE, colour).save(out, "JPEG", quality=90)
    return out.getvalue()


def report_form(key: str, run: str, client: int, number: int
                ) -> tuple[aiohttp.FormData | dict[str, str], Sent]:
    description = f"uji-{run} klien {client} laporan {number}: sampah menumpuk di trotoar"
    fields = {
        "api_key": key, "service_code": CATEGORIES[number % len(CATEGORIES)],
        # Spread over central Jakarta, so not every report is a duplicate of the last one.
        "lat": f"{-6.25 + number % 50 * 0.002:.6f}", "long": f"{106.78 + client * 0.01:.6f}",
        "description": description,
    }
    if number % PHOTO_EVERY != 0:
        return fields, Sent(description, None)
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("media", photo(client, number), filename="foto.jpg",
                   content_type="image/jpeg")
    return form, Sent(description, PHOTO_SIZE)


async def post_reports(intake: Intake, base: str, key: str, run: str, client: int,
                       stop: asyncio.Event) -> None:
    """One app posting reports one after another until `stop`, recording each outcome."""
    url = f"{base}/open311/v2/requests.json"
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        number = 0
        while not stop.is_set():
            form, sent = report_form(key, run, client, number)
            number += 1
            intake.sent[sent.description] = sent
            intake.in_flight += 1
            try:
                async with session.post(url, data=form) as answer:
                    status, body = answer.status, await answer.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                if intake.killed:
                    intake.cut_off.add(sent.description)
                    return
                intake.problems.append(f"{sent.description}: {exc!r} before the kill")
                return
            finally:
                intake.in_flight -= 1
            if status != 201:
                intake.problems.append(f"{sent.description}: HTTP {status} {body[:300]!r}")
                return
            report_id = str(orjson.loads(body)[0]["service_request_id"])
            if report_id in intake.acknowledged:
                intake.problems.append(f"id {report_id} acknowledged twice")
            intake.acknowledged[report_id] = sent


async def read_back(base: str, acknowledged: dict[str, Sent]) -> list[str]:
    """Each acknowledged report through GET requests/{id}.json; what is wrong with them."""
    wrong: list[str] = []
    gate = asyncio.Semaphore(READ_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=20)

    async def check(session: aiohttp.ClientSession, report_id: str, sent: Sent) -> None:
        async with gate:
            async with session.get(f"{base}/open311/v2/requests/{report_id}.json") as answer:
                if answer.status != 200:
                    wrong.append(f"{report_id}: HTTP {answer.status} {await answer.text()}")
                    return
                [report] = await answer.json()
            if report["description"] != sent.description:
                wrong.append(f"{report_id}: description {report['description']!r}, "
                             f"sent {sent.description!r}")
            if sent.photo_size is None:
                if report["media_url"] is not None:
                    wrong.append(f"{report_id}: a photo it was not sent: {report['media_url']}")
                return
            if report["media_url"] is None:
                wrong.append(f"{report_id}: its photo is missing")
                return
            async with session.get(report["media_url"]) as served:
                body = await served.read()
                if served.status != 200:
                    wrong.append(f"{report_id}: {report['media_url']}: HTTP {served.status}")
                    return
            problem = photo_problem(report["media_url"].rsplit("/", 1)[1], body)
            if problem is None and Image.open(io.BytesIO(body)).size != sent.photo_size:
                problem = "not the photo that was sent (its size differs)"
            if problem is not None:
                wrong.append(f"{report_id}: {report['media_url']}: {problem}")

    async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as group:
        for report_id, sent in acknowledged.items():
            group.create_task(check(session, report_id, sent))
    return wrong


def photo_problem(name: str, body: bytes) -> str | None:
    """Why this is not a complete stored photo (named by its content's SHA-256), or None."""
    if hashlib.sha256(body).hexdigest() != name.split(".")[0]:
        return f"{len(body)} bytes that do not hash to the name (torn or truncated)"
    try:
        with Image.open(io.BytesIO(body)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for a broken file
        return f"does not decode: {exc}"
    return None


async def test_sigkill_during_intake_loses_no_acknowledged_report(
    setup: Setup, service: ServiceProcess
) -> None:
    key = add_key(setup.config)
    await asyncio.to_thread(service.start)
    intake, stop, run = Intake(), asyncio.Event(), uuid.uuid4().hex[:8]
    async with asyncio.TaskGroup() as clients:
        for client in range(CLIENTS):
            clients.create_task(post_reports(intake, service.base, key, run, client, stop))
        await eventually(lambda: len(intake.acknowledged) >= ACKNOWLEDGED_BEFORE_KILL
                         or intake.problems, 30,
                         f"{ACKNOWLEDGED_BEFORE_KILL} reports acknowledged")
        # No await from here to the signal: the requests in flight now are the ones it cuts.
        in_flight_at_kill = intake.in_flight
        intake.killed = True
        stop.set()
        service.kill()
    # (The clients end at the kill; each request is bounded by its ClientTimeout.)
    assert not intake.problems, intake.problems[:5]
    assert in_flight_at_kill > 0, "the kill hit no request in flight"
    assert intake.cut_off, "no request was cut off by the kill"
    acknowledged = dict(intake.acknowledged)

    await asyncio.to_thread(service.start)  # it comes back after a SIGKILL
    wrong = await read_back(service.base, acknowledged)
    assert not wrong, (f"{len(wrong)} of {len(acknowledged)} acknowledged reports are lost "
                       f"or wrong after the SIGKILL: {wrong[:10]}")
    # And it takes reports again: one more client, until one more report is acknowledged.
    intake.killed, stop = False, asyncio.Event()
    async with asyncio.TaskGroup() as clients:
        clients.create_task(post_reports(intake, service.base, key, run, CLIENTS, stop))
        await eventually(lambda: len(intake.acknowledged) > len(acknowledged)
                         or intake.problems, 20, "a report acknowledged after the restart")
        stop.set()
    assert not intake.problems, intake.problems[:5]
    await asyncio.to_thread(service.stop)

    with ReportBook.open(setup.reports, setup.data_dir) as book:
        stored = book.find(ReportQuery(limit=1_000_000))
    descriptions = [report.description for report in stored]
    assert len(stored) <= len(intake.sent)
    assert len(set(descriptions)) == len(descriptions), "a report stored twice"
    assert set(descriptions) <= set(intake.sent), "a report stored that was never sent"
    # Stored without a 201 only if the kill cut its request off before the answer came.
    answered = {sent.description for sent in intake.acknowledged.values()}
    assert set(descriptions) - answered <= intake.cut_off
    assert {report.id for report in stored} >= set(intake.acknowledged)
    photos = setup.data_dir / "photos"
    on_disk = {path.name: path for path in photos.rglob("*")
               if path.is_file() and _PHOTO_NAME.fullmatch(path.name)}
    broken = {name: problem for name, path in on_disk.items()
              if (problem := photo_problem(name, path.read_bytes())) is not None}
    assert not broken, f"photos on disk that are not complete files: {broken}"
    missing = {report.photo for report in stored if report.photo is not None} - set(on_disk)
    assert not missing, f"stored reports name photos that are not on disk: {missing}"
    assert any(sent.photo_size is not None for sent in acknowledged.values())
