"""Open311 GeoReport v2 over HTTP (SPEC section 6): an existing client reads it, FixMyStreet's
POSTs are taken as that client sends them, and every refusal is GeoReport's error list."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path

import pytest
from georeport import GeoReport
from PIL import Image

from reports.book import ReportBook
from reports.settings import ReportsSettings
from tests.siaga.apirig import World
from tests.siaga.reportrig import BOGOR, MANGGARAI, MONAS, ReportApi, open_desk, serving


@pytest.fixture
async def reports(world: World, tmp_path: Path) -> AsyncIterator[ReportApi]:
    with open_desk(world, tmp_path) as desk:
        async with serving(world, desk) as api:
            yield api


def jpeg_with_gps() -> bytes:
    """A phone's photo: EXIF with GPS coordinates and the camera's serial number."""
    image = Image.new("RGB", (64, 48), (40, 90, 160))
    exif = Image.Exif()
    exif[0xA431] = "SERIAL-12345"  # BodySerialNumber
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "S", (6.0, 10.0, 31.0)
    gps[3], gps[4] = "E", (106.0, 49.0, 38.0)
    out = BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


# --- an existing client reads it ---------------------------------------------------------


async def test_the_georeport_client_reads_services_and_requests(reports: ReportApi) -> None:
    status, body, _ = await reports.post_form(reports.report("banjir", MANGGARAI))
    assert status == 201
    report_id = body[0]["service_request_id"]
    client = GeoReport(reports.open311)  # requests-based: off the event loop serving the API

    services = await asyncio.to_thread(client.get_service_list)
    codes = [service["service_code"] for service in services]
    assert codes[:3] == ["banjir", "macet", "jalan-rusak"] and len(codes) == 11
    assert codes[-1] == "lainnya"  # the catch-all beyond SPEC's ten
    banjir = next(s for s in services if s["service_code"] == "banjir")
    assert banjir["metadata"] is True and "BPBD" in banjir["agency_responsible"]

    definition = await asyncio.to_thread(client.get_service_definition, "banjir")
    assert [a["code"] for a in definition["attributes"]] == ["kedalaman_cm"]

    listed = await asyncio.to_thread(client.get_service_requests)
    assert [r["service_request_id"] for r in listed] == [report_id]
    one = await asyncio.to_thread(client.get_service_request, report_id)  # unwraps the list
    assert one["status"] == "open" and one["lat"] == pytest.approx(MANGGARAI[0])
    assert one["extended_attributes"]["state"] == "open"


async def test_the_georeport_client_reads_xml_too(reports: ReportApi) -> None:
    await reports.post_form(reports.report("sampah"))
    client = GeoReport(reports.open311, output_format="xml")
    services = await asyncio.to_thread(client.get_service_list)
    assert [s["service_code"] for s in services][:2] == ["banjir", "macet"]
    status, body = await reports.get("/open311/v2/requests.xml")
    assert status == 200
    root = ET.fromstring(body)
    assert root.tag == "service_requests"
    assert root.find("request/service_code").text == "sampah"  # type: ignore[union-attr]


# --- FixMyStreet as a client --------------------------------------------------------------


async def test_a_post_shaped_as_fixmystreet_sends_it_is_taken(reports: ReportApi) -> None:
    # FixMyStreet's Open311 client: form fields, attribute[...] for the category's
    # extra questions, media_url pointing at its own copy of the photo.
    fields = [
        ("api_key", reports.key), ("service_code", "banjir"),
        ("lat", str(MONAS[0])), ("long", str(MONAS[1])),
        ("address_string", "Jl. Medan Merdeka Barat"),
        ("description", "Banjir di depan Monas\n\nDilaporkan lewat FixMyStreet"),
        ("email", "warga@example.org"), ("first_name", "Siti"), ("last_name", "Aminah"),
        ("phone", "+62 812 0000 0000"),
        ("media_url", "https://fixmystreet.example/photo/17.full.jpeg"),
        ("attribute[kedalaman_cm]", "40"),
        ("jurisdiction_id", "jakarta.go.id"),
    ]
    status, body, _ = await reports.post_form(fields)
    assert status == 201, body
    report_id = body[0]["service_request_id"]
    status, listed = await reports.get(f"/open311/v2/requests/{report_id}.json")
    shown = listed[0]
    assert shown["media_url"] == "https://fixmystreet.example/photo/17.full.jpeg"
    assert shown["address"] == "Jl. Medan Merdeka Barat"
    assert shown["extended_attributes"]["attributes"] == {"kedalaman_cm": "40"}
    # The reporter's contact is for officers only, never on the public side.
    text = str(listed)
    assert "warga@example.org" not in text and "Aminah" not in text and "+62" not in text
    status, officer = await reports.officer("GET", f"/api/reports/{report_id}")
    assert status == 200
    assert officer["contact"]["email"] == "warga@example.org"
    assert officer["contact"]["last_name"] == "Aminah"


# --- photos -------------------------------------------------------------------------------


async def test_a_photo_is_served_back_without_its_metadata(reports: ReportApi) -> None:
    original = jpeg_with_gps()
    assert b"SERIAL-12345" in original
    status, body, _ = await reports.post_multipart(reports.report("pohon"), original,
                                                   filename="../../etc/passwd.jpg")
    assert status == 201, body
    report_id = body[0]["service_request_id"]
    _, listed = await reports.get(f"/open311/v2/requests/{report_id}.json")
    media_url = listed[0]["media_url"]
    assert media_url.startswith(reports.url + "/open311/v2/media/")
    async with reports.session.get(media_url) as answer:
        assert answer.status == 200 and answer.content_type == "image/jpeg"
        served = await answer.read()
    assert b"SERIAL-12345" not in served and b"PhoneMaker" not in served
    image = Image.open(BytesIO(served))
    assert image.size == (64, 48)
    assert 0x8825 not in image.getexif() and len(image.getexif()) == 0


async def test_a_photo_over_the_limit_is_413_and_nothing_is_stored(
        world: World, tmp_path: Path) -> None:
    settings = ReportsSettings(photo_max_bytes=2048)
    with open_desk(world, tmp_path, settings) as desk:
        async with serving(world, desk) as api:
            status, body, _ = await api.post_multipart(api.report("sampah"), b"\xff" * 5000)
            assert status == 413
            assert "2,048" in body[0]["description"] and body[0]["code"] == 413
            _, listed = await api.get("/open311/v2/requests.json")
            assert listed == []
            assert not any((tmp_path / "photos").rglob("*.*"))


async def test_a_file_that_is_not_a_photo_is_refused_by_its_content(
        reports: ReportApi, tmp_path: Path) -> None:
    html = b"<html><script>alert(1)</script></html>"
    status, body, _ = await reports.post_multipart(reports.report("sampah"), html,
                                                   filename="foto.jpg")
    assert status == 400 and body[0]["code"] == 400
    _, listed = await reports.get("/open311/v2/requests.json")
    assert listed == []


# --- errors as GeoReport says -------------------------------------------------------------


async def test_a_missing_or_wrong_key_is_403(reports: ReportApi) -> None:
    fields = reports.report()
    del fields["api_key"]
    status, body, _ = await reports.post_form(fields)
    assert status == 403 and body[0]["code"] == 403 and "api_key" in body[0]["description"]
    status, body, _ = await reports.post_form(reports.report(api_key="not-a-key"))
    assert status == 403
    _, listed = await reports.get("/open311/v2/requests.json")
    assert listed == []


async def test_outside_the_jurisdiction_is_400_naming_it(reports: ReportApi) -> None:
    status, body, _ = await reports.post_form(reports.report(at=BOGOR))
    assert status == 400
    assert body == [{"code": 400, "description": body[0]["description"]}]
    assert "jurisdiction" in body[0]["description"]


async def test_errors_are_xml_on_xml_paths(reports: ReportApi) -> None:
    status, body, _ = await reports.post_form(reports.report(at=BOGOR), fmt="xml")
    assert status == 400
    root = ET.fromstring(body)
    assert root.tag == "errors" and root.find("error/code").text == "400"  # type: ignore[union-attr]


async def test_unknown_report_and_category_are_404(reports: ReportApi) -> None:
    status, body = await reports.get("/open311/v2/requests/99999.json")
    assert status == 404 and body[0]["code"] == 404
    status, body = await reports.get("/open311/v2/services/tsunami.json")
    assert status == 404 and "services.json" in body[0]["description"]


async def test_too_many_reports_from_one_key_is_429_with_retry_after(
        world: World, tmp_path: Path) -> None:
    with open_desk(world, tmp_path, ReportsSettings(rate_limit_per_minute=2)) as desk:
        async with serving(world, desk) as api:
            for _ in range(2):
                status, _, _ = await api.post_form(api.report("sampah"))
                assert status == 201
            status, body, headers = await api.post_form(api.report("sampah"))
            assert status == 429 and body[0]["code"] == 429
            assert int(headers["Retry-After"]) >= 1


async def test_a_key_added_while_serving_works_at_once_and_revoked_stops(
        world: World, tmp_path: Path) -> None:
    with open_desk(world, tmp_path) as desk:
        async with serving(world, desk) as api:
            # What `siaga reports keys add` does: another book on the same file.
            with ReportBook.open(ReportsSettings(), tmp_path) as cli_book:
                key = cli_book.add_key("kelurahan-menteng")
            status, body, _ = await api.post_form(api.report("sampah", api_key=key))
            assert status == 201, body
            with ReportBook.open(ReportsSettings(), tmp_path) as cli_book:
                cli_book.revoke_key("kelurahan-menteng")
            status, body, _ = await api.post_form(api.report("sampah", api_key=key))
            assert status == 403


async def test_a_near_report_of_the_same_category_is_answered_as_a_probable_duplicate(
        reports: ReportApi) -> None:
    status, first, _ = await reports.post_form(reports.report("pohon", MONAS))
    assert status == 201 and first[0]["service_notice"] is None
    near = (MONAS[0] + 0.0003, MONAS[1])  # about 33 m north
    status, second, _ = await reports.post_form(reports.report("pohon", near))
    first_id = first[0]["service_request_id"]
    assert status == 201 and first_id in second[0]["service_notice"]
    _, shown = await reports.get(
        f"/open311/v2/requests/{second[0]['service_request_id']}.json")
    assert shown[0]["extended_attributes"]["duplicate_of"] == first_id


async def test_a_key_with_its_own_limit_is_held_to_it(world: World, tmp_path: Path) -> None:
    with open_desk(world, tmp_path, ReportsSettings(rate_limit_per_minute=1000)) as desk:
        async with serving(world, desk) as api:
            slow = desk.book.add_key("kelurahan-slow", rate_limit_per_minute=1)
            status, _, _ = await api.post_form(api.report("sampah", api_key=slow))
            assert status == 201
            status, body, headers = await api.post_form(api.report("sampah", api_key=slow))
            assert status == 429 and "at most 1 a minute" in body[0]["description"]
            assert int(headers["Retry-After"]) >= 59
            # The default key of the rig is not held to the other key's limit.
            for _ in range(3):
                status, _, _ = await api.post_form(api.report("sampah"))
                assert status == 201


async def test_requests_are_listed_over_geo_reports_date_ranges(reports: ReportApi) -> None:
    old = await reports.post_form(reports.report(
        "sampah", requested_datetime="2023-06-01T08:00:00+07:00"))
    new = await reports.post_form(reports.report("sampah"))  # requested now (the rig's T0)
    old_id, new_id = old[1][0]["service_request_id"], new[1][0]["service_request_id"]

    async def listed(**params: str) -> list[str]:
        status, body = await reports.get("/open311/v2/requests.json", **params)
        assert status == 200, body
        return [r["service_request_id"] for r in body]

    assert await listed() == [new_id]  # the most recent 90 days
    assert await listed(start_date="2023-05-20T00:00:00+07:00") == [old_id]  # 90 days on
    assert await listed(end_date="2023-06-02T00:00:00+07:00") == [old_id]
    assert await listed(service_request_id=f"{old_id},{new_id}") == [new_id, old_id]
    status, body = await reports.get("/open311/v2/requests.json",
                                     start_date="2023-01-01T00:00:00+07:00",
                                     end_date="2023-12-31T00:00:00+07:00")
    assert status == 400 and "90 days" in body[0]["description"]


async def test_characters_xml_forbids_do_not_break_the_xml_list(reports: ReportApi) -> None:
    status, body, _ = await reports.post_form(reports.report("sampah",
                                                             description="banjir \uffff ok"))
    assert status == 201, body
    status, text = await reports.get("/open311/v2/requests.xml")
    assert status == 200
    root = ET.fromstring(text)  # would raise "not well-formed" with U+FFFF in it
    assert root.find("request/description").text == "banjir  ok"  # type: ignore[union-attr]
    _, listed = await reports.get("/open311/v2/requests.json", status="open,closed")
    assert listed[0]["description"] == "banjir \uffff ok"  # JSON keeps the text as sent
