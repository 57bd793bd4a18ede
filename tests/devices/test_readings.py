"""Reading models against SPEC section 1: every field, every way to be wrong, and Reading."""

import math
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from devices.kinds import Kind
from devices.readings import (
    NUMERIC_FIELDS,
    READING_MODELS,
    Reading,
    explain,
    to_reading,
    validate_reading,
)

# SPEC section 1 as a table, with the bounds of jakarta.md section 5 (copied here, not
# read from the models, so a changed bound fails a test): kind, field, low, high, required.
COMMON = [("battery_v", 0, 16, False), ("rssi_dbm", -150, 0, False),
          ("snr_db", -30, 30, False)]
FIELDS: dict[Kind, list[tuple[str, float, float, bool]]] = {
    Kind.WATER_LEVEL: [("level_cm", -400, 1200, True), *COMMON],
    Kind.AIR_QUALITY: [
        ("pm25", 0, 1000, False),
        ("pm10", 0, 1000, False),
        ("o3", 0, 1000, False),
        ("no2", 0, 3000, False),
        ("so2", 0, 1200, False),
        ("co", 0, 50000, False),
        ("hc", 0, 2000, False),
        ("temp_c", -10, 60, False),
        ("rh_pct", 0, 100, False),
        *COMMON,
    ],
    Kind.TRAFFIC: [
        ("speed_kmh", 0, 200, True),
        ("volume_vph", 0, 30000, False),
        ("occupancy_pct", 0, 100, False),
        *COMMON,
    ],
    # SPEC section 7: a camera's counts; at least one of them (checked below).
    Kind.CAMERA: [
        ("vehicles_per_min", 0, 2000, False),
        ("mean_speed_kmh", 0, 200, False),
        ("water_score", 0, 1, False),
        ("people", 0, 100000, False),
        *COMMON,
    ],
}
MINIMAL: dict[Kind, dict[str, Any]] = {
    Kind.WATER_LEVEL: {"level_cm": 712},
    Kind.AIR_QUALITY: {"pm25": 41.5},
    Kind.TRAFFIC: {"speed_kmh": 22},
    Kind.CAMERA: {"water_score": 0.12},
}
FULL: dict[Kind, dict[str, Any]] = {
    Kind.WATER_LEVEL: {"level_cm": 712.5},
    Kind.AIR_QUALITY: {
        "pm25": 41.5,
        "pm10": 70,
        "o3": 30.2,
        "no2": 40,
        "so2": 12,
        "co": 900,
        "hc": 20,
        "temp_c": 31.5,
        "rh_pct": 74,
    },
    Kind.TRAFFIC: {"speed_kmh": 22.5, "volume_vph": 1800, "occupancy_pct": 31},
    Kind.CAMERA: {"vehicles_per_min": 42, "mean_speed_kmh": 18.5, "water_score": 0.93,
                  "people": 7},
}
for _values in FULL.values():
    _values.update(
        {"ts": "2024-01-31T08:00:00+07:00", "seq": 42, "battery_v": 3.9, "rssi_dbm": -97,
         "snr_db": 7.5}
    )
TS_NS = 1_706_662_800 * 10**9  # 2024-01-31T08:00:00+07:00
RECEIVED_NS = 1_706_666_400 * 10**9  # an hour later: when Siaga got it


def reason_for(kind: Kind, payload: object) -> str:
    with pytest.raises(ValidationError) as caught:
        READING_MODELS[kind].model_validate(payload)
    return explain(caught.value)


def cases_per_field() -> list[Any]:
    """One case per kind, field and way to be wrong: (kind, payload, field, hint)."""
    cases = []
    for kind, fields in FIELDS.items():
        for field, low, high, _required in fields:
            # The rest of a valid reading, so this field is the only problem.
            base = {k: v for k, v in MINIMAL[kind].items() if k != field}
            wrongs = {
                "string": ("12", "must be a number, not string"),
                "bool": (True, "must be a number, not bool"),
                "null": (None, "must be a number, not null"),
                "array": ([1], "must be a number, not array"),
                "object": ({"v": 1}, "must be a number, not object"),
                "nan": (math.nan, "must be a finite number"),
                "inf": (math.inf, "must be a finite number"),
                "-inf": (-math.inf, "must be a finite number"),
                "below": (low - 0.5, f"must be >= {low}"),
                "above": (high + 0.5, f"must be <= {high}"),
            }
            for way, (value, hint) in wrongs.items():
                cases.append(
                    pytest.param(
                        kind, {**base, field: value}, field, hint, id=f"{kind}-{field}-{way}"
                    )
                )
    return cases


@pytest.mark.parametrize(("kind", "payload", "field", "hint"), cases_per_field())
def test_each_wrong_field_value_is_refused_with_a_reason_naming_the_field(
    kind: Kind, payload: dict[str, Any], field: str, hint: str
) -> None:
    reason = reason_for(kind, payload)
    assert reason.startswith(f"{field}: ")
    assert hint in reason
    assert ";" not in reason  # the only problem


@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, f) for kind, fields in FIELDS.items() for f, _, _, required in fields if required],
)
def test_a_missing_required_field_is_named(kind: Kind, field: str) -> None:
    assert reason_for(kind, {"seq": 1}) == f"{field}: required"


@pytest.mark.parametrize("payload", [{}, {"temp_c": 31, "rh_pct": 70, "battery_v": 3.7}])
def test_an_air_quality_reading_without_any_pollutant_names_them_all(
    payload: dict[str, Any],
) -> None:
    reason = reason_for(Kind.AIR_QUALITY, payload)
    assert reason == "at least one of pm25, pm10, o3, no2, so2, co, hc is required"


@pytest.mark.parametrize(
    ("seq", "hint"),
    [
        (-1, "must be >= 0"),
        (1.0, "must be an integer (got 1.0)"),
        (2.5, "must be an integer (got 2.5)"),
        (True, "must be an integer, not bool"),
        ("7", "must be an integer, not string"),
        (None, "must be an integer, not null"),
        (2**63, "must be <= 9223372036854775807"),
    ],
    ids=["negative", "float-integral", "float", "bool", "string", "null", "beyond-int64"],
)
def test_a_bad_seq_is_refused(seq: object, hint: str) -> None:
    reason = reason_for(Kind.WATER_LEVEL, {"level_cm": 1, "seq": seq})
    assert reason.startswith("seq: ")
    assert hint in reason


@pytest.mark.parametrize(
    ("ts", "hint"),
    [
        ("2024-01-31T08:00:00", "needs an offset such as Z or +07:00"),
        (1_706_662_800_000, "looks like milliseconds"),
        (True, "not bool"),
        (None, "not null"),
        ("1706662800", "must be a JSON number"),
        (0, "before 2000-01-01"),
    ],
    ids=["no-offset", "milliseconds", "bool", "null", "numeric-string", "unset-clock"],
)
def test_a_bad_ts_is_refused_with_the_timestamp_reason(ts: object, hint: str) -> None:
    reason = reason_for(Kind.TRAFFIC, {"speed_kmh": 30, "ts": ts})
    assert reason.startswith("ts: ")
    assert hint in reason


@pytest.mark.parametrize(
    ("payload", "hint"),
    [([{"level_cm": 1}], "not array"), ("712", "not string"), (None, "not null")],
)
def test_a_payload_that_is_not_an_object_is_refused(payload: object, hint: str) -> None:
    assert reason_for(Kind.WATER_LEVEL, payload) == f"reading: must be a JSON object, {hint}"


def test_several_problems_are_all_named_up_to_three() -> None:
    reason = reason_for(
        Kind.TRAFFIC, {"speed_kmh": -1, "volume_vph": "x", "seq": -1, "rssi_dbm": 5}
    )
    assert reason.count(";") == 3
    assert reason.endswith("and 1 more")


@pytest.mark.parametrize("kind", list(Kind))
def test_a_minimal_reading_of_every_kind_is_valid(kind: Kind) -> None:
    model = validate_reading(kind, MINIMAL[kind])
    reading = to_reading(model, kind, "dev-1", RECEIVED_NS)
    assert reading == Reading(
        kind, "dev-1", RECEIVED_NS, {k: float(v) for k, v in MINIMAL[kind].items()}, None
    )


@pytest.mark.parametrize("kind", list(Kind))
def test_a_full_reading_of_every_kind_stores_every_number_but_ts_and_seq(kind: Kind) -> None:
    model = validate_reading(kind, FULL[kind])
    reading = to_reading(model, kind, "dev-1", RECEIVED_NS)
    assert reading.ts_ns == TS_NS
    assert reading.seq == 42
    assert set(reading.values) == NUMERIC_FIELDS[kind]
    assert reading.values == {k: v for k, v in FULL[kind].items() if k not in ("ts", "seq")}


@pytest.mark.parametrize("kind", list(Kind))
def test_every_field_accepts_its_bounds_inclusive(kind: Kind) -> None:
    for field, low, high, _ in FIELDS[kind]:
        for value in (low, high):
            validate_reading(kind, {**MINIMAL[kind], field: value})


def test_stored_values_are_floats_even_when_sent_as_ints() -> None:
    reading = to_reading(
        validate_reading(Kind.TRAFFIC, {"speed_kmh": 40, "volume_vph": 1200}), Kind.TRAFFIC, "t", 0
    )
    assert all(type(value) is float for value in reading.values.values())


@pytest.mark.parametrize(
    ("ts", "expected_ns"),
    [
        (1_706_662_800, TS_NS),
        (1_706_662_800.25, TS_NS + 250_000_000),
        ("2024-01-31T01:00:00Z", TS_NS),
        ("2024-01-31T08:00:00.5+07:00", TS_NS + 500_000_000),
    ],
    ids=["epoch-int", "epoch-float", "rfc3339-utc", "rfc3339-wib"],
)
def test_ts_may_be_epoch_seconds_or_rfc3339(ts: object, expected_ns: int) -> None:
    model = validate_reading(Kind.WATER_LEVEL, {"level_cm": 500, "ts": ts})
    assert to_reading(model, Kind.WATER_LEVEL, "g", RECEIVED_NS).ts_ns == expected_ns


def test_a_reading_without_ts_is_stamped_with_the_time_of_receipt() -> None:
    model = validate_reading(Kind.WATER_LEVEL, {"level_cm": 500})
    assert to_reading(model, Kind.WATER_LEVEL, "g", RECEIVED_NS).ts_ns == RECEIVED_NS


def test_unknown_fields_are_counted_through_model_extra_but_never_stored() -> None:
    model = validate_reading(Kind.WATER_LEVEL, {"level_cm": 500, "firmware": "1.2", "speed_kmh": 3})
    assert model.model_extra == {"firmware": "1.2", "speed_kmh": 3}
    assert to_reading(model, Kind.WATER_LEVEL, "g", 0).values == {"level_cm": 500.0}


def test_ts_ns_in_a_payload_is_an_unknown_field_not_the_timestamp() -> None:
    model = validate_reading(Kind.WATER_LEVEL, {"level_cm": 500, "ts_ns": 5})
    assert model.ts_ns is None
    assert model.model_extra == {"ts_ns": 5}


def test_model_validate_accepts_what_orjson_decodes() -> None:
    payload = orjson.loads(b'{"level_cm": 812, "ts": "2024-01-31T08:00:00+07:00", "seq": 3}')
    model = READING_MODELS[Kind.WATER_LEVEL].model_validate(payload)
    assert to_reading(model, Kind.WATER_LEVEL, "g", 0) == Reading(
        Kind.WATER_LEVEL, "g", TS_NS, {"level_cm": 812.0}, 3
    )


def test_models_are_frozen() -> None:
    model = validate_reading(Kind.WATER_LEVEL, {"level_cm": 500})
    with pytest.raises(ValidationError):
        model.seq = 1


def test_numeric_fields_match_the_spec_table() -> None:
    assert {kind: {f for f, *_ in fields} for kind, fields in FIELDS.items()} == {
        kind: set(fields) for kind, fields in NUMERIC_FIELDS.items()
    }


def test_a_reason_stays_short_however_large_the_value() -> None:
    reason = reason_for(Kind.WATER_LEVEL, {"level_cm": 10**5000})
    assert reason == "level_cm: must be a number a double can hold (got a number too long to show)"


def test_a_camera_reading_needs_at_least_one_count() -> None:
    assert reason_for(Kind.CAMERA, {"ts": 1_706_662_800, "battery_v": 12.1}) == (
        "at least one of vehicles_per_min, mean_speed_kmh, water_score, people is required")
    assert reason_for(Kind.CAMERA, {"water_score": 1.2}) == "water_score: must be <= 1 (got 1.2)"
    assert reason_for(Kind.CAMERA, {"vehicles_per_min": -1}) == (
        "vehicles_per_min: must be >= 0 (got -1)")
    assert reason_for(Kind.CAMERA, {"water_score": "0.9"}) == (
        "water_score: must be a number, not string")
