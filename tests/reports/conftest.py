"""The report book on both backends: SQLite in a temporary data dir, and a fresh PostgreSQL
database per test on the session's server (started only when a PostgreSQL test runs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from reports.book import ReportBook
from reports.model import NewReport
from reports.settings import ReportsSettings
from siaga.sandbox.postgres import PostgreSQL

T0 = 1_593_561_600 * 10**9  # 2020-07-01T00:00:00Z: inside the CRM's year, in any time zone
MINUTE = 60 * 10**9
HOUR = 60 * MINUTE
MANGGARAI = (-6.2095, 106.8502)  # a place in Jakarta, near the Manggarai sluice gate


class Clock:
    """The wall clock, set by the test."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass(frozen=True, slots=True)
class BookPlace:
    """Where a test's book lives: what ReportBook.open takes (another instance opens it too)."""

    settings: ReportsSettings
    data_dir: Path

    def open(self, clock: Clock | None = None) -> ReportBook:
        return ReportBook.open(self.settings, self.data_dir, clock or Clock())


@pytest.fixture(params=["sqlite", "postgresql"])
def book_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BookPlace]:
    if request.param == "sqlite":
        yield BookPlace(ReportsSettings(), tmp_path)
        return
    server: PostgreSQL = request.getfixturevalue("postgres")
    name = f"book_{uuid.uuid4().hex}"
    url = server.create_database(name)
    yield BookPlace(ReportsSettings(database_url=SecretStr(url)), tmp_path)
    server.drop_database(name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def book(book_place: BookPlace, clock: Clock) -> Iterator[ReportBook]:
    with book_place.open(clock) as opened:
        yield opened


def new_report(service_code: str = "banjir", at: int = T0, *,
               place: tuple[float, float] = MANGGARAI, description: str = "Air setinggi lutut",
               **changes: Any) -> NewReport:
    report = NewReport(service_code=service_code, lat=place[0], lon=place[1],
                       description=description, requested_ns=at, received_ns=at,
                       key_name="qlue")
    return replace(report, **changes)


def north_of(place: tuple[float, float], metres: float) -> tuple[float, float]:
    """The point `metres` due north (a degree of latitude is ~111,195 m on the mean sphere)."""
    return place[0] + metres / 111_195.0, place[1]
