"""Requests a client got wrong, or that broke on the way: each is a 400 saying what is wrong,
never a bug's 500, and a client gone mid-upload is a line at info, not a traceback.

Some bodies are sent over a raw socket: aiohttp's own client would not send them broken."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from tests.polling import eventually
from tests.reports import images
from tests.siaga.apirig import TOKEN, World
from tests.siaga.reportrig import MONAS, ReportApi, open_desk, serving

BOUNDARY = "siaga-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture
async def reports(world: World, tmp_path: Path) -> AsyncIterator[ReportApi]:
    with open_desk(world, tmp_path) as desk:
        async with serving(world, desk) as api:
            yield api


def multipart(fields: dict[str, str], *parts: bytes) -> bytes:
    """A multipart body of the form's fields and then `parts` (each: headers, blank line,
    content), as a browser frames them."""
    framed = [f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()
              for name, value in fields.items()]
    return b"".join(f"--{BOUNDARY}\r\n".encode() + part + b"\r\n"
                    for part in (*framed, *parts)) + f"--{BOUNDARY}--\r\n".encode()


async def send_raw(api: ReportApi, path: str, headers: dict[str, str], body: bytes,
                   declared_length: int | None = None) -> tuple[bytes, bytes] | None:
    """POST `body` as it is; the status line and the body of the answer. With a
    `declared_length` beyond the body, the connection is closed once it is sent (a client
    gone mid-upload): None."""
    address = urlsplit(api.url)
    assert address.hostname is not None and address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    length = len(body) if declared_length is None else declared_length
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nConnection: close\r\n"
                 f"{head}Content-Length: {length}\r\n\r\n".encode() + body)
    await writer.drain()
    if declared_length is not None:
        writer.close()
        await writer.wait_closed()
        return None
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_bytes, _, content = answer.partition(b"\r\n\r\n")
    return head_bytes.split(b"\r\n")[0], content


async def stored(api: ReportApi) -> int:
    status, listed = await api.officer("GET", "/api/reports", page_size="1")
    assert status == 200
    return int(listed["total"])


async def test_a_body_whose_content_encoding_is_not_what_it_says_is_400(
        reports: ReportApi, caplog: pytest.LogCaptureFixture) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}
    fields = urlencode(reports.report("sampah", MONAS)).encode()
    answer = await send_raw(reports, "/open311/v2/requests.json", form, gzip.compress(fields))
    assert answer is not None and answer[0].endswith(b"201 Created"), answer
    answer = await send_raw(reports, "/open311/v2/requests.json", form, b"not gzip at all")
    assert answer is not None and answer[0].endswith(b"400 Bad Request"), answer
    assert b"cannot be read: Can not decode content-encoding: gzip" in answer[1]
    update = {"Content-Type": "application/json", "Content-Encoding": "gzip",
              "Authorization": f"Bearer {TOKEN}"}
    answer = await send_raw(reports, "/api/reports/1/updates", update, b"{not gzip}")
    assert answer is not None and answer[0].endswith(b"400 Bad Request"), answer
    assert await stored(reports) == 1
    # Nor does aiohttp, reading out the rest of such a body, log it as a bug.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_multipart_part_with_a_header_line_that_is_no_header_is_400(
        reports: ReportApi) -> None:
    body = multipart(reports.report("sampah", MONAS), b"Content-Disposition form-data\r\n\r\nx")
    answer = await send_raw(reports, "/open311/v2/requests.json",
                            {"Content-Type": MULTIPART}, body)
    assert answer is not None and answer[0].endswith(b"400 Bad Request"), answer
    assert b"the multipart body is malformed: Invalid HTTP header" in answer[1]
    assert await stored(reports) == 0


async def test_a_browsers_empty_file_input_is_no_photo(reports: ReportApi) -> None:
    # What a browser sends for <input type=file name=media> when no file was chosen.
    empty = (b'Content-Disposition: form-data; name="media"; filename=""\r\n'
             b"Content-Type: application/octet-stream\r\n\r\n")
    async with reports.session.post(f"{reports.open311}/requests.json",
                                    data=multipart(reports.report("sampah", MONAS), empty),
                                    headers={"Content-Type": MULTIPART}) as answer:
        assert answer.status == 201, await answer.text()
        report_id = (await answer.json())[0]["service_request_id"]
    _, shown = await reports.get(f"/open311/v2/requests/{report_id}.json")
    assert shown[0]["media_url"] is None
    # A named file with nothing in it is still refused: that is a photo gone wrong.
    status, body, _ = await reports.post_multipart(reports.report("sampah", MONAS), b"")
    assert status == 400 and "photo is empty" in body[0]["description"]


async def test_a_client_gone_mid_upload_is_logged_at_info_without_a_traceback(
        reports: ReportApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    photo = (b'Content-Disposition: form-data; name="media"; filename="a.jpg"\r\n'
             b"Content-Type: image/jpeg\r\n\r\n" + images.jpeg())
    whole = multipart(reports.report("sampah", MONAS), photo)
    assert await send_raw(reports, "/open311/v2/requests.json", {"Content-Type": MULTIPART},
                          whole[:len(whole) // 2], declared_length=len(whole)) is None

    def gone() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "went away" in r.getMessage()]

    await eventually(gone, what="the lost upload logged")
    assert [(r.levelno, r.exc_info) for r in gone()] == [(logging.INFO, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert await stored(reports) == 0


async def test_dates_beyond_what_the_stores_hold_are_400_naming_the_years(
        reports: ReportApi) -> None:
    for path in ("/open311/v2/requests.json", "/open311/v2/servicerequestupdates.json"):
        for name, value in (("start_date", "2300-01-01T00:00:00Z"),
                            ("end_date", "0001-01-01T00:00:00+00:00")):
            status, body = await reports.get(path, **{name: value})
            assert status == 400, (path, body)
            assert f"{name} must be a time from 1970 to 2200" in body[0]["description"]
