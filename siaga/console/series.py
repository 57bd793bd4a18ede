"""Readings read back from InfluxDB for the console: a device's chart and the map of a past moment.

Read-only, through InfluxDB 1.x's `/query` (InfluxQL). GET alone does not make it so:
InfluxDB 1.6.7 runs a DROP sent by GET (seen in test_series_influx). So every query is one
SELECT built here, and `query` refuses anything else before it leaves. The v2 API
(InfluxDB 2.x, VictoriaMetrics) gets no reader here: VictoriaMetrics answers neither
InfluxQL nor Flux, so charts and history answer 501.

Every query is built here from the catalog's names only: measurements and fields from
`devices.kinds`, device ids that are in the catalog and match DEVICE_ID_PATTERN, and quoted
all the same. A semaphore bounds the queries one service sends at once, and answers are
kept a minute, so 50 consoles opening the same chart ask InfluxDB once. A past moment is
taken to the minute (the page's input has no seconds), so requests for times a microsecond
apart are one query, and the answers kept are bounded by their size: whoever asks, for
whatever moments, the cache never holds more than CACHE_BYTES of InfluxDB's JSON.

Errors: `SeriesUnavailable` (a StorageError: the API answers 503) when InfluxDB cannot
answer; a database that does not exist yet is no readings, not an error.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self

import aiohttp
import orjson
from aiohttp import web

from devices.kinds import MEASUREMENTS, Kind
from devices.registry import Device, Registry
from devices.topics import DEVICE_ID_RE
from ingest.deadletters import format_time  # the API's one way of writing times
from ingest.influx import public_url
from ingest.settings import InfluxSettings
from siaga.api.context import CONTEXT, ApiError, error_response, json_response
from siaga.api.timefmt import parse_time
from siaga.console.context import CONSOLE
from siaga.console.status import MAIN_FIELD
from siaga_core.errors import InputError, StorageError

NS_PER_MS: Final = 1_000_000
MINUTE_NS: Final = 60 * 1_000_000_000
HOUR_NS: Final = 60 * MINUTE_NS
BUCKET: Final = "5m"  # the chart's resolution: 288 points a day, a gauge's 5-minute reports
HOURS_DEFAULT: Final = 24
HOURS_MAX: Final = 24 * 7  # a week of 5-minute means is 2,016 points: one quick query
CONCURRENT_QUERIES: Final = 4  # InfluxDB 1.x runs queries on all cores; leave it room to write
CACHE_S: Final = 60.0  # as old as a chart may be; consoles reloading together ask once
# InfluxDB's answers kept, counted as the JSON they came as (and their query): parsed, they
# take about six times that (measured: 660 bytes for an air-quality station's latest point,
# sent as 100). 8 MiB holds five moments of a 10,000-device city, or a thousand day charts.
CACHE_BYTES: Final = 8 * 1024 * 1024
UNITS: Final[Mapping[str, str]] = MappingProxyType({
    "level_cm": "cm", "speed_kmh": "km/h", "volume_vph": "veh/h", "occupancy_pct": "%",
    "pm25": "µg/m³", "pm10": "µg/m³", "o3": "µg/m³", "no2": "µg/m³", "so2": "µg/m³",
    "co": "µg/m³", "hc": "µg/m³",
})
NO_READER_MESSAGE: Final = (
    "charts and history need InfluxDB's v1 query API (influx.api: v1); the configured store "
    "(influx.api: v2) offers the console no way to read readings back"
)


class SeriesUnavailable(StorageError):
    """InfluxDB could not answer a query: down, slow, refusing our credentials, or erring."""


@dataclass(frozen=True, slots=True)
class Series:
    """One series of an InfluxQL answer: its tags, column names and rows (time in ms)."""

    name: str
    tags: Mapping[str, str]
    columns: Sequence[str]
    values: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class _Kept:
    """A cached answer: until when it may be served, and what it counts against the cap."""

    until: float
    answer: list[Series]
    size: int


@dataclass(frozen=True, slots=True)
class LastPoint:
    """A device's latest stored point: its time and the fields it had."""

    ts_ns: int
    values: Mapping[str, float]


def quote_identifier(name: str) -> str:
    """An InfluxQL double-quoted identifier (a measurement, field or tag key)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def quote_string(value: str) -> str:
    """An InfluxQL single-quoted string literal (a tag value)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def means_query(measurement: str, field: str, device_id: str, start_ns: int, end_ns: int
                ) -> str:
    """5-minute means of one device's field over [start, end] (times as epoch ns)."""
    return (
        f"SELECT mean({quote_identifier(field)}) FROM {quote_identifier(measurement)}"
        f" WHERE {quote_identifier('device_id')} = {quote_string(device_id)}"
        f" AND time >= {int(start_ns)} AND time <= {int(end_ns)}"
        f" GROUP BY time({BUCKET}) fill(none)"
    )


def last_query(measurement: str, fields: Sequence[str], start_ns: int, end_ns: int) -> str:
    """Each device's latest point within (start, end]: one series per device_id.

    The raw point rather than `last()` of each field: several selectors in one query give
    no one time, and the console colours a device by its latest reading as a whole, as
    it does live.
    """
    selected = ", ".join(quote_identifier(field) for field in fields)
    return (
        f"SELECT {selected} FROM {quote_identifier(measurement)}"
        f" WHERE time > {int(start_ns)} AND time <= {int(end_ns)}"
        f" GROUP BY {quote_identifier('device_id')} ORDER BY time DESC LIMIT 1"
    )


class InfluxReader:
    """Read-only InfluxQL over one aiohttp session; an async context manager."""

    def __init__(self, settings: InfluxSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._url = settings.url
        self._database = settings.database
        self._auth = (
            aiohttp.BasicAuth(settings.username,
                              settings.password.get_secret_value() if settings.password else "")
            if settings.username is not None else None
        )
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._turns = asyncio.Semaphore(CONCURRENT_QUERIES)
        # Oldest first: every answer is kept CACHE_S, so the first to expire lead.
        self._cache: OrderedDict[str, _Kept] = OrderedDict()
        self._cached_bytes = 0

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout, auth=self._auth)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def describe(self) -> str:
        return f"{public_url(self._url)} (v1, database {self._database!r})"

    async def means(self, device: Device, field: str, start_ns: int, end_ns: int
                    ) -> list[tuple[int, float]]:
        """[epoch ms, mean] per 5 minutes of one device's field, oldest first."""
        query = means_query(MEASUREMENTS[device.kind], field, checked_id(device.id),
                            start_ns, end_ns)
        points: list[tuple[int, float]] = []
        for series in await self.query(query):
            points.extend((int(row[0]), float(row[1])) for row in series.values
                          if row[1] is not None)
        return points

    async def last_points(self, kind: Kind, fields: Sequence[str], start_ns: int, end_ns: int
                          ) -> dict[str, LastPoint]:
        """device id -> its latest point of this kind within (start, end]."""
        found: dict[str, LastPoint] = {}
        for series in await self.query(last_query(MEASUREMENTS[kind], fields, start_ns, end_ns)):
            device_id = series.tags.get("device_id")
            if device_id is None or not series.values:
                continue
            row = series.values[0]
            values = {column: float(value) for column, value in zip(series.columns, row,
                                                                    strict=True)
                      if column != "time" and isinstance(value, int | float)}
            found[device_id] = LastPoint(int(row[0]) * NS_PER_MS, values)
        return found

    @property
    def cached(self) -> tuple[int, int]:
        """What the cache holds: (answers, their bytes as counted against CACHE_BYTES)."""
        return len(self._cache), self._cached_bytes

    async def query(self, query: str) -> list[Series]:
        """One InfluxQL SELECT; the series of its answer, from the cache while fresh."""
        if not query.startswith("SELECT ") or "\n" in query:
            raise ValueError(f"the console reads with one SELECT only, not {query[:80]!r}")
        now = self._clock()
        cached = self._cache.get(query)
        if cached is not None and cached.until > now:
            return cached.answer
        async with self._turns:
            answer, body_bytes = await self._get(query)
        self._keep(query, _Kept(now + CACHE_S, answer, body_bytes + len(query)), now)
        return answer

    def _keep(self, query: str, kept: _Kept, now: float) -> None:
        """Cache an answer: the expired go first, then the oldest while the cap needs room."""
        cache = self._cache
        stale = cache.pop(query, None)
        if stale is not None:
            self._cached_bytes -= stale.size
        room = kept.size if kept.size <= CACHE_BYTES else 0  # one larger is served, not kept
        while cache:
            oldest = next(iter(cache.values()))
            if oldest.until > now and self._cached_bytes + room <= CACHE_BYTES:
                break
            self._cached_bytes -= cache.popitem(last=False)[1].size
        if room:
            cache[query] = kept
            self._cached_bytes += room

    async def _get(self, query: str) -> tuple[list[Series], int]:
        """The answer's series, and the size of the JSON it came as."""
        if self._session is None:
            raise RuntimeError("InfluxReader used outside `async with`")
        params = {"db": self._database, "q": query, "epoch": "ms"}
        try:
            async with self._session.get(f"{self._url}/query", params=params) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SeriesUnavailable(f"{self.describe()} did not answer: {exc!r}") from exc
        return _series_of(status, body, self.describe()), len(body)


def _series_of(status: int, body: bytes, where: str) -> list[Series]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if status in (401, 403):
        raise SeriesUnavailable(f"{where} refused our credentials ({status}); check the "
                                "influx username and password")
    if status != 200 or not isinstance(data, dict):
        text = body[:300].decode(errors="replace")
        raise SeriesUnavailable(f"{where} answered {status}: {text}")
    results = data.get("results") or [{}]
    result = results[0]
    error = result.get("error")
    if error is not None:
        if str(error).startswith("database not found"):
            return []  # nothing written yet: no readings, not a fault
        raise SeriesUnavailable(f"{where} could not run the query: {error}")
    return [
        Series(str(found.get("name", "")), dict(found.get("tags") or {}),
               list(found.get("columns") or []), list(found.get("values") or []))
        for found in result.get("series") or []
    ]


def make_reader(settings: InfluxSettings) -> InfluxReader | None:
    """The console's reader for this store, or None when it has no query API we speak."""
    return InfluxReader(settings) if settings.api == "v1" else None


def checked_id(device_id: str) -> str:
    """A device id as the catalog allows it; quoted in queries all the same."""
    if DEVICE_ID_RE.fullmatch(device_id) is None:
        raise InputError(f"device id {device_id!r} is not one: lowercase letters, digits,"
                         " '-' and '_', up to 64")
    return device_id


def catalog_device(registry: Registry, device_id: str) -> Device:
    """The catalog's device of this id: 400 for an id that cannot be, 404 for one not there."""
    device = registry.get(checked_id(device_id))
    if device is None:
        raise ApiError(404, f"no device {device_id!r} in the catalog")
    return device


def hours_param(request: web.Request) -> int:
    raw = request.query.get("hours")
    if raw is None:
        return HOURS_DEFAULT
    try:
        hours = int(raw)
    except ValueError:
        hours = 0
    if not 1 <= hours <= HOURS_MAX:
        raise InputError(f"hours must be a whole number from 1 to {HOURS_MAX}, got {raw!r}")
    return hours


def to_minute(ns: int) -> int:
    """A past moment as the console shows it: down to its minute, as the page's input reads
    it. Times a second apart are one query and one cached answer, not one each."""
    return ns - ns % MINUTE_NS


def window_end(request: web.Request) -> int:
    """The end of the window asked for: `at` to its minute (as the history shows it), else
    now rounded up to the next minute (the same query for a minute, so the cache answers
    consoles opening the chart meanwhile)."""
    at = request.query.get("at")
    if at is not None:
        return to_minute(parse_time(at, "at"))
    now = request.app[CONTEXT].clock_ns()
    return -(-now // MINUTE_NS) * MINUTE_NS


def routes() -> list[web.RouteDef]:
    return [web.get("/console/api/devices/{device_id}/series", device_series)]


async def device_series(request: web.Request) -> web.Response:
    """`GET /console/api/devices/{id}/series?hours=24[&at=RFC3339]`: the chart's points."""
    context = request.app[CONTEXT]
    device = catalog_device(context.registry, request.match_info["device_id"])
    hours = hours_param(request)
    end_ns = window_end(request)
    reader = request.app[CONSOLE].reader
    if reader is None:
        return error_response(501, NO_READER_MESSAGE)
    start_ns = end_ns - hours * HOUR_NS
    field = MAIN_FIELD.get(device.kind)
    if field is None:
        return error_response(501, f"devices of kind {device.kind.value} have no chart")
    points = await reader.means(device, field, start_ns, end_ns)
    return json_response({
        "device_id": device.id, "field": field, "unit": UNITS.get(field, ""),
        "from": format_time(start_ns), "to": format_time(end_ns),
        "points": points,
    })
