"""Open311 GeoReport v2 under /open311/v2/ (SPEC section 6): what residents' apps speak.

Answers are JSON or XML, as the path's extension asks; errors are GeoReport's list
(`[{"code": 400, "description": "..."}]`, or `<errors>` in XML), written by
`open311_error` which `siaga.api.context.errors_as_json` calls for these paths.

What the public sees of a report is what GeoReport defines, plus the detailed state under
`extended_attributes`; never the reporter's contact, which only officers see
(`siaga.api.reports`).
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from reports.book import ReportQuery
from reports.categories import Category
from reports.errors import PhotoTooLarge, ReportRefused, UnknownReport
from reports.model import Report, Update
from siaga.api.context import CONTEXT, ApiError, json_response
from siaga.api.timefmt import format_wib, parse_time
from siaga.citizens import CitizenDesk

PREFIX: Final = "/open311/v2"
FORMATS: Final = ("json", "xml")
PAGE_SIZE_DEFAULT: Final = 50
PAGE_SIZE_MAX: Final = 1000
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
RANGE_MAX_NS: Final = 90 * 86400 * 1_000_000_000  # GeoReport: a range spans 90 days at most
# A form without a photo holds a few fields of at most 4,000 characters; more is not a report.
FORM_MAX_BYTES: Final = 64 * 1024
MAX_PARTS: Final = 40  # GeoReport has 15 fields, plus a category's attributes
PHOTO_FIELD: Final = "media"
_CHUNK: Final = 64 * 1024


def routes() -> list[web.RouteDef]:
    fmt = "{fmt:(json|xml)}"
    return [
        web.get(f"{PREFIX}/services.{fmt}", services),
        web.get(f"{PREFIX}/services/{{code}}.{fmt}", service_definition),
        web.post(f"{PREFIX}/requests.{fmt}", post_request),
        web.get(f"{PREFIX}/requests.{fmt}", get_requests),
        web.get(f"{PREFIX}/requests/{{id}}.{fmt}", get_request),
        web.get(f"{PREFIX}/servicerequestupdates.{fmt}", get_updates),
        web.get(PREFIX + "/media/{name}", media),
    ]


def desk(request: web.Request) -> CitizenDesk:
    found = request.app[CONTEXT].desk
    if found is None:
        raise ApiError(404, "this service takes no reports")
    return found


# --- services ---------------------------------------------------------------------------


async def services(request: web.Request) -> web.Response:
    found = desk(request)
    return answer(request, [service_json(c) for c in found.categories.values()],
                  "services", "service")


async def service_definition(request: web.Request) -> web.Response:
    category = _category(desk(request), request.match_info["code"])
    definition = {
        "service_code": category.code,
        "attributes": [
            {"variable": True, "code": a.code, "datatype": a.datatype, "required": a.required,
             "datatype_description": None, "order": order, "description": a.description}
            for order, a in enumerate(category.attributes, start=1)
        ],
    }
    return answer(request, definition, "service_definition", None)


def service_json(category: Category) -> dict[str, Any]:
    return {
        "service_code": category.code, "service_name": category.name,
        "description": category.description, "metadata": bool(category.attributes),
        "type": "realtime", "keywords": f"{category.name_en.lower()}, {category.code}",
        "group": category.group, "agency_responsible": category.agency,
    }


def _category(found: CitizenDesk, code: str) -> Category:
    category = found.categories.get(code)
    if category is None:
        raise UnknownReport(f"no category {code!r}: services.json lists them "
                            f"({', '.join(found.categories)})")
    return category


# --- a new report -----------------------------------------------------------------------


async def post_request(request: web.Request) -> web.Response:
    """A new report: form-urlencoded as GeoReport says, or multipart with one `media` photo."""
    found = desk(request)
    max_photo = found.settings.photo_max_bytes
    fields, photo = await read_form(request, max_photo)
    given = [value for name, value in fields if name == "api_key"]
    key = given[0] if len(given) == 1 else request.query.get("api_key")
    if len(given) > 1:
        raise ReportRefused("api_key is given twice: send it once")
    submitted = await found.submit(fields, photo, await found.api_key(key))
    body: dict[str, Any] = {"service_request_id": submitted.report.id,
                            "service_notice": submitted.notice, "account_id": None}
    return answer(request, [body], "service_requests", "request", status=201)


async def read_form(request: web.Request, max_photo: int) -> tuple[list[tuple[str, str]],
                                                                   bytes | None]:
    """The form's fields in order, and the photo's bytes if there is one.

    The body is read with limits and decoded strictly: a wrong encoding is refused, not
    guessed. The photo's file name is never used (the stored file is named by its content).
    """
    content_type = request.content_type
    if content_type == "application/x-www-form-urlencoded":
        raw = await _read_limited(request, FORM_MAX_BYTES)
        try:
            text = raw.decode("ascii")  # percent-encoded: anything else is not this type
            return parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                             encoding="utf-8", errors="strict",
                             max_num_fields=MAX_PARTS), None
        except UnicodeDecodeError:
            raise ReportRefused("the form is not valid UTF-8 percent-encoding: encode the "
                                "fields as UTF-8") from None
        except ValueError as exc:  # more than MAX_PARTS fields
            raise ReportRefused(f"the form has too many fields (at most {MAX_PARTS})"
                                ) from exc
    if content_type == "multipart/form-data":
        return await _read_multipart(request, max_photo)
    raise ReportRefused("send the report as application/x-www-form-urlencoded, or as "
                        f"multipart/form-data with one {PHOTO_FIELD!r} photo "
                        f"(got {content_type or 'no Content-Type'})")


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ReportRefused(f"the form is {request.content_length:,} bytes; at most {limit:,} "
                            "without a photo")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ReportRefused(f"the form is over {limit:,} bytes; at most {limit:,} "
                                "without a photo")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_multipart(request: web.Request, max_photo: int
                          ) -> tuple[list[tuple[str, str]], bytes | None]:
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError) as exc:  # aiohttp asserts on a missing boundary
        raise ReportRefused(f"the multipart body cannot be read: {exc}") from None
    fields: list[tuple[str, str]] = []
    photo: bytes | None = None
    parts = 0
    while True:
        try:
            part = await reader.next()
        except ValueError as exc:
            raise ReportRefused(f"the multipart body is malformed: {exc}") from None
        except BadHttpMessage as exc:  # a part's header line that is no header
            raise ReportRefused(f"the multipart body is malformed: {exc.message}") from None
        if part is None:
            return fields, photo
        parts += 1
        if parts > MAX_PARTS or not isinstance(part, BodyPartReader):
            raise ReportRefused(f"the form has too many or nested parts (at most {MAX_PARTS})")
        name = part.name
        if not name:
            raise ReportRefused("a multipart part has no name: each field needs "
                                "Content-Disposition: form-data; name=...")
        if name == PHOTO_FIELD and part.filename is not None:
            if photo is not None:
                raise ReportRefused(f"more than one {PHOTO_FIELD!r} photo: send one")
            data = await _read_part(part, max_photo, photo=True)
            # A browser's form sends its file input empty, and nameless, when no file was
            # chosen: the photo is optional, so that is no photo.
            if data or part.filename:
                photo = data
            continue
        raw = await _read_part(part, FORM_MAX_BYTES, photo=False)
        try:
            fields.append((name, raw.decode("utf-8")))
        except UnicodeDecodeError:
            raise ReportRefused(f"field {name} is not valid UTF-8: encode text as UTF-8"
                                ) from None


async def _read_part(part: BodyPartReader, limit: int, *, photo: bool) -> bytes:
    chunks, size = [], 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            if photo:
                raise PhotoTooLarge(f"the photo is over {limit:,} bytes; at most {limit:,} "
                                    "(reports.photo_max_bytes)")
            raise ReportRefused(f"field {part.name} is over {limit:,} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    if part.headers.get("Content-Transfer-Encoding", "").lower() == "base64":
        raise ReportRefused("base64 parts are not taken: send the photo's bytes as they are")
    return data


# --- reading reports --------------------------------------------------------------------


async def get_requests(request: web.Request) -> web.Response:
    """Reports as GeoReport lists them: by `service_request_id` (which overrides the other
    filters), or by code, status and a range of requested times of at most 90 days, the
    most recent 90 when none is given."""
    found = desk(request)
    query = request.query
    page, page_size = _paging(query)
    ids = comma_list(query, "service_request_id")
    if ids:
        wanted = ReportQuery(ids=ids, offset=(page - 1) * page_size, limit=page_size)
    else:
        codes = comma_list(query, "service_code")
        for code in codes:
            _category(found, code)
        statuses = set(comma_list(query, "status"))
        if statuses - {"open", "closed"}:
            raise ReportRefused(f"status must be open, closed or both (open,closed), got "
                                f"{query.get('status')!r}")
        status = statuses.pop() if len(statuses) == 1 else None
        start, end = _date_range(query, found.clock_ns())
        wanted = ReportQuery(service_codes=codes, status=status, requested_from_ns=start,
                             requested_to_ns=end, offset=(page - 1) * page_size,
                             limit=page_size)
    reports, _total = await found.find(wanted)
    base = external_base(request)
    return answer(request, [public_json(r, base, found.categories) for r in reports],
                  "service_requests", "request")


def _date_range(query: Mapping[str, str], now_ns: int) -> tuple[int, int]:
    """GeoReport's range: start_date and end_date, at most 90 days apart; one alone reaches
    90 days from it, neither is the most recent 90 days."""
    start = _time(query, "start_date")
    end = _time(query, "end_date")
    if start is None and end is None:
        return now_ns - RANGE_MAX_NS, now_ns
    if start is None:
        assert end is not None
        return end - RANGE_MAX_NS, end
    if end is None:
        return start, start + RANGE_MAX_NS
    if end < start:
        raise ReportRefused("end_date is before start_date")
    if end - start > RANGE_MAX_NS:
        raise ReportRefused("start_date and end_date may be at most 90 days apart "
                            "(GeoReport); ask for a longer span in several requests")
    return start, end


async def get_request(request: web.Request) -> web.Response:
    found = desk(request)
    report = await found.get(request.match_info["id"])
    return answer(request, [public_json(report, external_base(request), found.categories)],
                  "service_requests", "request")


async def get_updates(request: web.Request) -> web.Response:
    """Officers' status changes (FixMyStreet's extension), oldest first, since start_date."""
    found = desk(request)
    start = _time(request.query, "start_date")
    end = _time(request.query, "end_date")
    page, page_size = _paging(request.query)
    updates = await found.updates(start, end, page_size, (page - 1) * page_size)
    return answer(request, [update_json(u) for u in updates], "service_requests_updates",
                  "request_update")


async def media(request: web.Request) -> web.FileResponse:
    photos = desk(request).photos
    name = request.match_info["name"]
    media_type = photos.media_type(name)  # refuses anything but <sha256>.<ext>
    # On this disk as a rule; else another instance took it: from the shared book, off
    # the loop.
    path = photos.local(name)
    if path is None:
        path = await asyncio.to_thread(photos.fetch, name)
    return web.FileResponse(path, headers={
        "Content-Type": media_type,
        # The name is the content's hash: the bytes never change.
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


def public_json(report: Report, base: str, categories: Mapping[str, Category]
                ) -> dict[str, Any]:
    """A report as GeoReport shows it to anyone: no contact details."""
    category = categories.get(report.service_code)
    return {
        "service_request_id": report.id,
        "status": report.state.status,
        "status_notes": report.status_notes,
        "service_name": category.name if category is not None else report.service_code,
        "service_code": report.service_code,
        "description": report.description,
        "agency_responsible": report.agency,
        "service_notice": None,
        "requested_datetime": format_wib(report.requested_ns),
        "updated_datetime": format_wib(report.updated_ns),
        "expected_datetime": None,
        "address": report.address,
        "address_id": None,
        "zipcode": None,
        "lat": report.lat,
        "long": report.lon,
        "media_url": media_url(report, base),
        "extended_attributes": {
            "state": str(report.state),
            "duplicate_of": report.duplicate_of,
            "attributes": dict(report.attributes),
            "alerts": list(report.alerts),
        },
    }


def media_url(report: Report, base: str) -> str | None:
    if report.photo is not None:
        return f"{base}{PREFIX}/media/{report.photo}"
    return report.media_url


def update_json(update: Update) -> dict[str, Any]:
    return {
        "update_id": update.id,
        "service_request_id": update.report_id,
        "status": update.state.status,
        "external_status_code": str(update.state),
        "updated_datetime": format_wib(update.at_ns),
        "description": update.note,
        "media_url": None,
        "extended_attributes": {"state": str(update.state), "officer": update.officer},
    }


def external_base(request: web.Request) -> str:
    configured = request.app[CONTEXT].external_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


def _paging(query: Mapping[str, str]) -> tuple[int, int]:
    page = positive_int(query, "page", 1, 1_000_000)
    size = positive_int(query, "page_size", PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)
    return page, size


def comma_list(query: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A query parameter holding values separated by commas (GeoReport's form of a list)."""
    return tuple(x.strip() for x in query.get(name, "").split(",") if x.strip())


def positive_int(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    """A query parameter that is a whole number from 1 to `most`; `default` when absent."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ReportRefused(f"{name} must be a whole number, got {raw!r}") from None
    if not 1 <= value <= most:
        raise ReportRefused(f"{name} must be between 1 and {most}, got {value}")
    return value


def _time(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    return parse_time(raw, name)


# --- JSON or XML ------------------------------------------------------------------------


def answer(request: web.Request, data: object, root: str, item: str | None,
           status: int = 200) -> web.Response:
    """`data` in the format the path asks for: JSON, or XML with GeoReport's element names."""
    if request.match_info.get("fmt") == "xml":
        return xml_response(to_xml(data, root, item), status)
    return json_response(data, status)


def xml_response(element: ET.Element, status: int = 200,
                 headers: Mapping[str, str] | None = None) -> web.Response:
    body = ET.tostring(element, encoding="utf-8", xml_declaration=True)
    return web.Response(body=body, status=status, headers=headers,
                        content_type="text/xml", charset="utf-8")


def to_xml(data: object, root: str, item: str | None) -> ET.Element:
    """GeoReport's XML: a list becomes `<root><item>...</item></root>`, a mapping its fields.

    ElementTree escapes every text it writes, so a report's text can never become markup.
    """
    element = ET.Element(root)
    if isinstance(data, Sequence) and not isinstance(data, str):
        for entry in data:
            element.append(to_xml(entry, item or "item", None))
        return element
    if isinstance(data, Mapping):
        for key, value in data.items():
            if isinstance(value, Mapping | list):
                child = to_xml(value, str(key), _singular(str(key)))
            else:
                child = ET.Element(str(key))
                child.text = _xml_text(value)
            element.append(child)
        return element
    element.text = _xml_text(data)
    return element


def _singular(key: str) -> str:
    return key[:-1] if key.endswith("s") else "item"


def _xml_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    # ElementTree escapes markup but writes characters XML 1.0 forbids (U+FFFF, most
    # controls) as they are: one such character in a note would make the whole list
    # unparseable for every XML client. They go; JSON keeps the text as it was.
    return _NOT_XML.sub("", str(value))


def open311_error(request: web.Request, status: int, message: str,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    """GeoReport's error list, in the format the path asks for (JSON when it does not say)."""
    errors = [{"code": status, "description": message}]
    if request.path.endswith(".xml"):
        return xml_response(to_xml(errors, "errors", "error"), status, headers)
    return json_response(errors, status, headers)
