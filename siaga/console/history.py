"""`GET /console/api/history?at=T`: the console's map as it was at a past moment T.

Built from three stores, each by event time: the alerts pending or firing at T (the alert
book's history, a week back), each device's latest reading within six hours before T
(InfluxDB, one query per kind), and the residents' reports made in the day before T. The
statuses come from `status.py`, as live ones do. The answer has the shape of
`/console/api/state` (devices, alerts, reports, config) plus `at`; it has no `epoch` or
`last_id`, as no stream follows a past moment.

T is taken to its minute (`series.to_minute`), as the page's input gives it: the answer's
`at` says the moment shown, and times within one minute share one InfluxDB query.

What is not rebuilt (plan section 10, item 11): acks and silences at T, a report's state
at T (its current one is shown), and the devices' `last_seen` (their reading's time is).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from aiohttp import web

from devices.kinds import Kind
from devices.readings import POLLUTANTS, Reading
from devices.registry import Device, Registry
from ingest.deadletters import format_time
from reports.book import ReportQuery
from reports.model import Report
from rules.alert import Alert
from rules.alertbook import AlertView
from rules.offline import AREA_OFFLINE, DEVICE_OFFLINE
from siaga.api.alerts import alert_json
from siaga.api.context import CONTEXT, error_response, json_response
from siaga.api.timefmt import parse_time
from siaga.console.context import CONSOLE
from siaga.console.hub import MAX_REPORTS, device_json, report_json
from siaga.console.series import NO_READER_MESSAGE, LastPoint, to_minute
from siaga.console.status import StatusRules, device_status, main_value
from siaga_core.errors import InputError

_S: Final = 1_000_000_000
HOUR_NS: Final = 3600 * _S
ALERTS_LOOKBACK_NS: Final = 7 * 24 * HOUR_NS  # an episode older than a week is not found
READINGS_WINDOW_NS: Final = 6 * HOUR_NS  # a device silent this long before T was offline
REPORTS_WINDOW_NS: Final = 24 * HOUR_NS  # the reports of the day before T, as live shows
# The fields read back per kind: what status.py and the marker need, nothing else.
FIELDS: Final[Mapping[Kind, tuple[str, ...]]] = MappingProxyType({
    Kind.WATER_LEVEL: ("level_cm",),
    Kind.AIR_QUALITY: POLLUTANTS,
    Kind.TRAFFIC: ("speed_kmh",),
    Kind.CAMERA: ("water_score", "vehicles_per_min", "mean_speed_kmh"),
})
_AREA_KEYS: Final = frozenset({"alertname", "severity", "area"})  # the rest names the area


def routes() -> list[web.RouteDef]:
    return [web.get("/console/api/history", history)]


async def history(request: web.Request) -> web.Response:
    context, console = request.app[CONTEXT], request.app[CONSOLE]
    raw = request.query.get("at")
    if raw is None:
        raise InputError("at is required: the moment to show, RFC 3339 with an offset, "
                         "e.g. ?at=2020-01-01T06:00:00+07:00")
    at_ns = parse_time(raw, "at")
    now_ns = context.clock_ns()
    if at_ns > now_ns:
        raise InputError(f"at must not be after now ({format_time(now_ns)}); "
                         "/console/api/state shows the present")
    at_ns = to_minute(at_ns)
    reader = console.reader
    if reader is None:
        return error_response(501, NO_READER_MESSAGE)
    registry, book, desk = context.registry, context.alerts, context.desk
    kinds = [kind for kind in FIELDS if registry.by_kind(kind)]
    since = at_ns - READINGS_WINDOW_NS
    readings = asyncio.gather(
        *(reader.last_points(kind, FIELDS[kind], since, at_ns) for kind in kinds))
    views, reports, points = await asyncio.gather(
        asyncio.to_thread(book.as_of, at_ns, ALERTS_LOOKBACK_NS),
        asyncio.to_thread(_reports, None if desk is None else desk.book.find, at_ns),
        readings,
    )
    latest = {device_id: point for found in points for device_id, point in found.items()}
    devices = devices_at(registry, latest, [view.alert for view in views], at_ns,
                         StatusRules.of(console.rules))
    settings = console.settings
    return json_response({
        "at": format_time(at_ns),
        "now": format_time(now_ns),
        "config": {"tile_url": settings.tile_url, "tile_attribution": settings.tile_attribution,
                   "language": settings.language,
                   "utc_offset": console.rules.alerting.utc_offset},
        "devices": devices,
        "alerts": [alert_json(view) for view in _newest_first(views)],
        "reports": [report_json(report) for report in reports],
    })


def devices_at(registry: Registry, latest: Mapping[str, LastPoint], alerts: Sequence[Alert],
               at_ns: int, rules: StatusRules) -> list[dict[str, Any]]:
    """Every device as the page draws it, with its status at `at_ns`."""
    by_device: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        device_id = alert.labels.get("device_id")
        if device_id is not None:
            by_device[device_id].append(alert)
    dark = offline_by_alerts(registry, alerts)
    shown = []
    for device in registry:
        point = latest.get(device.id)
        reading = (None if point is None
                   else Reading(device.kind, device.id, point.ts_ns, dict(point.values), None))
        offline = device.id in dark or _silent(device, point, at_ns)
        status = device_status(device, reading, by_device.get(device.id, ()), offline, rules)
        value = main_value(device, reading)
        ts = None if reading is None else format_time(reading.ts_ns)
        shown.append(device_json(device) | {
            "status": status,
            "value": None if value is None else {"field": value[0], "v": value[1]},
            "ts": ts, "last_seen": ts,
        })
    return shown


def offline_by_alerts(registry: Registry, alerts: Iterable[Alert]) -> set[str]:
    """The devices a DeviceOffline or AreaOffline alert (active at the moment) names."""
    dark: set[str] = set()
    for alert in alerts:
        if alert.rule == DEVICE_OFFLINE or alert.labels.get("alertname") == DEVICE_OFFLINE:
            dark.add(alert.labels.get("device_id", alert.subject))
        elif alert.rule == AREA_OFFLINE or alert.labels.get("alertname") == AREA_OFFLINE:
            listed = alert.annotations.get("devices")
            if listed:  # the area's silent devices, as the checker named them then
                dark.update(name.strip() for name in listed.split(","))
            else:
                area = {k: v for k, v in alert.labels.items() if k not in _AREA_KEYS}
                dark.update(device.id for device in registry if area
                            and all(device.labels.get(k) == v for k, v in area.items()))
    return dark


def _silent(device: Device, point: LastPoint | None, at_ns: int) -> bool:
    # Twice its interval without a reading, as the offline checker's default grace, but
    # never beyond the window read back.
    allowed_ns = min(2 * device.interval_s * _S, READINGS_WINDOW_NS)
    return point is None or at_ns - point.ts_ns > allowed_ns


def _reports(find: Callable[[ReportQuery], list[Report]] | None, at_ns: int) -> list[Report]:
    if find is None:
        return []
    return find(ReportQuery(requested_from_ns=at_ns - REPORTS_WINDOW_NS, requested_to_ns=at_ns,
                            limit=MAX_REPORTS))


def _newest_first(views: Sequence[AlertView]) -> list[AlertView]:
    return sorted(views, key=lambda view: view.alert.starts_at_ns, reverse=True)
