"""A plan of residents' reports (`simulators.reports`) through Siaga's real HTTP API: reports
to Open311 (`POST /open311/v2/requests.json`), officers' updates to `/api/reports/{id}/updates`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson

from reports.model import CLOSING
from siaga_core.errors import DeliveryError
from simulators.pacing import Pacer, SystemClock, WallClock
from simulators.reports import PlannedReport, PlannedUpdate, YearPlan, iso

OPEN311_REQUESTS: Final = "/open311/v2/requests.json"
OPEN311_SERVICES: Final = "/open311/v2/services.json"
UPDATES: Final = "/api/reports/{id}/updates"
DEFAULT_CONCURRENCY: Final = 16  # requests in flight: enough to keep a local service busy
QUEUE_PER_WORKER: Final = 4  # jobs waiting per worker: the plan is read ahead only this far
PROGRESS_EVERY_S: Final = 5.0
REQUEST_TIMEOUT_S: Final = 60.0  # a photo through a busy service; beyond that it is down
RETRIES: Final = 6  # attempts on a lost connection or a 5xx: 0.5 + 1 + ... + 16 s, ~30 s
BACKOFF_FIRST_S: Final = 0.5
RETRY_AFTER_DEFAULT_S: Final = 1.0  # a 429 without a usable Retry-After
REFUSAL_TEXT_MAX: Final = 200  # characters of a refusal's body kept for the summary


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a run, for the progress line."""

    sent: int  # reports the service took
    refused: int
    updates: int  # updates the service took
    elapsed_s: float
    sim_time_s: int | None  # the simulated instant reached

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run sent, by category, and what the service refused, with its reasons."""

    sent: Mapping[str, int]  # reports the service took, by category
    refused: Mapping[str, int]  # reports refused (4xx), by category
    reasons: Mapping[str, int]  # each refusal's message (reports and updates), how often
    updates: int  # updates the service took
    closed: int  # of which closing ones
    updates_refused: int
    updates_skipped: int  # their report was refused, so they had nowhere to go
    elapsed_s: float

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        lines = [f"{'category':<24}{'sent':>10}{'refused':>10}"]
        for code in sorted(set(self.sent) | set(self.refused),
                           key=lambda c: (-self.sent.get(c, 0), c)):
            lines.append(f"{code:<24}{self.sent.get(code, 0):>10,}"
                         f"{self.refused.get(code, 0):>10,}")
        lines.append(f"{'total':<24}{self.total:>10,}{sum(self.refused.values()):>10,}")
        lines.append(f"updates: {self.updates:,} sent ({self.closed:,} closing), "
                     f"{self.updates_refused:,} refused, {self.updates_skipped:,} skipped")
        lines.append(f"{self.elapsed_s:.1f} s, {self.rate:,.1f} reports/s")
        lines.extend(f"refused {count:,}x: {reason}" for reason, count in
                     sorted(self.reasons.items(), key=lambda item: -item[1]))
        return "\n".join(lines)


@dataclass(slots=True)
class _Tally:
    sent: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    updates: int = 0
    closed: int = 0
    updates_refused: int = 0
    updates_skipped: int = 0
    sim_time_s: int | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    report: PlannedReport
    update: PlannedUpdate | None  # None: the report itself
    after: asyncio.Future[str | None] | None  # the report's previous step: its id, or None
    done: asyncio.Future[str | None]  # this step's: the report's id, or None if refused


async def post_plan(plan: YearPlan, base_url: str, api_key: str, token: str, *,
                    speedup: float, concurrency: int = DEFAULT_CONCURRENCY,
                    progress: Callable[[Progress], None],
                    progress_every_s: float = PROGRESS_EVERY_S,
                    on_refused: Callable[[str], None] | None = None,
                    clock: WallClock | None = None, live: bool = False) -> Summary:
    """Posts `plan`'s reports and updates in simulated-time order, `speedup` simulated seconds
    per second (0: as fast as the service takes them), `concurrency` requests in flight.

    A replay sends each report's and update's own time (`requested_datetime`, `at`); `live`
    sends neither, so the service stamps them when they arrive (the demo's residents).

    A 429 waits its Retry-After and tries again; another 4xx is counted as refused (and given
    to `on_refused`), never retried; a lost connection or a 5xx is retried with backoff. Raises
    `DeliveryError` when the service cannot be reached or refuses the key or the token.
    """
    if not (math.isfinite(speedup) and speedup >= 0):
        raise ValueError(f"speedup must be >= 0, got {speedup}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    clock = clock or SystemClock()
    tally = _Tally()
    base = base_url.rstrip("/")
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await _check_service(session, base)
        client = _Client(session, base, api_key, token, plan.photos, tally, on_refused, live)
        queue: asyncio.Queue[_Job | None] = asyncio.Queue(concurrency * QUEUE_PER_WORKER)
        try:
            async with asyncio.TaskGroup() as group:
                ticker = group.create_task(_tick(tally, started, progress, progress_every_s))
                workers = [group.create_task(_work(queue, client)) for _ in range(concurrency)]
                await _produce(plan, queue, tally, Pacer(
                    speedup or None, _first_time(plan), clock, ahead_s=None), clock)
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
                ticker.cancel()
        except BaseExceptionGroup as group:
            raise _first_delivery_error(group) from None
    elapsed = time.monotonic() - started
    progress(_snapshot(tally, started))
    return Summary(dict(tally.sent), dict(tally.refused), dict(tally.reasons), tally.updates,
                   tally.closed, tally.updates_refused, tally.updates_skipped, elapsed)


def _first_time(plan: YearPlan) -> float:
    return float(plan.reports[0].requested_s) if plan.reports else 0.0


def _first_delivery_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The run's own error, out of the TaskGroup's group; a bug's group as it is."""
    match, _ = group.split(DeliveryError)
    if match is None:
        return group
    leaf: BaseException = match
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _produce(plan: YearPlan, queue: asyncio.Queue[_Job | None], tally: _Tally,
                   pacer: Pacer, clock: WallClock) -> None:
    """Queues each event when due; an update waits on its report's previous step, so a
    report's steps reach the service in order even with many requests in flight."""
    loop = asyncio.get_running_loop()
    last: dict[int, asyncio.Future[str | None]] = {}
    for at, report, update in plan.events():
        delay = pacer.delay(at)
        if delay > 0:
            await clock.sleep(delay)
        tally.sim_time_s = at
        done: asyncio.Future[str | None] = loop.create_future()
        after = None if update is None else last.pop(report.index)
        if report.updates and update is not report.updates[-1]:
            last[report.index] = done  # the next update waits on this step
        await queue.put(_Job(report, update, after, done))


async def _work(queue: asyncio.Queue[_Job | None], client: _Client) -> None:
    while (job := await queue.get()) is not None:
        if job.update is None:
            job.done.set_result(await client.report(job.report))
            continue
        assert job.after is not None  # an update always follows its report's previous step
        report_id = await job.after
        if report_id is not None:
            await client.update(report_id, job.update)
        else:
            client.tally.updates_skipped += 1
        job.done.set_result(report_id)


async def _tick(tally: _Tally, started: float, progress: Callable[[Progress], None],
                every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        progress(_snapshot(tally, started))


def _snapshot(tally: _Tally, started: float) -> Progress:
    return Progress(sum(tally.sent.values()), sum(tally.refused.values()), tally.updates,
                    time.monotonic() - started, tally.sim_time_s)


async def _check_service(session: aiohttp.ClientSession, base: str) -> None:
    """One GET first: a wrong address fails at once, in one sentence, not after retries."""
    url = base + OPEN311_SERVICES
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise DeliveryError(f"{url} answered HTTP {response.status}: is Siaga's "
                                    f"Open311 API at {base}?")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"cannot reach Siaga's Open311 API at {base}: {exc}") from exc


class _Client:
    """The two requests a plan needs, with the retry policy of `post_plan`."""

    def __init__(self, session: aiohttp.ClientSession, base: str, api_key: str, token: str,
                 photos: tuple[bytes, ...], tally: _Tally,
                 on_refused: Callable[[str], None] | None, live: bool = False) -> None:
        self._session = session
        self._base = base
        self._api_key = api_key
        self._auth = {"Authorization": f"Bearer {token}"}
        self._photos = photos
        self.tally = tally
        self._on_refused = on_refused
        self._live = live

    async def report(self, report: PlannedReport) -> str | None:
        """Posts a report; its `service_request_id`, or None when the service refused it."""
        status, body = await self._post(self._base + OPEN311_REQUESTS,
                                        lambda: self._report_data(report), {})
        if status == 403:
            raise DeliveryError(f"the service refused the API key (HTTP 403): {_reason(body)}")
        report_id = _request_id(body) if status in (200, 201) else None
        if report_id is None:
            reason = (_reason(body) if status not in (200, 201)
                      else f"an answer without service_request_id: {body[:80]!r}")
            self._refuse(f"{report.service_code}: HTTP {status}: {reason}")
            self.tally.refused[report.service_code] += 1
            return None
        self.tally.sent[report.service_code] += 1
        return report_id

    async def update(self, report_id: str, update: PlannedUpdate) -> None:
        body_json = {"state": update.state.value, "note": update.note,
                     "officer": update.officer}
        if not self._live:
            body_json["at"] = iso(update.at_s)
        status, body = await self._post(self._base + UPDATES.format(id=report_id),
                                        lambda: aiohttp.JsonPayload(body_json), self._auth)
        if status in (401, 403):
            raise DeliveryError(f"the officers' API refused the token (HTTP {status}): "
                                f"{_reason(body)}")
        if status in (200, 201):
            self.tally.updates += 1
            self.tally.closed += update.state in CLOSING
        else:
            self._refuse(f"update {update.state.value}: HTTP {status}: {_reason(body)}")
            self.tally.updates_refused += 1

    def _refuse(self, reason: str) -> None:
        self.tally.reasons[reason] += 1
        if self._on_refused is not None:
            self._on_refused(reason)

    def _report_data(self, report: PlannedReport) -> Any:
        """A fresh body each attempt (aiohttp's FormData is spent once sent): the GeoReport
        form, or multipart with one `media` part when the report has a photo."""
        fields = {"api_key": self._api_key, "service_code": report.service_code,
                  "lat": f"{report.lat:.6f}", "long": f"{report.lon:.6f}",
                  "description": report.description}
        if not self._live:
            fields["requested_datetime"] = iso(report.requested_s)  # Siaga's extension
        if report.depth_cm is not None:
            fields["attribute[kedalaman_cm]"] = str(report.depth_cm)
        if report.email is not None and report.first_name is not None:
            fields.update(email=report.email, first_name=report.first_name)
        if report.photo is None:
            return fields
        form = aiohttp.FormData(fields)
        form.add_field("media", self._photos[report.photo], filename="foto.jpg",
                       content_type="image/jpeg")
        return form

    async def _post(self, url: str, data: Callable[[], Any],
                    headers: dict[str, str]) -> tuple[int, bytes]:
        """The final answer's status and body: after 429s (as told) and failures (backoff)."""
        failures = 0
        while True:
            try:
                async with self._session.post(url, data=data(), headers=headers) as response:
                    body = await response.read()
                    if response.status == 429:
                        await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
                        continue
                    if response.status < 500:
                        return response.status, body
                    problem = f"HTTP {response.status}: {_reason(body)}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            failures += 1
            if failures >= RETRIES:
                raise DeliveryError(f"{url}: {problem} ({failures} attempts)")
            await asyncio.sleep(BACKOFF_FIRST_S * 2 ** (failures - 1))


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds (the delta form Siaga sends); the default when absent or a date."""
    try:
        seconds = float(value) if value is not None else RETRY_AFTER_DEFAULT_S
    except ValueError:
        return RETRY_AFTER_DEFAULT_S
    return seconds if math.isfinite(seconds) and seconds >= 0 else RETRY_AFTER_DEFAULT_S


def _request_id(body: bytes) -> str | None:
    """GeoReport's answer to a POST: `[{"service_request_id": "..."}]`."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(answer, list) and answer and isinstance(answer[0], dict):
        value = answer[0].get("service_request_id")
        return str(value) if value not in (None, "") else None
    return None


def _reason(body: bytes) -> str:
    """A refusal's words: GeoReport's `[{"code": ..., "description": ...}]`, else the text."""
    try:
        answer = orjson.loads(body)
        if isinstance(answer, list) and answer and isinstance(answer[0], dict):
            return str(answer[0].get("description", answer[0]))[:REFUSAL_TEXT_MAX]
    except orjson.JSONDecodeError:
        pass
    return body.decode("utf-8", "replace").strip()[:REFUSAL_TEXT_MAX] or "(no body)"
