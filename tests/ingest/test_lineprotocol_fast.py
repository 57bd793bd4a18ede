"""The generated encoders (`encode_with_key`, `encode_many`) against the reference and Point.

`_encode_reference` is the field-by-field loop the encoders replaced (and still fall back
to); Point is influxdb-client's. Every line must equal both, byte for byte, whatever the
values (finite floats take the fast path; ints, bools, float subclasses, NaN and
infinities the slow one) and whatever the order in which layouts follow one another.
"""

# Point's methods carry no annotations.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.lineprotocol import (
    SEQ_FIELD,
    _encode_reference,
    encode_many,
    encode_with_key,
    series_key,
)
from tests.ingest.test_lineprotocol import point_line, tricky_text

KEY = "traffic,device_id=tl-sudirman-02"
TS = 1_700_000_000_123_456_789
MANY = settings(max_examples=300, deadline=None)


class Sample(NamedTuple):
    """A point as the pipeline hands it over (a `Reading` has these fields, and more)."""

    values: Mapping[str, float]
    seq: int | None
    ts_ns: int


class FloatSubclass(float):
    """Not `float` itself (numpy's float64 is one): must take the reference's path."""


# Few names, so layouts repeat, collide with `seq`, and differ at the same size; some need
# escapes, and some would mean something to a format string or to Python source.
names = st.one_of(
    st.sampled_from(["level_cm", "pm25", "pm10", SEQ_FIELD, "a b", "x,=y", "%s", "{key}",
                     "'\"", "\\", "é"]),
    tricky_text,
)
values = st.one_of(
    st.floats(),  # NaN, infinities, -0.0, subnormals, huge and tiny values
    st.sampled_from([700.0, -0.0, 0.0, 1e-7, 1e16, 1e22, 0.1 + 0.2, 123456789012345678.0]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False).map(FloatSubclass),
)
# Mostly plain finite floats, as the decoder produces them: the fast path must be exercised.
decoded_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), values)
seqs = st.none() | st.integers(min_value=0, max_value=2**63 - 1)
timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1)
samples = st.builds(Sample, st.dictionaries(names, decoded_values, max_size=5), seqs,
                    timestamps)


@MANY
@given(st.dictionaries(names, values, max_size=6), seqs, timestamps)
def test_encode_with_key_equals_the_reference_and_point(
    fields: dict[str, float], seq: int | None, ts_ns: int
) -> None:
    key = series_key("m", {"device_id": "d"})
    line = encode_with_key(key, fields, seq, ts_ns)
    assert line == _encode_reference(key, fields, seq, ts_ns)
    assert line == point_line("m", {"device_id": "d"}, fields, seq, ts_ns)


@MANY
@given(st.lists(samples, max_size=12), tricky_text.filter(lambda text: text != ""))
def test_encode_many_equals_the_reference_point_by_point(points: list[Sample],
                                                          measurement: str) -> None:
    key = series_key("m" + measurement, {"kota": measurement})
    assert encode_many(key, points) == [
        _encode_reference(key, point.values, point.seq, point.ts_ns) for point in points
    ]


def test_encode_many_switches_between_layouts_of_the_same_size() -> None:
    points = [
        Sample({"pm25": 12.5, "pm10": 40.0}, 1, TS),
        Sample({"pm25": 13.0, "no2": 0.5}, 2, TS),  # same size, another name
        Sample({"pm10": 41.0, "pm25": 12.0}, 3, TS),  # the first layout, in another order
        Sample({"pm10": 41.0, "pm25": 12.0}, None, TS),  # the same names without seq
    ]
    assert encode_many(KEY, points) == [
        f"{KEY} pm10=40,pm25=12.5,seq=1i {TS}",
        f"{KEY} no2=0.5,pm25=13,seq=2i {TS}",
        f"{KEY} pm10=41,pm25=12,seq=3i {TS}",
        f"{KEY} pm10=41,pm25=12 {TS}",
    ]


def test_encode_many_lets_seq_override_a_value_of_that_name() -> None:
    points = [Sample({"seq": 9.0, "z": 1.0}, 3, TS), Sample({"q": 2.0, "z": 1.0}, 4, TS)]
    # The second has as many values as the first but no `seq` among them: its own layout.
    assert encode_many(KEY, points) == [f"{KEY} seq=3i,z=1 {TS}", f"{KEY} q=2,seq=4i,z=1 {TS}"]


def test_encode_many_converts_ints_and_leaves_out_non_finite_values() -> None:
    points = [
        Sample({"a": 1.5, "b": 2.0}, None, TS),
        Sample({"a": 7, "b": 2**60}, None, TS),  # ints: written as the floats they become
        Sample({"a": True, "b": float("inf")}, None, TS),
        Sample({"a": float("nan"), "b": -0.0}, None, TS),
    ]
    assert encode_many(KEY, points) == [
        f"{KEY} a=1.5,b=2 {TS}",
        f"{KEY} a=7,b=1.152921504606847e+18 {TS}",
        f"{KEY} a=1 {TS}",
        f"{KEY} b=-0 {TS}",
    ]


def test_encode_many_writes_an_empty_line_for_a_point_with_no_field_left() -> None:
    points = [Sample({"a": float("nan")}, None, TS), Sample({}, None, TS), Sample({}, 5, TS)]
    # One line per point, so a caller can keep the points' topics aligned with the lines.
    assert encode_many(KEY, points) == ["", "", f"{KEY} seq=5i {TS}"]


def test_names_are_written_as_text_never_read_as_a_format() -> None:
    fields = {"{key}": 1.0, "%s": 2.0, "{ts_ns}": 3.0, "'\"": 4.0}
    assert encode_with_key(KEY, fields, None, TS) == (
        f"{KEY} %s=2,'\"=4,{{key}}=1,{{ts_ns}}=3 {TS}"
    )
