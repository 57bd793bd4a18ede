"""The report simulator: a year's plan (CRM 2020 figures, places, rhythm, updates) and its poster.

The poster is tested against `Open311StandIn`, a small real aiohttp server defined here. It
stands in for Siaga's API ONLY to check the wire format (form field names, the multipart part
named `media`, the bearer header, the updates' JSON body) and the poster's handling of 429 +
Retry-After, refusals, 403 and 5xx. The test against Siaga's own Open311 API comes with it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from reports.categories import CODES
from reports.model import CLOSING, State
from siaga.cli import simulateargs
from siaga_core.errors import ConfigurationError, DeliveryError
from simulators.areas import KECAMATAN, KOTA_POPULATION, inside_jakarta
from simulators.calendar import WIB
from simulators.reportposter import Progress, Summary, post_plan
from simulators.reports import (
    CRM_2020_COUNTS,
    CRM_2020_RESOLVED,
    CRM_2020_TOTAL,
    YearPlan,
    iso,
    plan_year,
    planned_counts,
)
from tests.simulators.fakes import FakeClock

TOP_FIVE = {"gangguan-ketenteraman": 15_968, "sampah": 14_494, "parkir-liar": 14_493,
            "pohon": 8_199, "pelanggaran-perda": 7_860}


@pytest.fixture(scope="module")
def year() -> YearPlan:
    """The full 2020 plan, made once for the module (a few seconds)."""
    started = time.perf_counter()
    plan = plan_year(2020)
    print(f"plan_year(2020): {len(plan.reports):,} reports in "
          f"{time.perf_counter() - started:.2f} s")  # measured, not asserted (-s shows it)
    return plan


# --- the plan ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    first, again = plan_year(2020, 0.01, seed=7), plan_year(2020, 0.01, seed=7)
    assert first.reports == again.reports
    assert first.photos == again.photos
    assert plan_year(2020, 0.01, seed=8).reports != first.reports


def test_scale_one_gives_the_published_total_and_top_five_exactly(year: YearPlan) -> None:
    counts = year.counts()
    assert len(year.reports) == sum(counts.values()) == CRM_2020_TOTAL == 137_776
    assert {code: counts[code] for code in TOP_FIVE} == TOP_FIVE


def test_scale_one_closes_exactly_the_published_resolved_count(year: YearPlan) -> None:
    assert year.resolved == CRM_2020_RESOLVED == 137_574
    assert round(100 * year.resolved / len(year.reports), 2) == 99.85


def test_the_plan_uses_exactly_the_ten_categories_of_the_spec(year: YearPlan) -> None:
    assert set(year.counts()) == set(CODES)
    assert set(planned_counts(1.0)) == set(CODES)


def test_reports_come_in_time_order(year: YearPlan) -> None:
    times = [report.requested_s for report in year.reports]
    assert times == sorted(times)
    start = datetime(2020, 1, 1, tzinfo=WIB).timestamp()
    end = datetime(2021, 1, 1, tzinfo=WIB).timestamp()
    assert start <= times[0] and times[-1] < end


def test_updates_follow_their_report_in_a_valid_order(year: YearPlan) -> None:
    for report in year.reports:
        times = [report.requested_s, *(update.at_s for update in report.updates)]
        assert times == sorted(times) and len(set(times)) == len(times), report
        states = [update.state for update in report.updates]
        if states:
            assert states[0] in {State.ACKNOWLEDGED, *CLOSING}, report
            assert all(state not in CLOSING for state in states[:-1]), report
            assert states.count(State.ACKNOWLEDGED) <= 1 and State.OPEN not in states


def test_reports_left_unresolved_stay_open_or_only_acknowledged(year: YearPlan) -> None:
    unresolved = [report for report in year.reports if not report.closed]
    assert len(unresolved) == CRM_2020_TOTAL - CRM_2020_RESOLVED
    assert {tuple(u.state for u in report.updates) for report in unresolved} == {
        (), (State.ACKNOWLEDGED,)}


def test_every_point_lies_inside_dki_jakarta(year: YearPlan) -> None:
    outside = [r for r in year.reports if not inside_jakarta(r.lat, r.lon)]
    assert outside == []
    assert len(KECAMATAN) == 44 and {k.kota for k in KECAMATAN} == set(KOTA_POPULATION)


def test_places_follow_the_kota_populations(year: YearPlan) -> None:
    kota_of = {k.name: k.kota for k in KECAMATAN}
    by_kota = Counter(kota_of[report.kecamatan] for report in year.reports)
    people = sum(KOTA_POPULATION.values())
    for kota, population in KOTA_POPULATION.items():
        expected = len(year.reports) * population / people
        assert abs(by_kota[kota] - expected) < 0.05 * expected + 50, kota


def test_banjir_share_is_higher_in_january_than_in_july(year: YearPlan) -> None:
    def share(month: int) -> float:
        reports = [r for r in year.reports
                   if datetime.fromtimestamp(r.requested_s, WIB).month == month]
        return sum(r.service_code == "banjir" for r in reports) / len(reports)

    assert share(1) > 5 * share(7)


def test_macet_peaks_on_weekday_rush_hours(year: YearPlan) -> None:
    hours = Counter(datetime.fromtimestamp(r.requested_s, WIB).hour for r in year.reports
                    if r.service_code == "macet"
                    and datetime.fromtimestamp(r.requested_s, WIB).weekday() < 5)
    assert hours[7] > 3 * hours[11] and hours[17] > 3 * hours[13]
    assert hours[3] < hours[7] / 10


def test_there_are_fewer_reports_at_night(year: YearPlan) -> None:
    hours = Counter(datetime.fromtimestamp(r.requested_s, WIB).hour for r in year.reports)
    assert hours[3] < hours[10] / 4


def test_banjir_reports_carry_a_depth_and_others_none(year: YearPlan) -> None:
    assert all((r.depth_cm is not None) == (r.service_code == "banjir") for r in year.reports)


def test_about_one_report_in_ten_has_a_photo_a_small_jpeg(year: YearPlan) -> None:
    share = sum(r.photo is not None for r in year.reports) / len(year.reports)
    assert 0.09 < share < 0.11
    for photo in year.photos:
        assert 1_000 < len(photo) < 20_000
        assert Image.open(io.BytesIO(photo)).format == "JPEG"


def test_descriptions_are_short_and_varied(year: YearPlan) -> None:
    descriptions = [r.description for r in year.reports[:2000]]
    assert max(len(d) for d in descriptions) < 200
    assert len(set(descriptions)) > 1000


def test_a_smaller_scale_is_proportional() -> None:
    plan = plan_year(2020, 0.01)
    counts = plan.counts()
    assert len(plan.reports) == round(CRM_2020_TOTAL * 0.01)
    for code, count in CRM_2020_COUNTS.items():
        assert counts.get(code, 0) == round(count * 0.01), code
    assert plan.resolved == round(len(plan.reports) * CRM_2020_RESOLVED / CRM_2020_TOTAL)


def test_events_put_each_report_before_its_updates_in_time_order() -> None:
    plan = plan_year(2020, 0.005)
    seen: set[int] = set()
    last = 0
    events = list(plan.events())
    for at, report, update in events:
        assert at >= last
        last = at
        if update is None:
            seen.add(report.index)
        else:
            assert report.index in seen
    assert len(events) == len(plan.reports) + plan.updates


# --- the poster against a stand-in ---------------------------------------------------------


@dataclass
class Posted:
    content_type: str
    fields: dict[str, list[str]]
    files: list[tuple[str, str | None, str, int]]  # (part name, filename, content type, bytes)
    at: float


@dataclass
class Open311StandIn:
    """A real aiohttp server that records what the poster sends and answers as GeoReport
    and Siaga's officers' API would. It stands in for Siaga's API only to check the wire
    format and the poster's handling of answers; it validates nothing else."""

    reports: list[Posted] = field(default_factory=list)
    updates: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], Any]] = field(default_factory=deque)
    refuse_code: str | None = None  # reports of this service_code get a 400
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/open311/v2/services.json", self._services)
        app.router.add_post("/open311/v2/requests.json", self._request)
        app.router.add_post("/api/reports/{id}/updates", self._update)
        return app

    async def _services(self, _: web.Request) -> web.Response:
        return web.json_response([{"service_code": code} for code in CODES])

    async def _request(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields: dict[str, list[str]] = {}
        files = []
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files.append((name, value.filename, value.content_type, len(value.file.read())))
            else:
                fields.setdefault(name, []).append(str(value))
        self.reports.append(Posted(request.content_type, fields, files, time.monotonic()))
        if self.script:
            status, headers, body = self.script.popleft()
            return web.json_response(body, status=status, headers=headers)
        if fields["service_code"] == [self.refuse_code]:
            return web.json_response(
                [{"code": 400, "description": "lat is outside the jurisdiction"}], status=400)
        return web.json_response([{"service_request_id": str(len(self.reports)),
                                   "service_notice": ""}])

    async def _update(self, request: web.Request) -> web.Response:
        self.updates.append((request.match_info["id"], request.headers.get("Authorization", ""),
                             request.content_type, await request.json()))
        return web.json_response({"ok": True})


@pytest.fixture
async def stand_in() -> AsyncIterator[Open311StandIn]:
    server = Open311StandIn()
    runner = web.AppRunner(server.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = int(runner.addresses[0][1])
    yield server
    await runner.cleanup()


def key(posted: Posted) -> tuple[str, str]:
    """A posted report told apart from the others (a description alone may repeat)."""
    return posted.fields["description"][0], posted.fields["requested_datetime"][0]


async def post(plan: YearPlan, url: str, **options: Any) -> tuple[Summary, list[Progress]]:
    seen: list[Progress] = []
    options = {"speedup": 0, "concurrency": 8, **options}
    summary = await post_plan(plan, url, "key-1", "token-1", progress=seen.append, **options)
    return summary, seen


async def test_reports_go_as_georeport_forms_with_photos_as_one_media_part(
        stand_in: Open311StandIn) -> None:
    plan = plan_year(2020, 0.002)
    assert any(r.photo is not None for r in plan.reports)  # the seed gives the cases
    assert any(r.service_code == "banjir" for r in plan.reports)
    summary, _ = await post(plan, stand_in.url)
    assert summary.sent == plan.counts() and summary.total == len(stand_in.reports)
    by_key = {key(p): p for p in stand_in.reports}
    assert len(by_key) == len(plan.reports)
    for report in plan.reports:
        posted = by_key[(report.description, iso(report.requested_s))]
        assert {name: values[0] for name, values in posted.fields.items()
                if name in ("api_key", "service_code")} == {
            "api_key": "key-1", "service_code": report.service_code}
        assert all(len(values) == 1 for values in posted.fields.values())
        assert float(posted.fields["lat"][0]) == report.lat
        assert float(posted.fields["long"][0]) == report.lon
        requested = posted.fields["requested_datetime"][0]
        assert requested.endswith("+07:00")
        assert datetime.fromisoformat(requested).timestamp() == report.requested_s
        if report.depth_cm is not None:
            assert posted.fields["attribute[kedalaman_cm]"] == [str(report.depth_cm)]
        if report.email is not None:
            assert posted.fields["email"] == [report.email]
        if report.photo is None:
            assert posted.content_type == "application/x-www-form-urlencoded"
            assert posted.files == []
        else:
            assert posted.content_type == "multipart/form-data"
            assert posted.files == [("media", "foto.jpg", "image/jpeg",
                                     len(plan.photos[report.photo]))]


async def test_updates_carry_the_bearer_token_and_json_in_order_after_their_report(
        stand_in: Open311StandIn) -> None:
    plan = plan_year(2020, 0.002)
    summary, _ = await post(plan, stand_in.url)
    assert summary.updates == plan.updates == len(stand_in.updates)
    assert summary.closed == plan.resolved
    by_id: dict[str, list[dict[str, Any]]] = {}
    for report_id, auth, content_type, body in stand_in.updates:
        assert auth == "Bearer token-1" and content_type == "application/json"
        assert set(body) == {"state", "note", "officer", "at"}
        assert body["at"].endswith("+07:00")
        by_id.setdefault(report_id, []).append(body)
    keys = {str(n + 1): key(p) for n, p in enumerate(stand_in.reports)}
    planned = {(r.description, iso(r.requested_s)): r for r in plan.reports}
    for report_id, bodies in by_id.items():
        report = planned[keys[report_id]]
        assert [b["state"] for b in bodies] == [u.state.value for u in report.updates]


async def test_a_429_is_waited_out_for_its_retry_after_then_retried(
        stand_in: Open311StandIn) -> None:
    plan = plan_year(2020, 0.0002)
    stand_in.script.append((429, {"Retry-After": "1"},
                            [{"code": 429, "description": "too many reports"}]))
    summary, _ = await post(plan, stand_in.url, concurrency=1)
    assert summary.total == len(plan.reports) == len(stand_in.reports) - 1
    assert summary.refused == {}
    assert stand_in.reports[1].at - stand_in.reports[0].at >= 0.95


async def test_a_5xx_is_retried_with_backoff(stand_in: Open311StandIn) -> None:
    plan = plan_year(2020, 0.0002)
    stand_in.script.append((503, {}, [{"code": 503, "description": "storage unavailable"}]))
    summary, _ = await post(plan, stand_in.url, concurrency=1)
    assert summary.total == len(plan.reports) == len(stand_in.reports) - 1


async def test_a_refused_report_is_counted_with_its_reason_never_retried_and_its_updates_skipped(
        stand_in: Open311StandIn) -> None:
    plan = plan_year(2020, 0.002)
    stand_in.refuse_code = "sampah"
    refused: list[str] = []
    summary, _ = await post(plan, stand_in.url, on_refused=refused.append)
    sampah = [r for r in plan.reports if r.service_code == "sampah"]
    assert summary.refused == {"sampah": len(sampah)}
    assert "sampah" not in summary.sent
    assert sum(p.fields["service_code"] == ["sampah"] for p in stand_in.reports) == len(sampah)
    reason = "sampah: HTTP 400: lat is outside the jurisdiction"
    assert summary.reasons == {reason: len(sampah)} and refused.count(reason) == len(sampah)
    assert summary.updates_skipped == sum(len(r.updates) for r in sampah)
    assert reason in str(summary)


async def test_a_refused_api_key_stops_the_run_in_one_delivery_error(
        stand_in: Open311StandIn) -> None:
    stand_in.script.append((403, {}, [{"code": 403, "description": "api_key is not valid"}]))
    with pytest.raises(DeliveryError, match=r"API key \(HTTP 403\): api_key is not valid"):
        await post(plan_year(2020, 0.001), stand_in.url)


async def test_an_unreachable_service_is_one_delivery_error() -> None:
    with socket.socket() as held:  # bound, not listening: the connection is refused
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(DeliveryError, match="cannot reach Siaga's Open311 API"):
            await post(plan_year(2020, 0.001), url)


async def test_a_speedup_paces_the_year_on_the_given_clock(stand_in: Open311StandIn) -> None:
    plan = plan_year(2020, 0.0005)
    clock = FakeClock()
    summary, seen = await post(plan, stand_in.url, speedup=86_400.0, clock=clock)
    events = [at for at, _, _ in plan.events()]
    assert sum(clock.sleeps) == pytest.approx((events[-1] - events[0]) / 86_400.0)
    assert summary.total == len(plan.reports)
    assert seen[-1].sim_time_s == events[-1] and seen[-1].sent == summary.total


# --- the command ---------------------------------------------------------------------------


def command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="siaga simulate")
    simulateargs.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_siaga_simulate_reports_has_its_own_options_and_defaults() -> None:
    args = command("reports", "--year", "2020", "--speedup", "3600")
    assert (args.year, args.speedup, args.scale, args.seed, args.concurrency) == (
        2020, 3600.0, 1.0, 2020, 16)
    assert command("--speed", "60").speed == 60.0  # playback's options are as they were


async def test_siaga_simulate_reports_prints_the_table_of_what_it_sent(
        stand_in: Open311StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    args = command("reports", "--year", "2020", "--scale", "0.0005", "--url", stand_in.url,
                   "--api-key", "k", "--token", "t")
    # The stand-in runs on this test's loop; the command runs its own, in a thread.
    assert await asyncio.to_thread(args.command, args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["category", "sent", "refused"]
    assert f"total{len(plan_year(2020, 0.0005).reports):>29,}" in out


def test_siaga_simulate_reports_without_a_key_is_a_configuration_error() -> None:
    args = command("reports", "--year", "2020", "--api-key", "", "--token", "t")
    with pytest.raises(ConfigurationError, match="SIAGA_REPORTS_API_KEY"):
        args.command(args)
