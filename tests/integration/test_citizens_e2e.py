"""Residents' reports beside the sensors, end to end: real Mosquitto, real InfluxDB, the
service, its Open311 API and a real webhook receiver.

A flood at Manggarai seen three ways, as issue 14 wants it told: the gauge climbs to Siaga 2
over MQTT, residents report `banjir` nearby through Open311, and the officer on duty gets one
story: CitizenFloodReports naming the reports and the gauge's level, and the gauge's own
alert counting the reports.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from siaga.app import Service
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.integration.support import Publisher, running_service
from tests.integration.test_alerts_e2e import (
    TOKEN,
    alerts_of,
    levels,
    rules_file,
    settings_for,
)
from tests.polling import eventually
from tests.receiver import RecordingReceiver

MANGGARAI = (-6.2073, 106.8486)  # the gauge, from the bundled catalog
MINUTE = 60


def near(metres_north: float, metres_east: float = 0.0) -> tuple[float, float]:
    return (MANGGARAI[0] + metres_north / 111_320,
            MANGGARAI[1] + metres_east / 110_500)


async def post_report(session: aiohttp.ClientSession, service: Service, key: str,
                      category: str, at: tuple[float, float], when_s: float) -> str:
    fields = {"api_key": key, "service_code": category, "lat": f"{at[0]:.6f}",
              "long": f"{at[1]:.6f}", "description": "Air masuk rumah, setinggi pinggang",
              "requested_datetime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00",
                                                  time.gmtime(when_s))}
    url = f"http://127.0.0.1:{service.http_port}/open311/v2/requests.json"
    async with session.post(url, data=fields) as answer:
        body = await answer.json()
        assert answer.status == 201, body
        return str(body[0]["service_request_id"])


async def officer_get(session: aiohttp.ClientSession, service: Service,
                      path: str) -> Any:
    async with session.get(f"http://127.0.0.1:{service.http_port}{path}",
                           headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
        assert answer.status == 200
        return await answer.json()


def firing(receiver: RecordingReceiver, alertname: str) -> list[dict[str, Any]]:
    return [a for a in alerts_of(receiver.delivered())
            if a["labels"]["alertname"] == alertname and a["status"] == "firing"]


async def test_a_flood_measured_and_reported_is_one_story(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    now = time.time()
    async with running_service(settings) as service, aiohttp.ClientSession() as session:
        assert service.desk is not None
        key = await asyncio.to_thread(service.desk.book.add_key, "qlue")
        # The gauge climbs past Siaga 3 (751 cm) to Siaga 2 (851 cm) over the last hour.
        publisher = Publisher(mosquitto)
        levels(publisher, settings.mqtt.topic_prefix, "manggarai", [700, 780, 860, 880],
               int(now) - 40 * MINUTE, step_s=10 * MINUTE)
        await eventually(lambda: firing(receiver, "FloodLevel")
                         and firing(receiver, "FloodLevel")[-1]["labels"]["level"] == "siaga-2",
                         what="Manggarai paged at Siaga 2")
        # Three residents nearby within ten minutes, and a jam report far off.
        ids = [await post_report(session, service, key, "banjir", near(north, east),
                                 now - (10 - minutes) * MINUTE)
               for north, east, minutes in ((120, 0, 0), (-80, 150, 4), (200, -100, 9))]
        await post_report(session, service, key, "macet", (-6.1754, 106.8272), now)

        await eventually(lambda: firing(receiver, "CitizenFloodReports"),
                         what="CitizenFloodReports paged")
        flood = firing(receiver, "CitizenFloodReports")[-1]
        annotations = flood["annotations"]
        assert annotations["count"] == "3"
        assert sorted(annotations["report_ids"].split(",")) == sorted(ids)
        assert annotations["gauge"] == "manggarai"
        assert "Siaga 2" in annotations["gauge_level"]

        # The gauge's own alert counts the reports, and each report shows the alerts.
        alerts = await officer_get(session, service, "/api/alerts?status=firing")
        gauge = next(a for a in alerts["alerts"] if a["labels"]["alertname"] == "FloodLevel")
        assert gauge["annotations"]["citizen_reports"] == "3"
        report = await officer_get(session, service, f"/api/reports/{ids[0]}")
        assert gauge["fingerprint"] in report["alerts"]
        assert flood["fingerprint"] in report["alerts"]
        publisher.close()


async def test_an_unanswered_report_pages_its_agency_until_an_officer_answers(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    offset_ns = [0]  # the service's clock, moved forward by the test: hours pass at once

    def clock_ns() -> int:
        return time.time_ns() + offset_ns[0]

    service = Service(settings, clock_ns=clock_ns)
    async with running_service(settings, service=service), aiohttp.ClientSession() as session:
        assert service.desk is not None
        desk = service.desk
        key = await asyncio.to_thread(desk.book.add_key, "qlue")
        tree = await post_report(session, service, key, "pohon", (-6.1754, 106.8272),
                                 time.time())
        assert await desk.check_overdue() == 0  # pohon: 3 hours to answer
        offset_ns[0] = 4 * 3600 * 10**9
        assert await desk.check_overdue() == 1
        await eventually(lambda: firing(receiver, "ReportOverdue"),
                         what="ReportOverdue paged")
        overdue = firing(receiver, "ReportOverdue")[-1]
        assert overdue["labels"]["agency"] == "Dinas Pertamanan dan Hutan Kota"
        assert overdue["labels"]["category"] == "pohon"
        assert tree in overdue["annotations"]["summary"] + overdue["annotations"]["report_id"]

        url = f"http://127.0.0.1:{service.http_port}/api/reports/{tree}/updates"
        async with session.post(url, json={"state": "acknowledged", "officer": "Distamhut"},
                                headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
            assert answer.status == 201
        await eventually(lambda: any(
            a["labels"]["alertname"] == "ReportOverdue" and a["status"] == "resolved"
            for a in alerts_of(receiver.delivered())), what="ReportOverdue resolved")
        assert await desk.check_overdue() == 0
