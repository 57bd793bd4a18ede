"""Officers' side of residents' reports (CROP) and the statistics (CRM): /api/reports...

Every route but the statistics needs the bearer token, reads included: an officer sees the
reporter's contact, which the public Open311 side never shows. The statistics are counts,
as the city publishes them, and stay open like the other reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web
from pydantic import Field

from reports.book import ReportQuery
from reports.errors import ReportRefused
from reports.model import Report, State, Update
from siaga.api.context import CONTEXT, check_token, json_response, read_body
from siaga.api.open311 import (
    comma_list,
    desk,
    external_base,
    media_url,
    positive_int,
    update_json,
)
from siaga.api.timefmt import format_wib, parse_time
from siaga_core.configfile import StrictModel
from siaga_core.geo import Box

PAGE_SIZE_DEFAULT: Final = 50
PAGE_SIZE_MAX: Final = 500
NOTE_MAX_CHARS: Final = 4000
YEAR_RANGE: Final = (2000, 2100)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/reports", list_reports),
        # Before {report_id}: "stats" is not a report.
        web.get("/api/reports/stats", stats),
        web.get("/api/reports/{report_id}", get_report),
        web.post("/api/reports/{report_id}/updates", post_update),
    ]


def require_officer(request: web.Request) -> None:
    check_token(request.app[CONTEXT].token, request.headers.get("Authorization"))


async def list_reports(request: web.Request) -> web.Response:
    """Reports, newest first: category, state, agency, area, bbox, since; page, page_size."""
    require_officer(request)
    found = desk(request)
    query = request.query
    codes = comma_list(query, "category")
    for code in codes:
        if code not in found.categories:
            raise ReportRefused(f"category {code!r} is not one of {', '.join(found.categories)}")
    states = tuple(_state(raw, allow_open=True) for raw in comma_list(query, "state"))
    page = positive_int(query, "page", 1, 1_000_000)
    page_size = positive_int(query, "page_size", PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)
    since = query.get("since")
    reports, total = await found.find(ReportQuery(
        service_codes=codes, states=states, agency=query.get("agency") or None,
        box=_box(query), updated_since_ns=parse_time(since, "since") if since else None,
        offset=(page - 1) * page_size, limit=page_size))
    base = external_base(request)
    return json_response({"reports": [officer_json(r, base) for r in reports],
                          "total": total, "page": page, "page_size": page_size})


async def get_report(request: web.Request) -> web.Response:
    """One report with its contact, its linked alerts and its full history."""
    require_officer(request)
    found = desk(request)
    report_id = request.match_info["report_id"]
    report = await found.get(report_id)
    history = await found.history(report_id)
    shown = officer_json(report, external_base(request))
    shown["history"] = [update_json(u) | {"officer": u.officer, "state": str(u.state)}
                        for u in history]
    return json_response(shown)


class UpdateBody(StrictModel):
    state: str
    note: str = Field(default="", max_length=NOTE_MAX_CHARS)
    officer: str = Field(min_length=1, max_length=200)
    # When it happened, if not now: an officer's device that was offline, or a replay.
    at: str | None = None


async def post_update(request: web.Request) -> web.Response:
    """An officer's change of state; the closing states close the report."""
    require_officer(request)
    found = desk(request)
    body = await read_body(request, UpdateBody)
    state = _state(body.state, allow_open=False)
    at_ns = None if body.at is None else parse_time(body.at, "at")
    update = await found.update(request.match_info["report_id"], state, body.note,
                                body.officer, at_ns)
    return json_response(officer_update_json(update), status=201)


async def stats(request: web.Request) -> web.Response:
    """The CRM's figures for a year, counted from the stored reports."""
    raw = request.query.get("year")
    if raw is None:
        raise ReportRefused("year is required, e.g. /api/reports/stats?year=2020")
    year = positive_int({"year": raw}, "year", 0, YEAR_RANGE[1])
    if year < YEAR_RANGE[0]:
        raise ReportRefused(f"year must be between {YEAR_RANGE[0]} and {YEAR_RANGE[1]}")
    counted = await desk(request).stats(year)
    return json_response(counted.as_json())


def officer_json(report: Report, base: str) -> dict[str, Any]:
    contact = report.contact
    return {
        "id": report.id, "category": report.service_code, "agency": report.agency,
        "state": str(report.state), "status": report.state.status,
        "status_notes": report.status_notes, "description": report.description,
        "lat": report.lat, "long": report.lon, "address": report.address,
        "attributes": dict(report.attributes),
        "requested_at": format_wib(report.requested_ns),
        "received_at": format_wib(report.received_ns),
        "updated_at": format_wib(report.updated_ns),
        "first_response_at": _maybe_time(report.first_response_ns),
        "closed_at": _maybe_time(report.closed_ns),
        "media_url": media_url(report, base), "duplicate_of": report.duplicate_of,
        "alerts": list(report.alerts), "channel": report.key_name,
        "contact": {"email": contact.email, "first_name": contact.first_name,
                    "last_name": contact.last_name, "phone": contact.phone,
                    "device_id": contact.device_id, "account_id": contact.account_id},
    }


def officer_update_json(update: Update) -> dict[str, Any]:
    return update_json(update) | {"officer": update.officer, "state": str(update.state)}


def _maybe_time(ns: int | None) -> str | None:
    return None if ns is None else format_wib(ns)


def _state(raw: str, *, allow_open: bool) -> State:
    choices = [s for s in State if allow_open or s is not State.OPEN]
    for state in choices:
        if raw == state.value:
            return state
    raise ReportRefused(f"state must be one of {', '.join(s.value for s in choices)}, "
                        f"got {raw!r}")


def _box(query: Mapping[str, str]) -> Box | None:
    """`bbox=south,west,north,east`, or `area=lat,lon,radius_m` (matched by its box)."""
    bbox, area = query.get("bbox"), query.get("area")
    if bbox and area:
        raise ReportRefused("give bbox or area, not both")
    if bbox:
        south, west, north, east = _floats(bbox, "bbox", "south,west,north,east", 4)
        if not (south < north and west < east):
            raise ReportRefused("bbox must be south,west,north,east with south < north "
                                "and west < east")
        return Box(south, west, north, east)
    if area:
        lat, lon, radius = _floats(area, "area", "lat,lon,radius_m", 3)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < radius <= 100_000):
            raise ReportRefused("area must be lat,lon,radius_m with a radius of at most "
                                "100000 m")
        return Box.around(lat, lon, radius)
    return None


def _floats(text: str, name: str, shape: str, count: int) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != count or any(v != v or v in (float("inf"), float("-inf"))
                                   for v in values):
        raise ReportRefused(f"{name} must be {shape} (numbers), got {text!r}")
    return values
