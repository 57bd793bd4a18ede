"""A resident's report as sent (GeoReport v2 POST Service Request fields) -> a `NewReport`.

The HTTP layer decodes the body (UTF-8, strictly) and checks `api_key` and `jurisdiction_id`;
this module judges every other field. It accepts exactly the fields GeoReport v2 defines, as
FixMyStreet sends them as a client (`attribute[CODE]`, `media_url`), plus Siaga's
`requested_datetime` for apps that queue reports offline. Unknown fields are ignored, as
GeoReport servers do, but a field given twice is refused: which of two `lat` values a server
reads is exactly what parameter-pollution attacks play on. Every refusal is a `ReportRefused`
whose message names the field and what to fix, because an app's developer reads it.

Text stays text: HTML, script or SQL-looking words are kept literally (nothing renders them
as HTML, and storage binds parameters), but control characters are refused, since they
corrupt logs, terminals and CSV exports and have no place in a resident's words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from reports.categories import Attribute, Category
from reports.errors import ReportRefused
from reports.model import Contact, NewReport
from reports.settings import DESCRIPTION_MAX_CHARS, JurisdictionSettings

FIELD_MAX_CHARS: Final = 4000  # no GeoReport field needs more than the description does
SHORT_MAX_CHARS: Final = 200  # names, e-mail, phone, ids: far beyond any real one
MEDIA_URL_MAX_CHARS: Final = 2000  # the practical URL limit of browsers and proxies
NUMBER_MAX_CHARS: Final = 32  # "-6.123456789012345" and then some
DATETIME_MAX_CHARS: Final = 40  # "2020-01-01T06:00:00.123456+07:00" is 32
# GeoReport defines 16 fields; a category adds a few attributes. A form of hundreds of fields
# is an attack on the parser, not a report.
MAX_FIELDS: Final = 100
SHOWN_MAX_CHARS: Final = 40  # how much of a refused value a message repeats
NAME_MAX_CHARS: Final = 100  # the longest GeoReport name is 18; attribute codes are short

# Fields a report reads; `api_key` and `jurisdiction_id` are the caller's, but a repetition
# of them is refused here too (the caller reads them with `single_values`).
CONTACT_FIELDS: Final = ("email", "first_name", "last_name", "phone", "device_id", "account_id")
KNOWN_FIELDS: Final = frozenset({
    "service_code", "lat", "long", "address_string", "address_id", "description",
    "media_url", "requested_datetime", "api_key", "jurisdiction_id", *CONTACT_FIELDS,
})
ATTRIBUTE_PREFIX: Final = "attribute["
_ATTRIBUTE_NAME: Final = re.compile(r"attribute\[([A-Za-z0-9_-]{1,64})\]")
# Bounds of number attributes. The category model has none yet; kept here until it does.
ATTRIBUTE_BOUNDS: Final[Mapping[str, tuple[float, float]]] = {
    "kedalaman_cm": (0.0, 1000.0),  # 10 m of water is beyond any flood Jakarta has seen
}

# A plain decimal number in ASCII. Python's float() also takes "nan", "inf", "1_000" and
# Unicode digits (fullwidth "6.2"), none of which is a coordinate.
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
# Cc (C0, DEL, C1) and lone surrogates (a str from `surrogateescape`, never valid text).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_BUT_LINES: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# How far ahead of Siaga's clock a resident's or an officer's time may be: a phone's clock
# a few minutes fast is common, an hour is a wrong time zone.
MAX_FUTURE_S: Final = 300.0


def parse_report(fields: Sequence[tuple[str, str]], *, categories: Mapping[str, Category],
                 jurisdiction: JurisdictionSettings, received_ns: int, key_name: str,
                 photo: str | None = None, max_future_s: float = MAX_FUTURE_S) -> NewReport:
    """The report these form fields describe, or `ReportRefused` naming what to fix."""
    values = single_values(fields)
    category = _category(values.get("service_code"), categories)
    lat = _coordinate(values, "lat", jurisdiction)
    lon = _coordinate(values, "long", jurisdiction)
    return NewReport(
        service_code=category.code,
        lat=lat,
        lon=lon,
        description=_description(values.get("description")),
        requested_ns=_requested_ns(values.get("requested_datetime"), received_ns,
                                   max_future_s),
        received_ns=received_ns,
        key_name=key_name,
        address=_text(values, "address_string", FIELD_MAX_CHARS, lines=True),
        attributes=_attributes(values, category),
        contact=_contact(values),
        photo=photo,
        media_url=_media_url(values.get("media_url")),
    )


def single_values(fields: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Every field by name; refused when one Siaga reads is given twice, or any is huge."""
    if len(fields) > MAX_FIELDS:
        raise ReportRefused(f"the form has {len(fields):,} fields; at most {MAX_FIELDS}")
    values: dict[str, str] = {}
    for name, value in fields:
        if len(name) > NAME_MAX_CHARS:
            raise ReportRefused(f"a field's name is longer than {NAME_MAX_CHARS} characters "
                                f"({len(name):,}): {_shown(name)}")
        if len(value) > FIELD_MAX_CHARS and name != "description":
            # The description has its own limit, counted after its line ends are normalised.
            raise ReportRefused(f"{_shown(name, quote=False)} is longer than "
                                f"{FIELD_MAX_CHARS} characters ({len(value):,})")
        if name in values and _read(name):
            raise ReportRefused(f"{_shown(name, quote=False)} is given twice: send it once")
        values.setdefault(name, value)
    return values


def _read(name: str) -> bool:
    return name in KNOWN_FIELDS or name.startswith(ATTRIBUTE_PREFIX)


def _category(code: str | None, categories: Mapping[str, Category]) -> Category:
    choices = ", ".join(categories)
    if code is None or not code.strip():
        raise ReportRefused(f"service_code is required: use one of {choices}")
    category = categories.get(code.strip())
    if category is None:
        raise ReportRefused(f"service_code {_shown(code)} is not a category: "
                            f"use one of {choices}")
    return category


def _coordinate(values: Mapping[str, str], name: str,
                jurisdiction: JurisdictionSettings) -> float:
    text = values.get(name, "").strip()
    if not text:
        raise ReportRefused(f"{name} is required: Siaga needs the place as lat and long "
                            "(an address alone is not enough), e.g. lat=-6.2 long=106.8")
    number = _number(name, text, "a decimal number with a point, e.g. -6.2")
    low, high = ((jurisdiction.south, jurisdiction.north) if name == "lat"
                 else (jurisdiction.west, jurisdiction.east))
    if not low <= number <= high:
        raise ReportRefused(f"{name} {number:g} is outside the jurisdiction "
                            f"({jurisdiction.id}: lat {jurisdiction.south:g}.."
                            f"{jurisdiction.north:g}, long {jurisdiction.west:g}.."
                            f"{jurisdiction.east:g})")
    return number


def _number(name: str, text: str, example: str) -> float:
    if len(text) > NUMBER_MAX_CHARS or not _NUMBER.fullmatch(text):
        raise ReportRefused(f"{name} {_shown(text)} is not a number: use {example}")
    number = float(text)
    if not math.isfinite(number):  # 1e309 matches the pattern and overflows to inf
        raise ReportRefused(f"{name} {_shown(text)} is not a finite number: use {example}")
    return number


def _description(value: str | None) -> str:
    if value is None:
        return ""  # GeoReport: optional
    text = _lines(value).strip()
    if len(text) > DESCRIPTION_MAX_CHARS:
        raise ReportRefused(f"description is longer than {DESCRIPTION_MAX_CHARS} characters "
                            f"({len(text):,})")
    _refuse_control("description", text, lines=True)
    return text


def _text(values: Mapping[str, str], name: str, max_chars: int, *,
          lines: bool = False) -> str | None:
    """An optional text field, stripped; empty is absent (clients send unset fields empty)."""
    value = values.get(name)
    if value is None:
        return None
    text = _lines(value).strip() if lines else value.strip()
    if not text:
        return None
    if len(text) > max_chars:
        raise ReportRefused(f"{name} is longer than {max_chars} characters ({len(text):,})")
    _refuse_control(name, text, lines=lines)
    return text


def _lines(value: str) -> str:
    # Browsers send a textarea's line ends as CRLF, old Macs CR; one convention is kept.
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _refuse_control(name: str, text: str, *, lines: bool) -> None:
    found = (_CONTROL_BUT_LINES if lines else _CONTROL).search(text)
    if found is None:
        return
    character = found.group()
    if "\ud800" <= character <= "\udfff":
        raise ReportRefused(f"{name} is not valid text (a lone surrogate, U+{ord(character):04X}"
                            "): send it as UTF-8")
    allowed = "; line breaks and tabs are allowed" if lines else ""
    raise ReportRefused(f"{name} holds a control character (U+{ord(character):04X} at "
                        f"position {found.start()}): remove it{allowed}")


def _contact(values: Mapping[str, str]) -> Contact:
    texts = {name: _text(values, name, SHORT_MAX_CHARS) for name in CONTACT_FIELDS}
    email = texts["email"]
    if email is not None and not _EMAIL.fullmatch(email):
        raise ReportRefused(f"email {_shown(email)} does not look like an e-mail address: "
                            "use name@example.org, or leave it out")
    return Contact(**texts)


def _attributes(values: Mapping[str, str], category: Category) -> dict[str, str]:
    allowed = {attribute.code: attribute for attribute in category.attributes}
    result: dict[str, str] = {}
    for name, value in values.items():
        if not name.startswith(ATTRIBUTE_PREFIX):
            continue
        match = _ATTRIBUTE_NAME.fullmatch(name)
        attribute = allowed.get(match.group(1)) if match else None
        if attribute is None:
            raise ReportRefused(f"{_shown(name, quote=False)} is not an attribute of "
                                f"{category.code}: {_allowed(category)}")
        text = _attribute_value(name, value.strip(), attribute)
        if text:  # FixMyStreet sends unset optional attributes as empty fields
            result[attribute.code] = text
    for attribute in category.attributes:
        if attribute.required and attribute.code not in result:
            raise ReportRefused(f"attribute[{attribute.code}] is required for "
                                f"{category.code}: {attribute.description}")
    return result


def _allowed(category: Category) -> str:
    if not category.attributes:
        return "it has no attributes"
    codes = ", ".join(f"attribute[{attribute.code}]" for attribute in category.attributes)
    return f"use {codes}"


def _attribute_value(name: str, text: str, attribute: Attribute) -> str:
    if not text:
        return text
    if attribute.datatype == "number":
        number = _number(name, text, f"a number ({attribute.description})")
        low, high = ATTRIBUTE_BOUNDS.get(attribute.code, (-math.inf, math.inf))
        if not low <= number <= high:
            raise ReportRefused(f"{name} {number:g} is out of range: use {low:g}..{high:g} "
                                f"({attribute.description})")
        return text
    if attribute.datatype == "datetime":
        _datetime_ns(name, text)
        return text
    _refuse_control(name, text, lines=attribute.datatype == "text")
    return text


def _requested_ns(value: str | None, received_ns: int, max_future_s: float) -> int:
    if value is None or not value.strip():
        return received_ns
    requested_ns = _datetime_ns("requested_datetime", value.strip())
    refuse_future(f"requested_datetime {_shown(value)}", requested_ns, received_ns,
                  max_future_s)
    return requested_ns


def refuse_future(what: str, at_ns: int, now_ns: int,
                  max_future_s: float = MAX_FUTURE_S) -> None:
    """`ReportRefused` naming `what` when `at_ns` is more than `max_future_s` after now."""
    ahead_s = (at_ns - now_ns) / 1e9
    if ahead_s > max_future_s:
        raise ReportRefused(f"{what} is {ahead_s:,.0f} s in the future (at most "
                            f"{max_future_s:g} s): check the device's clock")


def _datetime_ns(name: str, text: str) -> int:
    example = "ISO 8601 with an offset, e.g. 2020-01-01T06:00:00+07:00"
    try:
        if len(text) > DATETIME_MAX_CHARS or not text.isascii():
            raise ValueError(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReportRefused(f"{name} {_shown(text)} is not a date and time: use {example}"
                            ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ReportRefused(f"{name} {_shown(text)} has no UTC offset: use {example}")
    if moment < _EPOCH:
        raise ReportRefused(f"{name} {_shown(text)} is before 1970: use {example}")
    elapsed = moment - _EPOCH  # exact integer arithmetic: no float rounding of nanoseconds
    return ((elapsed.days * 86_400 + elapsed.seconds) * 1_000_000
            + elapsed.microseconds) * 1_000


def _media_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    url = value.strip()
    if len(url) > MEDIA_URL_MAX_CHARS:
        raise ReportRefused(f"media_url is longer than {MEDIA_URL_MAX_CHARS} characters "
                            f"({len(url):,})")
    try:
        parts = urlsplit(url)
        valid = (parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
                 and not _CONTROL.search(url) and " " not in url)
    except ValueError:  # e.g. a bracketed host that is not an IPv6 address
        valid = False
    if not valid:
        raise ReportRefused(f"media_url {_shown(url)} is not an http(s) URL: use "
                            "https://host/path, or send the photo as the `media` file")
    return url


def _shown(value: str, *, quote: bool = True) -> str:
    """A refused value as a message repeats it: short, with control characters escaped."""
    short = value if len(value) <= SHOWN_MAX_CHARS else value[:SHOWN_MAX_CHARS] + "..."
    shown = repr(short)  # escapes control characters and lone surrogates
    return shown if quote else shown[1:-1]
