"""`encode_plain` (a batch's values made text by orjson) against `encode_many` (Point's bytes).

The two need not agree byte for byte: orjson writes 700 as `700.0` and 1e-07 as `1e-7`,
and keeps the values' order. They must agree as points, which is what InfluxDB stores:
the same fields with the same float (or `seq` integer) values, at the same time, in the
same order of lines. Whatever a batch holds, including what only `encode_many` may write
(NaN, bools, huge ints, float subclasses, a point with no field).
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from devices.readings import NUMERIC_FIELDS
from ingest.lineprotocol import (
    SEQ_FIELD,
    encode_many,
    encode_plain,
    encode_plain_keyed,
    plain_names,
)
from tests.ingest.test_lineprotocol_fast import FloatSubclass, Sample

KEY = "water_level,device_id=manggarai,kota=Jakarta\\ Selatan"
KEY2 = "air_quality,device_id=bundaran-hi,kota=Jakarta\\ Pusat"
TS = 1_700_000_000_123_456_789
MANY = settings(max_examples=300, deadline=None)

Parsed = tuple[dict[str, float | int], int] | None


def parse(line: str, key: str = KEY) -> Parsed:
    """A line of `key`'s as InfluxDB reads it: fields (ints for `i`), time. None: no line."""
    if line == "":
        return None
    assert line.startswith(key + " ")
    fields, _, ts = line[len(key) + 1:].rpartition(" ")
    parsed: dict[str, float | int] = {}
    for field in fields.split(","):
        name, _, text = field.partition("=")
        assert name not in parsed
        parsed[name] = int(text[:-1]) if text.endswith("i") else float(text)
    return parsed, int(ts)


plain = st.one_of(st.sampled_from(sorted(set().union(*NUMERIC_FIELDS.values()))),
                  st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
                      lambda name: name != SEQ_FIELD))
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # mostly: as the decoder makes them
    st.sampled_from([700.0, -0.0, 1e-7, 1e16, 1e22, 0.1 + 0.2, 123456789012345678.0,
                     5e-324, 1.7976931348623157e308]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
anything = st.one_of(numbers, st.floats(), st.booleans(), st.integers(),
                     st.floats(allow_nan=False).map(FloatSubclass))
seqs = st.none() | st.integers(min_value=0, max_value=2**63 - 1)
timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def batches(values: st.SearchStrategy[object], fields: int = 0
            ) -> st.SearchStrategy[list[Sample]]:
    return st.lists(st.builds(Sample, st.dictionaries(plain, values, min_size=fields,
                                                      max_size=5), seqs, timestamps),
                    min_size=1, max_size=12)


@MANY
@given(batches(numbers, fields=1))  # each point a field at least: orjson's path every time
@example([Sample({"level_cm": 700.0}, 1, TS), Sample({"level_cm": 1e16}, None, TS)])
def test_numbers_make_the_same_points_as_encode_many(points: list[Sample]) -> None:
    assert [parse(line) for line in encode_plain(KEY, points)] == [
        parse(line) for line in encode_many(KEY, points)]


@MANY
@given(batches(anything))  # often encode_many's path
def test_anything_else_makes_the_same_points_too(points: list[Sample]) -> None:
    assert [parse(line) for line in encode_plain(KEY, points)] == [
        parse(line) for line in encode_many(KEY, points)]


def test_finite_numbers_take_orjsons_text() -> None:
    points = [Sample({"level_cm": 700.0, "rate": 1e-7}, 3, TS), Sample({"level_cm": 5}, None, TS)]
    assert encode_plain(KEY, points) == [f"{KEY} level_cm=700.0,rate=1e-7,seq=3i {TS}",
                                         f"{KEY} level_cm=5 {TS}"]


def test_a_batch_with_anything_but_numbers_is_encode_manys_byte_for_byte() -> None:
    for odd in (float("nan"), float("inf"), True, 2**64, FloatSubclass(1.5)):
        points: list[Sample] = [Sample({"level_cm": 700.0}, 1, TS), Sample({"x": odd}, 2, TS)]
        assert encode_plain(KEY, points) == encode_many(KEY, points)
    empty: list[Sample] = [Sample({"level_cm": 700.0}, 1, TS), Sample({}, 2, TS)]
    assert encode_plain(KEY, empty) == encode_many(KEY, empty)


def test_plain_names_are_those_needing_no_escape_and_not_seq() -> None:
    assert all(plain_names(names) for names in NUMERIC_FIELDS.values())
    for name in ("a b", "x,=y", "é", '"', "a:b", "{}", SEQ_FIELD, "", "1a"):
        assert not plain_names(["level_cm", name]), name


def keyed(points: list[Sample], data: st.DataObject) -> list[str]:
    return data.draw(st.lists(st.sampled_from([KEY, KEY2]), min_size=len(points),
                              max_size=len(points)))


def parsed_each(keys: list[str], lines: list[str]) -> list[Parsed]:
    assert len(lines) == len(keys)  # a line a point, in order: each under its own key
    return [parse(line, key) for key, line in zip(keys, lines, strict=True)]


@MANY
# Finite numbers (orjson's path) half the time, anything (often encode_many's) the other.
@given(st.one_of(batches(numbers, fields=1), batches(anything)), st.data())
def test_points_of_several_series_make_each_its_own_point(points: list[Sample],
                                                          data: st.DataObject) -> None:
    keys = keyed(points, data)
    assert parsed_each(keys, encode_plain_keyed(keys, points)) == [
        parse(line, key) for key, point in zip(keys, points, strict=True)
        for line in encode_many(key, [point])]
