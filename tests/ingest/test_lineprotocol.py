"""Our line protocol against influxdb-client's Point, its reference."""

# Point's methods carry no annotations.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from ingest.lineprotocol import encode, encode_with_key, series_key

TS = 1_700_000_000_123_456_789


def point_line(
    measurement: str,
    tags: Mapping[str, str],
    values: Mapping[str, float],
    seq: int | None,
    ts_ns: int,
) -> str:
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, number in values.items():
        point.field(key, float(number))
    if seq is not None:
        point.field("seq", seq)
    line: str = point.time(ts_ns, WritePrecision.NS).to_line_protocol()
    return line


# Names mix what devices could plausibly send with everything line protocol must escape.
tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from([*",= \n\r\t\"'\\#{}", "\U0001f30a", "é", "\u00a0"]),
        st.characters(codec="utf-8"),
    ),
    max_size=12,
)
numbers = st.one_of(
    st.floats(),  # includes NaN, infinities, -0.0, subnormals and huge values
    st.sampled_from([700.0, 1e-7, 1e16, 1e22, -0.0, 123456789012345678.0, 0.1 + 0.2]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@given(
    measurement=tricky_text,
    tags=st.dictionaries(tricky_text, tricky_text, max_size=5),
    values=st.dictionaries(tricky_text, numbers, max_size=5),
    seq=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    ts_ns=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_encode_equals_point_for_arbitrary_points(
    measurement: str,
    tags: dict[str, str],
    values: dict[str, float],
    seq: int | None,
    ts_ns: int,
) -> None:
    assume(measurement != "" and not measurement.startswith("#"))  # refused: see below
    assert encode(measurement, tags, values, seq, ts_ns) == point_line(
        measurement, tags, values, seq, ts_ns
    )


def test_encode_writes_a_typical_reading() -> None:
    line = encode(
        "water_level",
        {"device_id": "pa-manggarai-01", "river": "Ciliwung", "area": "Jakarta Selatan"},
        {"level_cm": 712.5, "battery_v": 3.7, "rssi_dbm": -71.0},
        42,
        TS,
    )
    assert line == (
        "water_level,area=Jakarta\\ Selatan,device_id=pa-manggarai-01,river=Ciliwung "
        "battery_v=3.7,level_cm=712.5,rssi_dbm=-71,seq=42i 1700000000123456789"
    )


def test_encode_formats_floats_as_point_does() -> None:
    line = encode("m", {}, {"a": 700.0, "b": 1e-7, "c": 1e16, "d": -0.0, "e": 5}, None, 1)
    assert line == "m a=700,b=1e-07,c=1e+16,d=-0,e=5 1"


def test_encode_escapes_names_and_tag_values() -> None:
    line = encode("air quality,x", {"k=1": 'a,b "c"\nd\\'}, {"f 1": 1.5}, None, 1)
    # Backslashes are not escaped; a trailing one gets a space so it escapes nothing.
    assert line == r'air\ quality\,x,k\=1=a\,b\ "c"\nd\  f\ 1=1.5 1'


def test_encode_leaves_out_empty_tags() -> None:
    assert encode("m", {"a": "", "": "x", "b": "y"}, {"f": 1.0}, None, 1) == "m,b=y f=1 1"


def test_encode_leaves_out_non_finite_values() -> None:
    line = encode("m", {}, {"f": float("nan"), "g": float("inf"), "h": 2.0}, None, 1)
    assert line == "m h=2 1"


def test_encode_returns_empty_line_when_no_field_remains() -> None:
    assert encode("m", {"a": "b"}, {"f": float("nan")}, None, 1) == ""


def test_encode_seq_overrides_a_value_of_the_same_name() -> None:
    assert encode("m", {}, {"seq": 9.0, "z": 1.0}, 3, 1) == "m seq=3i,z=1 1"


@pytest.mark.parametrize("measurement", ["", "#comment"])
def test_series_key_refuses_measurements_influxdb_cannot_read(measurement: str) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        series_key(measurement, {})


def test_encode_with_key_reuses_a_cached_series_key() -> None:
    key = series_key("traffic", {"device_id": "tl-sudirman-02"})
    assert encode_with_key(key, {"speed_kmh": 31.0}, None, TS) == (
        f"traffic,device_id=tl-sudirman-02 speed_kmh=31 {TS}"
    )
