"""Intake: GeoReport v2 form fields become a NewReport, or a refusal naming what to fix."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from reports.categories import DEFAULT_CATEGORIES, Attribute, Category
from reports.errors import ReportRefused
from reports.intake import parse_report, single_values
from reports.model import Contact, NewReport
from reports.settings import JurisdictionSettings
from tests.reports.hostile import BASE, FORM_CASES, FormCase, decode_form

CATEGORIES = {category.code: category for category in DEFAULT_CATEGORIES}
JAKARTA = JurisdictionSettings()
NOW_NS = 1_765_000_000_000_000_000  # 2025-12-06, a fixed "received" time
S = 1_000_000_000


def parse(fields: Sequence[tuple[str, str]], **overrides: object) -> NewReport:
    options: dict[str, object] = {"categories": CATEGORIES, "jurisdiction": JAKARTA,
                                  "received_ns": NOW_NS, "key_name": "qlue"}
    options.update(overrides)
    return parse_report(fields, **options)  # type: ignore[arg-type]


def refusal(fields: Sequence[tuple[str, str]], **overrides: object) -> str:
    with pytest.raises(ReportRefused) as caught:
        parse(fields, **overrides)
    return str(caught.value)


def with_fields(**changes: str) -> list[tuple[str, str]]:
    fields = [(name, changes.pop(name, value)) for name, value in BASE]
    return fields + list(changes.items())


@pytest.mark.parametrize("case", FORM_CASES, ids=lambda case: case.name)
def test_hostile_form_gets_its_expected_outcome(case: FormCase) -> None:
    body = case.body("the-key")
    if case.raw is not None:  # refused while decoding, before intake: check that it is
        with pytest.raises(UnicodeDecodeError):
            decode_form(body)
        return
    fields = decode_form(body)
    assert fields == [("api_key", "the-key"), *case.fields] or fields == list(case.fields)
    if case.expected == "accepted":
        report = parse(fields)
        for name, value in case.kept.items():
            assert getattr(report, name) == value, name
    else:
        assert case.reason in refusal(fields)


def test_a_fixmystreet_post_becomes_a_report() -> None:
    # The fields as FixMyStreet's Open311 client sends them: its description layout, an
    # empty last_name, an attribute of the category, a photo elsewhere.
    fields = [
        ("jurisdiction_id", "jakarta.go.id"), ("api_key", "k"),
        ("service_code", "banjir"), ("lat", "-6.2146"), ("long", "106.8451"),
        ("email", "budi@example.org"), ("first_name", "Budi"), ("last_name", ""),
        ("phone", "+62 812 0000 0000"),
        ("description", "title: Banjir\n\ndetail: Air 40 cm\n\nurl: https://fms.example/1\n\n"
                        "Submitted via FixMyStreet\n"),
        ("attribute[kedalaman_cm]", "40"),
        ("media_url", "https://fms.example/photo/1.0.jpeg"),
    ]
    report = parse(fields)
    assert report == NewReport(
        service_code="banjir", lat=-6.2146, lon=106.8451,
        description="title: Banjir\n\ndetail: Air 40 cm\n\nurl: https://fms.example/1\n\n"
                    "Submitted via FixMyStreet",
        requested_ns=NOW_NS, received_ns=NOW_NS, key_name="qlue",
        attributes={"kedalaman_cm": "40"},
        contact=Contact(email="budi@example.org", first_name="Budi", phone="+62 812 0000 0000"),
        media_url="https://fms.example/photo/1.0.jpeg")


def test_every_contact_field_and_the_address_are_kept() -> None:
    report = parse(with_fields(first_name=" Siti ", last_name="Aminah", device_id="dev-1",
                               account_id="acc-9", address_string="Jl. Tambak No. 1"))
    assert report.contact == Contact(email="warga@example.org", first_name="Siti",
                                     last_name="Aminah", device_id="dev-1",
                                     account_id="acc-9")
    assert report.address == "Jl. Tambak No. 1"


def test_the_photo_name_is_carried_into_the_report() -> None:
    name = "a" * 64 + ".jpg"
    assert parse(BASE, photo=name).photo == name


def test_a_missing_description_is_empty_and_a_given_one_stripped() -> None:
    assert parse([f for f in BASE if f[0] != "description"]).description == ""
    assert parse(with_fields(description="  banjir lagi \n")).description == "banjir lagi"


def test_an_unknown_category_names_every_choice() -> None:
    message = refusal(with_fields(service_code="x"))
    assert message == ("service_code 'x' is not a category: use one of banjir, macet, "
                       "jalan-rusak, sampah, pohon, parkir-liar, gangguan-ketenteraman, "
                       "pelanggaran-perda, kriminalitas, pelayanan-publik, lainnya")


def test_a_place_outside_names_the_jurisdiction_and_its_bounds() -> None:
    assert refusal(with_fields(lat="-6.5")) == (
        "lat -6.5 is outside the jurisdiction (jakarta.go.id: lat -6.4..-5.1, "
        "long 106.35..107)")
    bandung = JurisdictionSettings(id="bandung.go.id", south=-7.0, west=107.5, north=-6.8,
                                   east=107.8)
    assert "long 106.846 is outside the jurisdiction (bandung.go.id" in refusal(
        with_fields(lat="-6.9"), jurisdiction=bandung)


def test_the_edges_of_the_jurisdiction_are_inside() -> None:
    report = parse(with_fields(lat="-6.40", long="107.0"))
    assert (report.lat, report.lon) == (-6.4, 107.0)


def test_a_description_refusal_counts_the_characters() -> None:
    assert refusal(with_fields(description="d" * 4532)) == (
        "description is longer than 4000 characters (4,532)")


def test_a_lone_surrogate_is_refused_as_invalid_text() -> None:
    # A str decoded with surrogateescape carries these; UTF-8 cannot encode them.
    assert "description is not valid text (a lone surrogate, U+DCFF)" in refusal(
        with_fields(description="banjir \udcff"))
    assert "not valid text" in refusal(with_fields(first_name="\ud800"))


def test_a_refused_value_is_shown_short_and_escaped() -> None:
    message = refusal(with_fields(service_code="\x1b[31m" + "x" * 500))
    assert "'\\x1b[31m" in message and "x" * 41 not in message and "\x1b" not in message


def test_requested_datetime_defaults_to_the_time_received() -> None:
    assert parse(BASE).requested_ns == NOW_NS


def test_requested_datetime_keeps_microseconds_exactly() -> None:
    report = parse(with_fields(requested_datetime="2020-01-01T06:00:00.123456+07:00"))
    assert report.requested_ns == 1_577_833_200_123_456_000


def test_requested_datetime_takes_z_for_utc() -> None:
    report = parse(with_fields(requested_datetime="2020-01-01T00:00:00Z"))
    assert report.requested_ns == 1_577_836_800 * S


def test_requested_datetime_may_be_a_little_ahead_but_not_more() -> None:
    from datetime import UTC, datetime

    def at(offset_s: int) -> str:
        return datetime.fromtimestamp(NOW_NS // S + offset_s, UTC).isoformat()

    assert parse(with_fields(requested_datetime=at(300))).requested_ns == NOW_NS + 300 * S
    message = refusal(with_fields(requested_datetime=at(301)))
    assert "is 301 s in the future (at most 300 s): check the device's clock" in message
    later = parse(with_fields(requested_datetime=at(3600)), max_future_s=3600)
    assert later.requested_ns == NOW_NS + 3600 * S


def test_requested_datetime_before_1970_is_refused() -> None:
    assert "is before 1970" in refusal(
        with_fields(requested_datetime="1969-12-31T23:59:59+00:00"))


def test_a_required_attribute_must_be_given() -> None:
    gauge = Category("genangan", "Genangan", "Puddle", "", "BPBD", timedelta(hours=1), "x",
                     (Attribute("kedalaman_cm", "number", "Kedalaman (cm)", required=True),))
    categories = {"genangan": gauge}
    message = refusal(with_fields(service_code="genangan"), categories=categories)
    assert message == ("attribute[kedalaman_cm] is required for genangan: Kedalaman (cm)")
    fields = with_fields(service_code="genangan", **{"attribute[kedalaman_cm]": "15"})
    assert parse(fields, categories=categories).attributes == {"kedalaman_cm": "15"}


def test_an_empty_attribute_is_left_out() -> None:
    fields = with_fields(**{"attribute[kedalaman_cm]": ""})
    assert parse(fields).attributes == {}


def test_unknown_fields_are_ignored_and_repeats_of_them_keep_the_first() -> None:
    values = single_values([("x", "1"), ("lat", "-6.2"), ("x", "2")])
    assert values == {"x": "1", "lat": "-6.2"}


def test_api_key_and_jurisdiction_id_are_the_callers_but_not_twice() -> None:
    assert parse([("jurisdiction_id", "jakarta.go.id"), *BASE]).service_code == "banjir"
    assert refusal([("jurisdiction_id", "a"), ("jurisdiction_id", "b"), *BASE]) == (
        "jurisdiction_id is given twice: send it once")
