"""Hostile reports as data: forms and photos, each with what Siaga must answer.

Two tables that any layer can run: `FORM_CASES` (a POST requests.json body, form-urlencoded)
and `PHOTO_CASES` (the `media` file of a multipart POST, beside a valid form). Each case says
its expected outcome: "accepted", or the HTTP status of the refusal (400, 413) and a part of
its message. tests/reports/test_intake.py and test_photos.py run them against
`parse_report` and `PhotoStore`; the HTTP tests post them to a running service and check
that nothing refused is stored.

The limits assumed are the defaults (`ReportsSettings`: 10 MiB, 40 M pixels, DKI Jakarta).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from reports.settings import MIB
from tests.reports import images

Expected = Literal["accepted", 400, 413]
Fields = tuple[tuple[str, str], ...]
MIB_OF_TEXT = "x" * MIB  # a "huge field"
SQL = "'; DROP TABLE reports;--"
SCRIPT = "<script>alert('siaga')</script><img src=x onerror=alert(1)>"
BASE: Fields = (
    ("service_code", "banjir"),
    ("lat", "-6.2089"),
    ("long", "106.8456"),
    ("description", "Air setinggi lutut di depan pintu air Manggarai"),
    ("email", "warga@example.org"),
)


@dataclass(frozen=True)
class FormCase:
    name: str
    expected: Expected
    reason: str = ""  # a part of the refusal's message ("" for accepted cases)
    fields: Fields = ()  # the form as sent, without api_key
    # A body that is not valid UTF-8 once percent-decoded: refused by the HTTP layer while
    # decoding, before intake sees it (parse_report takes str).
    raw: bytes | None = None
    kept: dict[str, object] = field(default_factory=dict)  # NewReport attributes, if accepted
    # The HTTP layer's own limits (body size, number of fields) may refuse it before intake,
    # with their own message: over HTTP, check the status (and that nothing is stored) only.
    before_intake: bool = False

    def body(self, api_key: str) -> bytes:
        """The form-urlencoded body, with `api_key` first unless the case sends its own."""
        key = b"" if any(n == "api_key" for n, _ in self.fields) else (
            urlencode({"api_key": api_key}).encode() + b"&")
        return key + (self.raw if self.raw is not None else urlencode(self.fields).encode())


def decode_form(body: bytes) -> list[tuple[str, str]]:
    """A form body as the HTTP layer must decode it: percent-decoding, then strict UTF-8
    (UnicodeDecodeError for anything else; aiohttp's own `post()` would replace it)."""
    return parse_qsl(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                     errors="strict")


def _with(*changes: tuple[str, str | None], extra: Sequence[tuple[str, str]] = ()) -> Fields:
    """BASE with fields replaced (None: removed), then `extra` appended."""
    changed = dict(changes)
    fields = [(n, changed[n]) if n in changed else (n, v) for n, v in BASE]
    fields += [(n, v) for n, v in changes if n not in dict(BASE)]
    return tuple((n, v) for n, v in fields if v is not None) + tuple(extra)


def _ok(name: str, fields: Fields, **kept: object) -> FormCase:
    return FormCase(name, "accepted", fields=fields, kept=kept)


def _no(name: str, reason: str, fields: Fields, *, before_intake: bool = False) -> FormCase:
    return FormCase(name, 400, reason, fields=fields, before_intake=before_intake)


def _undecodable(name: str, raw: bytes) -> FormCase:
    return FormCase(name, 400, "UTF-8", raw=urlencode(BASE).encode() + b"&" + raw)


FORM_CASES: tuple[FormCase, ...] = (
    _ok("baseline", BASE, service_code="banjir", lat=-6.2089, lon=106.8456),
    # Repeated fields: which one a server reads is what parameter pollution plays on.
    _no("lat-repeated", "lat is given twice", _with(extra=[("lat", "-6.1")])),
    _no("service-code-repeated", "service_code is given twice",
        _with(extra=[("service_code", "macet")])),
    _no("description-repeated", "description is given twice",
        _with(extra=[("description", "lagi")])),
    _no("api-key-repeated", "api_key is given twice",
        (("api_key", "a"), ("api_key", "b"), *BASE)),
    _no("attribute-repeated", "attribute[kedalaman_cm] is given twice",
        _with(extra=[("attribute[kedalaman_cm]", "40"), ("attribute[kedalaman_cm]", "900")])),
    _ok("unknown-field-repeated-is-ignored", _with(extra=[("x_app", "1"), ("x_app", "2")])),
    # Huge fields.
    _no("description-1-mib", "description is longer than 4000 characters (1,048,576)",
        _with(("description", MIB_OF_TEXT)), before_intake=True),
    _no("first-name-1-mib", "first_name is longer than 4000 characters",
        _with(("first_name", MIB_OF_TEXT)), before_intake=True),
    _no("unknown-field-1-mib", "is longer than 4000 characters",
        _with(extra=[("x_padding", MIB_OF_TEXT)]), before_intake=True),
    _no("huge-field-name", "a field's name is longer than 100 characters (1,048,576)",
        _with(extra=[(MIB_OF_TEXT, "1")]), before_intake=True),
    _no("address-4001", "address_string is longer than 4000 characters (4,001)",
        _with(("address_string", "j" * 4001))),
    _no("description-4001", "description is longer than 4000 characters (4,001)",
        _with(("description", "d" * 4001))),
    _ok("description-4000", _with(("description", "d" * 4000)), description="d" * 4000),
    _no("name-201", "first_name is longer than 200 characters (201)",
        _with(("first_name", "n" * 201))),
    _no("too-many-fields", "fields; at most 100",
        _with(extra=[(f"x{i}", "1") for i in range(200)]), before_intake=True),
    # Control characters and NUL.
    _no("nul-in-description", "control character (U+0000", _with(("description", "a\x00b"))),
    _no("escape-in-description", "control character (U+001B",
        _with(("description", "\x1b[31mred\x1b[0m"))),
    _no("c1-in-description", "control character (U+0085", _with(("description", "a\x85b"))),
    _no("nul-in-name", "first_name holds a control character",
        _with(("first_name", "Budi\x00"))),
    _no("newline-in-name", "first_name holds a control character (U+000A",
        _with(("first_name", "Budi\nSantoso"))),
    _no("nul-in-service-code", "is not a category", _with(("service_code", "banjir\x00"))),
    _ok("lines-and-tabs-kept", _with(("description", "satu\r\ndua\tdua\rtiga")),
        description="satu\ndua\tdua\ntiga"),
    # Coordinates.
    _no("lat-nan", "lat 'NaN' is not a number", _with(("lat", "NaN"))),
    _no("lat-inf", "lat 'inf' is not a number", _with(("lat", "inf"))),
    _no("long-minus-infinity", "long '-Infinity' is not a number",
        _with(("long", "-Infinity"))),
    _no("lat-1e309", "lat '1e309' is not a finite number", _with(("lat", "1e309"))),
    _no("lat-decimal-comma", "lat '-6,2' is not a number: use a decimal number with a point",
        _with(("lat", "-6,2"))),
    _no("lat-underscores", "is not a number", _with(("lat", "-6_2"))),
    _no("lat-fullwidth-digits", "is not a number", _with(("lat", "-\uff16.\uff12"))),
    _no("lat-hex-float", "is not a number", _with(("lat", "-0x1.8p2"))),
    _no("lat-trailing-text", "is not a number", _with(("lat", "-6.2abc"))),
    _no("lat-missing", "lat is required", _with(("lat", None))),
    _no("lat-empty", "lat is required", _with(("lat", ""))),
    _no("long-missing-address-given", "long is required",
        _with(("long", None), ("address_string", "Jl. Tambak, Manggarai"))),
    _no("lat-outside", "lat -7 is outside the jurisdiction", _with(("lat", "-7"))),
    _no("long-outside", "long 110 is outside the jurisdiction", _with(("long", "110"))),
    _no("lat-north-pole", "lat 90 is outside the jurisdiction", _with(("lat", "90"))),
    _ok("thousand-islands-inside", _with(("lat", "-5.2"), ("long", "106.45")), lat=-5.2),
    # Text that looks like code is kept as text.
    _ok("sql-looking-text", _with(("description", SQL), ("first_name", SQL)),
        description=SQL),
    _ok("html-script-text", _with(("description", SCRIPT), ("address_string", SCRIPT)),
        description=SCRIPT, address=SCRIPT),
    _ok("unicode-text", _with(("description", "Banjir 50 cm \U0001f30a di Kampung Melayu")),
        description="Banjir 50 cm \U0001f30a di Kampung Melayu"),
    _ok("rtl-override-is-text", _with(("description", "abc\u202edef")),
        description="abc\u202edef"),
    # Categories and attributes.
    _no("service-code-missing", "service_code is required", _with(("service_code", None))),
    _no("service-code-unknown", "service_code 'flood' is not a category: use one of banjir",
        _with(("service_code", "flood"))),
    _no("service-code-sql", "is not a category", _with(("service_code", SQL))),
    _no("service-code-upper-case", "is not a category", _with(("service_code", "BANJIR"))),
    _ok("attribute-depth", _with(extra=[("attribute[kedalaman_cm]", "40")]),
        attributes={"kedalaman_cm": "40"}),
    _no("attribute-unknown", "attribute[warna] is not an attribute of banjir: use "
        "attribute[kedalaman_cm]", _with(extra=[("attribute[warna]", "coklat")])),
    _no("attribute-of-another-category", "is not an attribute of macet: it has no attributes",
        _with(("service_code", "macet"), extra=[("attribute[kedalaman_cm]", "40")])),
    _no("attribute-negative", "attribute[kedalaman_cm] -5 is out of range: use 0..1000",
        _with(extra=[("attribute[kedalaman_cm]", "-5")])),
    _no("attribute-not-a-number", "attribute[kedalaman_cm] 'selutut' is not a number",
        _with(extra=[("attribute[kedalaman_cm]", "selutut")])),
    _no("attribute-list-syntax", "is not an attribute of banjir",
        _with(extra=[("attribute[kedalaman_cm][]", "40")])),
    # Contact and media_url.
    _no("email-invalid", "email 'not-an-email' does not look like an e-mail address",
        _with(("email", "not-an-email"))),
    _no("email-header-injection", "control character",
        _with(("email", "a@example.org\r\nBcc: x@example.org"))),
    _ok("empty-optional-fields", _with(("email", ""), ("media_url", ""), ("phone", " ")),
        media_url=None),
    _no("media-url-javascript", "media_url 'javascript:alert(1)' is not an http(s) URL",
        _with(("media_url", "javascript:alert(1)"))),
    _no("media-url-file", "is not an http(s) URL", _with(("media_url", "file:///etc/passwd"))),
    _no("media-url-no-host", "is not an http(s) URL", _with(("media_url", "https:///x.jpg"))),
    _no("media-url-2001", "media_url is longer than 2000 characters",
        _with(("media_url", "https://example.org/" + "p" * 1981))),
    _ok("media-url-fixmystreet", _with(("media_url", "https://fms.example.org/photo/1.jpeg")),
        media_url="https://fms.example.org/photo/1.jpeg"),
    # requested_datetime (Siaga's extension for offline queues).
    _ok("requested-in-2020", _with(("requested_datetime", "2020-01-01T06:00:00+07:00")),
        requested_ns=1_577_833_200_000_000_000),
    _no("requested-without-offset", "has no UTC offset",
        _with(("requested_datetime", "2020-01-01T06:00:00"))),
    _no("requested-garbage", "is not a date and time",
        _with(("requested_datetime", "yesterday"))),
    _no("requested-far-future", "in the future",
        _with(("requested_datetime", "2999-01-01T00:00:00+07:00"))),
    # Wrong encodings: refused by the HTTP layer's strict decoding.
    _undecodable("raw-latin-1", b"first_name=Andr\xe9"),
    _undecodable("percent-encoded-latin-1", b"first_name=Andr%E9"),
    _undecodable("overlong-utf-8-slash", b"description=%C0%AF"),
    _undecodable("utf-8-surrogate", b"description=%ED%A0%80"),
    _undecodable("truncated-utf-8", b"description=%E2%82"),
)


@dataclass(frozen=True)
class PhotoCase:
    name: str
    build: Callable[[], bytes]
    expected: Expected
    reason: str = ""  # a part of the refusal's message
    filename: str = "photo.jpg"  # what the multipart part claims; never used by Siaga
    content_type: str = "image/jpeg"  # likewise
    media_type: str | None = None  # what an accepted photo is stored as
    absent: tuple[bytes, ...] = ()  # must not appear in the stored file

    @property
    def data(self) -> bytes:
        return self.build()


def _photo_ok(name: str, build: Callable[[], bytes], media_type: str = "image/jpeg",
              absent: tuple[bytes, ...] = (), filename: str = "photo.jpg",
              content_type: str = "image/jpeg") -> PhotoCase:
    return PhotoCase(name, build, "accepted", filename=filename, content_type=content_type,
                     media_type=media_type, absent=absent)


def _photo_no(name: str, reason: str, build: Callable[[], bytes], status: Expected = 400,
              filename: str = "photo.jpg", content_type: str = "image/jpeg") -> PhotoCase:
    return PhotoCase(name, build, status, reason, filename=filename,
                     content_type=content_type)


HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg">'
       b"<script>alert(1)</script></svg>")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
SERIAL_BYTES = images.SERIAL.encode()

PHOTO_CASES: tuple[PhotoCase, ...] = (
    _photo_ok("jpeg", images.jpeg),
    _photo_ok("png", images.png, "image/png", content_type="image/png", filename="a.png"),
    _photo_ok("webp", images.webp, "image/webp", content_type="image/webp", filename="a.webp"),
    _photo_ok("jpeg-with-gps-and-serial", lambda: images.jpeg(exif=images.camera_exif()),
              absent=(SERIAL_BYTES, images.CAMERA.encode(), b"Exif")),
    _photo_ok("jpeg-comment-with-script", lambda: images.jpeg(comment=b"<script>x</script>"),
              absent=(b"<script",)),
    _photo_ok("png-text-chunk-with-script", lambda: images.png(text={"Comment": SCRIPT}),
              "image/png", absent=(b"<script", b"tEXt", b"iTXt", b"zTXt")),
    # Path tricks in the file name: the name is never used.
    _photo_ok("path-traversal-name", images.jpeg, filename="../../etc/passwd.jpg"),
    _photo_ok("windows-path-name", images.jpeg, filename="..\\..\\windows\\win.ini.jpg"),
    _photo_ok("absolute-path-name", images.jpeg, filename="/etc/passwd"),
    _photo_ok("php-double-extension", images.jpeg, filename="shell.php.jpg"),
    _photo_ok("png-named-jpg", images.png, "image/png", filename="photo.jpg"),
    # Polyglots: something else rides along, and is gone after re-encoding.
    _photo_ok("jpeg-with-zip-appended", lambda: images.jpeg() + images.zip_archive(),
              absent=(b"PK\x03\x04", b"payload.html")),
    _photo_ok("jpeg-with-html-appended", lambda: images.jpeg() + HTML,
              absent=(b"<script", b"<html")),
    _photo_ok("png-with-html-appended", lambda: images.png() + HTML, "image/png",
              absent=(b"<script",)),
    _photo_no("html-with-jpeg-header", "photo is not a valid JPEG",
              lambda: b"\xff\xd8\xff\xe0" + HTML),
    _photo_no("jpeg-header-then-zip", "photo is not a valid JPEG",
              lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + images.zip_archive()),
    # Wrong types, judged by content.
    _photo_no("gif", "it looks like a GIF", lambda: images.other_format("GIF"),
              filename="a.gif", content_type="image/gif"),
    _photo_no("gif-named-jpg", "it looks like a GIF", lambda: images.other_format("GIF")),
    _photo_no("bmp", "it looks like a BMP", lambda: images.other_format("BMP")),
    _photo_no("tiff", "it looks like a TIFF", lambda: images.other_format("TIFF")),
    _photo_no("svg-with-script", "it looks like XML or SVG", lambda: SVG, filename="a.svg",
              content_type="image/svg+xml"),
    _photo_no("pdf", "it looks like a PDF", lambda: PDF, filename="a.pdf",
              content_type="application/pdf"),
    _photo_no("html-named-jpg", "it looks like HTML", lambda: HTML),
    _photo_no("zip-named-jpg", "it looks like a ZIP", images.zip_archive),
    _photo_no("empty", "photo is empty", lambda: b""),
    # Broken images.
    _photo_no("truncated-jpeg", "photo is not a valid JPEG",
              lambda: images.truncated(images.jpeg(256, 256))),
    _photo_no("jpeg-header-only", "photo is not a valid JPEG",
              lambda: images.jpeg()[:20]),
    _photo_no("truncated-png", "photo is not a valid PNG",
              lambda: images.truncated(images.png(256, 256))),
    _photo_no("truncated-webp", "photo is not a valid WebP",
              lambda: images.truncated(images.webp(256, 256))),
    _photo_no("jpeg-two-frame-headers", "photo is not a valid JPEG",
              images.jpeg_with_two_frames),
    # Decompression bombs and size.
    _photo_no("png-bomb-30000x30000", "photo is 30000x30000 pixels; at most 40,000,000",
              images.png_bomb, content_type="image/png", filename="bomb.png"),
    _photo_no("png-7000x7000", "photo is 7000x7000 pixels",
              lambda: images.png_bomb(7000, 7000), content_type="image/png"),
    _photo_no("jpeg-claiming-65000x65000", "photo is 65000x65000 pixels",
              lambda: images.jpeg_claiming(65_000, 65_000)),
    _photo_no("over-10-mib", "at most 10,485,760", lambda: images.jpeg() + bytes(10 * MIB),
              status=413),
)
