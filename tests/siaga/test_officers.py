"""Officers' follow-up (CROP) and the statistics (CRM) over HTTP: /api/reports..."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from siaga.api.timefmt import format_wib
from tests.siaga.apirig import World
from tests.siaga.reportrig import MANGGARAI, MONAS, ReportApi, open_desk, serving

PASAR_IKAN = (-6.1264, 106.8090)


@pytest.fixture
async def reports(world: World, tmp_path: Path) -> AsyncIterator[ReportApi]:
    with open_desk(world, tmp_path) as desk:
        async with serving(world, desk) as api:
            yield api


async def post(api: ReportApi, category: str, at: tuple[float, float], **extra: str) -> str:
    status, body, _ = await api.post_form(api.report(category, at, **extra))
    assert status == 201, body
    return str(body[0]["service_request_id"])


async def test_officers_need_the_token_even_to_read(reports: ReportApi) -> None:
    report_id = await post(reports, "sampah", MONAS, email="a@example.org")
    for path in ("/api/reports", f"/api/reports/{report_id}"):
        status, _ = await reports.officer("GET", path, token=None)
        assert status == 401, path
        status, _ = await reports.officer("GET", path, token="wrong")
        assert status == 401, path
    status, _body = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                         {"state": "fixed", "officer": "x"}, token=None)
    assert status == 401


async def test_updates_move_a_report_to_closed_and_every_update_is_published(
        reports: ReportApi, world: World) -> None:
    report_id = await post(reports, "pohon", MONAS)
    steps = [("acknowledged", "Petugas menuju lokasi"), ("in-progress", "Pemotongan dahan"),
             ("fixed", "Pohon sudah dipotong dan diangkut")]
    for state, note in steps:
        world.clock.now_ns += 600 * 10**9
        status, body = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                             {"state": state, "note": note,
                                              "officer": "Budi (Distamhut)"})
        assert status == 201, body
        assert body["state"] == state
    _, shown = await reports.get(f"/open311/v2/requests/{report_id}.json")
    assert shown[0]["status"] == "closed"
    assert shown[0]["status_notes"] == "Pohon sudah dipotong dan diangkut"
    assert shown[0]["extended_attributes"]["state"] == "fixed"
    _, updates = await reports.get("/open311/v2/servicerequestupdates.json")
    assert [(u["service_request_id"], u["external_status_code"], u["status"])
            for u in updates] == [(report_id, "acknowledged", "open"),
                                  (report_id, "in-progress", "open"),
                                  (report_id, "fixed", "closed")]
    status, officer = await reports.officer("GET", f"/api/reports/{report_id}")
    assert status == 200
    assert [h["state"] for h in officer["history"]] == ["acknowledged", "in-progress", "fixed"]
    assert officer["first_response_at"] is not None and officer["closed_at"] is not None


@pytest.mark.parametrize("state", ["duplicate", "not-responsible", "no-further-action"])
async def test_each_closing_state_closes(reports: ReportApi, state: str) -> None:
    report_id = await post(reports, "parkir-liar", MONAS)
    status, _ = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                      {"state": state, "note": "why", "officer": "Dishub"})
    assert status == 201
    _, shown = await reports.get(f"/open311/v2/requests/{report_id}.json")
    assert shown[0]["status"] == "closed" and shown[0]["status_notes"] == "why"


async def test_a_bad_update_is_400_naming_the_choices_and_changes_nothing(
        reports: ReportApi) -> None:
    report_id = await post(reports, "sampah", MONAS)
    status, body = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                         {"state": "done", "officer": "x"})
    assert status == 400 and "acknowledged" in body["error"]
    status, body = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                         {"state": "open", "officer": "x"})
    assert status == 400
    status, body = await reports.officer("POST", "/api/reports/424242/updates",
                                         {"state": "fixed", "officer": "x"})
    assert status == 404
    _, updates = await reports.get("/open311/v2/servicerequestupdates.json")
    assert updates == []


async def test_the_list_filters_and_pages(reports: ReportApi) -> None:
    flood = await post(reports, "banjir", MANGGARAI)
    rubbish = await post(reports, "sampah", PASAR_IKAN)
    jam = await post(reports, "macet", MONAS)
    await reports.officer("POST", f"/api/reports/{rubbish}/updates",
                          {"state": "acknowledged", "officer": "LH"})

    async def ids(**params: str) -> list[str]:
        status, body = await reports.officer("GET", "/api/reports", **params)
        assert status == 200, body
        return sorted(r["id"] for r in body["reports"])

    assert await ids(category="banjir") == [flood]
    assert await ids(category="banjir,macet") == sorted([flood, jam])
    assert await ids(state="acknowledged") == [rubbish]
    assert await ids(agency="Dinas Lingkungan Hidup") == [rubbish]
    assert await ids(bbox="-6.13,106.80,-6.12,106.82") == [rubbish]
    assert await ids(area=f"{MANGGARAI[0]},{MANGGARAI[1]},500") == [flood]
    status, page = await reports.officer("GET", "/api/reports", page="2", page_size="2")
    assert status == 200 and page["total"] == 3 and len(page["reports"]) == 1
    status, body = await reports.officer("GET", "/api/reports", bbox="1,2,3")
    assert status == 400 and "south,west,north,east" in body["error"]


async def test_stats_count_the_stored_reports(reports: ReportApi, world: World) -> None:
    closed = await post(reports, "sampah", MONAS)
    await post(reports, "sampah", PASAR_IKAN)
    await post(reports, "pohon", MANGGARAI)
    world.clock.now_ns += 3600 * 10**9
    await reports.officer("POST", f"/api/reports/{closed}/updates",
                          {"state": "fixed", "officer": "LH"})
    status, body = await reports.get("/api/reports/stats", year="2023")
    assert status == 200, body
    assert (body["total"], body["resolved"]) == (3, 1)
    assert body["resolved_pct"] == pytest.approx(33.33)
    sampah = next(c for c in body["by_category"] if c["code"] == "sampah")
    assert (sampah["count"], sampah["resolved"]) == (2, 1)
    assert sampah["median_close_h"] == pytest.approx(1.0)
    status, body = await reports.get("/api/reports/stats", year="2022")
    assert status == 200 and body["total"] == 0
    status, body = await reports.get("/api/reports/stats")
    assert status == 400 and "year" in body["error"]


async def test_the_updates_feed_pages(reports: ReportApi, world: World) -> None:
    report_id = await post(reports, "pohon", MONAS)
    for state in ("acknowledged", "in-progress", "fixed"):
        world.clock.now_ns += 60 * 10**9
        await reports.officer("POST", f"/api/reports/{report_id}/updates",
                              {"state": state, "officer": "Distamhut"})
    pages = []
    for page in ("1", "2", "3"):
        _, updates = await reports.get("/open311/v2/servicerequestupdates.json",
                                       page=page, page_size="2")
        pages.append([u["external_status_code"] for u in updates])
    assert pages == [["acknowledged", "in-progress"], ["fixed"], []]


async def test_an_update_sent_late_goes_into_the_history_without_reopening(
        reports: ReportApi, world: World) -> None:
    report_id = await post(reports, "pohon", MONAS)
    half_an_hour_ago = format_wib(world.clock.now_ns)
    world.clock.now_ns += 1800 * 10**9
    status, _ = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                      {"state": "fixed", "officer": "A", "note": "Selesai"})
    assert status == 201
    # From an officer's device that was offline: it was on its way before the fix.
    status, body = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                         {"state": "in-progress", "officer": "B",
                                          "note": "Menuju lokasi", "at": half_an_hour_ago})
    assert status == 201, body
    _, shown = await reports.officer("GET", f"/api/reports/{report_id}")
    assert (shown["state"], shown["status_notes"]) == ("fixed", "Selesai")
    assert shown["closed_at"] is not None
    assert [h["state"] for h in shown["history"]] == ["in-progress", "fixed"]


async def test_an_update_stamped_in_the_future_is_400_saying_so(
        reports: ReportApi, world: World) -> None:
    report_id = await post(reports, "pohon", MONAS)
    path = f"/api/reports/{report_id}/updates"
    status, body = await reports.officer("POST", path, {
        "state": "fixed", "officer": "A", "at": format_wib(world.clock.now_ns + 3600 * 10**9)})
    assert status == 400
    assert "at is 3,600 s in the future (at most 300 s)" in body["error"]
    status, body = await reports.officer("POST", path, {
        "state": "fixed", "officer": "A", "at": "2300-01-01T00:00:00Z"})
    assert status == 400 and "from 1970 to 2200" in body["error"]
    _, shown = await reports.officer("GET", f"/api/reports/{report_id}")
    assert (shown["state"], shown["history"]) == ("open", [])
    status, body = await reports.officer("POST", path, {
        "state": "acknowledged", "officer": "A",
        "at": format_wib(world.clock.now_ns + 300 * 10**9)})
    assert status == 201, body


async def test_an_update_right_after_a_report_stamped_a_little_ahead_is_taken(
        reports: ReportApi, world: World) -> None:
    # The resident's phone runs two minutes fast; the officer answers at once.
    report_id = await post(reports, "pohon", MONAS,
                           requested_datetime=format_wib(world.clock.now_ns + 120 * 10**9))
    status, body = await reports.officer("POST", f"/api/reports/{report_id}/updates",
                                         {"state": "acknowledged", "officer": "A"})
    assert status == 201, body


async def test_times_beyond_what_the_stores_hold_are_400_naming_the_years(
        reports: ReportApi) -> None:
    status, body = await reports.officer("GET", "/api/reports", since="2300-01-01T00:00:00Z")
    assert status == 400 and "since must be a time from 1970 to 2200" in body["error"]
