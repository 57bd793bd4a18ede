"""SenML (RFC 8428) packs on a device's telemetry topic: resolved, mapped by name and unit,
and validated as Siaga's own readings by the decoder.

The RFC_* fixtures are the JSON examples of RFC 8428 section 5.1, copied record for record
(only the line breaks and indentation differ); each test says how it maps onto a device of
Siaga's, and where an example needs a record added to be a reading at all (an air-quality
reading needs a pollutant) the added record is shown apart from the RFC's.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devices.kinds import Kind
from devices.registry import Device, Registry
from devices.topics import TopicScheme
from ingest.decode import Decoded, Decoder
from ingest.senml import SenmlRefused, looks_like_senml, resolve, to_items

NOW_S = 1_700_000_000
NOW_NS = NOW_S * 10**9
REGISTRY = Registry(Device.model_validate(entry) for entry in [
    {"id": "pos-uji", "kind": "water-level", "name": "Pos Uji", "lat": -6.2, "lon": 106.8},
    {"id": "udara", "kind": "air-quality", "name": "Udara", "lat": -6.2, "lon": 106.8},
    {"id": "jalan", "kind": "traffic", "name": "Jalan", "lat": -6.2, "lon": 106.8},
])
GAUGE = "siaga/water-level/pos-uji/telemetry"
AIR = "siaga/air-quality/udara/telemetry"
ROAD = "siaga/traffic/jalan/telemetry"

# RFC 8428 section 5.1.1, "Single Data Point".
RFC_SINGLE = """[
  {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
]"""
# RFC 8428 section 5.1.2, "Multiple Data Points", the first example.
RFC_MULTIPLE_NOW = """[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]"""
# RFC 8428 section 5.1.2, the example with a base time: current at Tue Jun 8 18:01:16.001
# UTC 2010 and at each second for the previous five (the RFC's own bn lacks a digit).
RFC_MULTIPLE_WITH_TIME = """[
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4},
  {"n":"current","t":-2,"v":1.5},
  {"n":"current","t":-1,"v":1.6},
  {"n":"current","v":1.7}
]"""
# RFC 8428 section 5.1.3, "Multiple Measurements": humidity, position and battery.
RFC_MULTIPLE_MEASUREMENTS = """[
  {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
   "bu":"%RH","v":20},
  {"u":"lon","v":24.30621},
  {"u":"lat","v":60.07965},
  {"t":60,"v":20.3},
  {"u":"lon","t":60,"v":24.30622},
  {"u":"lat","t":60,"v":60.07965},
  {"t":120,"v":20.7},
  {"u":"lon","t":120,"v":24.30623},
  {"u":"lat","t":120,"v":60.07966},
  {"u":"%EL","t":150,"v":98},
  {"t":180,"v":21.2},
  {"u":"lon","t":180,"v":24.30628},
  {"u":"lat","t":180,"v":60.07967}
]"""
# RFC 8428 section 5.1.4, "Resolved Data": the same pack resolved.
RFC_RESOLVED = """[
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
   "v":20},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
   "v":24.30621},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
   "v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
   "v":20.3},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
   "v":24.30622},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
   "v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
   "v":20.7},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
   "v":24.30623},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
   "v":60.07966},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
   "v":98},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
   "v":21.2},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
   "v":24.30628},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
   "v":60.07967}
]"""
# RFC 8428 section 5.1.5, "Multiple Data Types".
RFC_DATA_TYPES = """[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
  {"n":"label","vs":"Machine Room"},
  {"n":"open","vb":false},
  {"n":"nfc-reader","vd":"aGkgCg"}
]"""
# RFC 8428 section 5.1.6, "Collection of Resources": two devices' temperature and humidity
# (the last record takes the third's base name and the first's base time).
RFC_COLLECTION = """[
  {"bn":"2001:db8::2/","bt":1.320078429e+09,
   "n":"temperature","u":"Cel","v":25.2},
  {"n":"humidity","u":"%RH","v":30},
  {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
  {"n":"humidity","u":"%RH","v":67}
]"""
# RFC 8428 section 5.1.7, "Setting an Actuator": a record of base fields only.
RFC_ACTUATOR = """[
  {"bn":"urn:dev:ow:10e2073a01080063:"},
  {"n":"temp","u":"Cel","v":23.1},
  {"n":"heat","u":"/","v":1},
  {"n":"fan","u":"/","v":0}
]"""


def with_records(rfc: str, *records: dict[str, Any]) -> bytes:
    """An RFC example with records of Siaga's own added at its end."""
    return orjson.dumps([*orjson.loads(rfc), *records])


def decode(topic: str, payload: bytes | str) -> Decoded:
    out = Decoded()
    body = payload.encode() if isinstance(payload, str) else payload
    Decoder(REGISTRY, TopicScheme("siaga")).decode(topic, body, NOW_NS, out)
    return out


def test_rfc_single_data_point_of_an_unknown_name_is_no_reading_and_says_so() -> None:
    # The 1-wire sensor's name is its address: no quantity Siaga knows, so nothing maps and
    # the water-level reading lacks its level, exactly as a Siaga payload without it would.
    out = decode(GAUGE, RFC_SINGLE)
    assert out.readings == []
    [letter] = out.dead
    assert (letter.code, letter.reason) == ("invalid-reading", "level_cm: required")
    assert letter.payload == RFC_SINGLE.encode()
    # With the gauge's level added it is a reading, the unknown name counted as ignored.
    out = decode(GAUGE, with_records(RFC_SINGLE, {"n": "pos-uji:level", "u": "cm", "v": 75}))
    assert [r.values for r in out.readings] == [{"level_cm": 75.0}]
    assert out.ignored_fields == {("pos-uji", "10e2073a01080063"): 1}


def test_rfc_multiple_data_points_now_become_one_reading_stamped_on_receipt() -> None:
    # On a traffic detector, with its speed added: voltage and current are no fields of it.
    payload = with_records(RFC_MULTIPLE_NOW, {"n": "speed", "u": "m/s", "v": 12.5})
    out = decode(ROAD, payload)
    [reading] = out.readings
    assert (reading.kind, reading.device_id, reading.ts_ns) == (Kind.TRAFFIC, "jalan", NOW_NS)
    assert reading.values == {"speed_kmh": 45.0}  # m/s x 3.6
    assert out.ignored_fields == {("jalan", "voltage"): 1, ("jalan", "current"): 1}
    assert out.dead == []


def test_rfc_base_time_and_relative_record_times_resolve_to_one_reading_per_time() -> None:
    # The gauge's level in metres each second, beside the RFC's current records.
    levels = [{"n": "level", "u": "m", "t": -second, "v": 1.2 + second / 100}
              for second in range(6)]
    out = decode(GAUGE, with_records(RFC_MULTIPLE_WITH_TIME, *levels))
    base_ns = 1_276_020_076_001_000_000
    got = {reading.ts_ns: reading.values["level_cm"] for reading in out.readings}
    assert got == {base_ns - second * 10**9: pytest.approx(120 + second) for second in range(6)}
    assert out.dead == []
    # voltage (at the base time) and current (at each time) are counted, never stored.
    assert out.ignored_fields == {("pos-uji", "voltage"): 1, ("pos-uji", "current"): 6}


def test_resolve_applies_base_name_time_and_unit_as_rfc_8428_section_4_6() -> None:
    records = resolve(orjson.loads(RFC_MULTIPLE_WITH_TIME))
    assert [(r.name, r.unit, r.time_s, r.value) for r in records[:2]] == [
        ("urn:dev:ow:10e2073a0108006:voltage", "V", 1.276020076001e9, 120.1),
        ("urn:dev:ow:10e2073a0108006:current", "A", 1.276020076001e9 - 5, 1.2),
    ]


def test_rfc_multiple_measurements_and_their_resolved_form_give_the_same_readings() -> None:
    # On an air-quality monitor with a PM2.5 record added at each of the four times: in the
    # unresolved pack after the base time, in the resolved one with absolute times. The
    # RFC's records are named by the device alone, so they map to nothing (next test).
    steps = (0, 60, 120, 180)
    unresolved = decode(AIR, with_records(RFC_MULTIPLE_MEASUREMENTS, *[
        {"bn": "udara:", "n": "pm2.5", "u": "ug/m3", "t": step, "v": 41.5} for step in steps]))
    resolved = decode(AIR, with_records(RFC_RESOLVED, *[
        {"n": "udara:pm2.5", "u": "ug/m3", "t": 1.320067464e09 + step, "v": 41.5}
        for step in steps]))
    assert unresolved.readings == resolved.readings
    assert [(r.ts_ns, r.values) for r in resolved.readings] == [
        ((1_320_067_464 + step) * 10**9, {"pm25": 41.5}) for step in steps]
    # The battery record at t=150 is a time of its own without a pollutant.
    for out in (unresolved, resolved):
        [letter] = out.dead
        assert letter.reason.startswith("SenML records at t=1320067614: at least one of pm25")


def test_a_name_that_is_only_the_device_maps_nothing_even_with_a_known_unit() -> None:
    # RFC section 5.1.3's records are named by the device alone: %RH would say humidity,
    # but Siaga maps by name; the battery record at t=150 (%EL) is no reading either.
    out = decode(AIR, RFC_MULTIPLE_MEASUREMENTS)
    assert out.readings == []
    assert len(out.dead) == 5  # four times of humidity and position, one of battery
    assert all("at least one of pm25" in letter.reason for letter in out.dead)
    assert out.dead[0].reason.startswith("SenML records at t=1320067464: ")


def test_rfc_multiple_data_types_text_and_booleans_of_unknown_names_are_ignored() -> None:
    payload = with_records(RFC_DATA_TYPES, {"n": "pm25", "u": "ug/m3", "v": 55})
    [reading] = decode(AIR, payload).readings
    assert reading.values == {"temp_c": 23.1, "pm25": 55.0}


def test_rfc_collection_of_resources_giving_a_field_twice_at_one_time_is_refused() -> None:
    payload = with_records(RFC_COLLECTION, {"n": "pm10", "u": "ug/m3", "v": 80})
    out = decode(AIR, payload)
    assert out.readings == []
    [letter] = out.dead
    assert letter.reason == "SenML records 0 and 2: both give temp_c at the same time"
    assert letter.payload == payload  # the pack as sent, for the operator


def test_rfc_actuator_records_of_base_fields_only_are_skipped() -> None:
    payload = with_records(RFC_ACTUATOR, {"n": "pm25", "v": 12})
    [reading] = decode(AIR, payload).readings
    assert reading.values == {"temp_c": 23.1, "pm25": 12.0}


@pytest.mark.parametrize(("name", "unit", "value", "field", "stored"), [
    ("level", "m", 1.2, "level_cm", 120.0),
    ("water_level", "cm", 85, "level_cm", 85.0),
    ("level", "mm", 1234, "level_cm", 123.4),
    ("level_cm", None, 90, "level_cm", 90.0),
    ("battery", "mV", 3712, "battery_v", 3.712),
    ("rssi", "dBm", -97, "rssi_dbm", -97.0),
    ("snr", "dB", 7.5, "snr_db", 7.5),
    ("urn:dev:ow:10e2073a01080063:level", "m", 0.5, "level_cm", 50.0),
])
def test_names_and_units_map_to_the_gauge_fields(
        name: str, unit: str | None, value: float, field: str, stored: float) -> None:
    record: dict[str, Any] = {"n": name, "v": value} | ({} if unit is None else {"u": unit})
    extra = [] if field == "level_cm" else [{"n": "level_cm", "v": 100}]
    out = decode(GAUGE, orjson.dumps([record, *extra]))
    [reading] = out.readings
    assert reading.values[field] == pytest.approx(stored)
    assert out.dead == []


@pytest.mark.parametrize(("record", "reason"), [
    ({"n": "level", "u": "ft", "v": 3}, "SenML record 0 (level): unit 'ft' cannot be read as "
     "level_cm; expected m or cm or mm"),
    ({"n": "level", "v": 3}, "SenML record 0 (level): a unit is needed to read it as "
     "level_cm: m or cm or mm"),
    ({"n": "level_cm", "u": "m", "v": 3}, "SenML record 0 (level_cm): unit 'm' cannot be read "
     "as level_cm; expected cm"),
    ({"n": "level", "u": "m", "vs": "3"}, "SenML record 0 (level): level_cm needs a number "
     "in v, not vs"),
    ({"n": "ts", "v": 1_700_000_000}, "SenML record 0: name 'ts' is not a measurement (a "
     "record's time goes in t or bt)"),
])
def test_a_known_name_that_cannot_be_read_is_a_dead_letter_naming_the_units_expected(
        record: dict[str, Any], reason: str) -> None:
    out = decode(GAUGE, orjson.dumps([record]))
    assert out.readings == []
    [letter] = out.dead
    assert (letter.code, letter.reason) == ("invalid-reading", reason)


def test_ppm_is_never_read_as_micrograms_per_cubic_metre() -> None:
    out = decode(AIR, orjson.dumps([{"n": "o3", "u": "ppm", "v": 0.07}]))
    [letter] = out.dead
    assert letter.reason == "SenML record 0 (o3): unit 'ppm' cannot be read as o3; expected ug/m3"


def test_a_mapped_value_out_of_bounds_is_refused_as_a_siaga_reading_would_be() -> None:
    out = decode(GAUGE, orjson.dumps([{"n": "level", "u": "m", "v": 15}]))
    [letter] = out.dead
    assert letter.reason == "level_cm: must be <= 1200 (got 1500.0)"


def test_base_value_is_added_to_each_value() -> None:
    pack = [{"bn": "pos-uji:", "bv": 100, "bu": "cm", "n": "level", "t": -60, "v": 2},
            {"n": "level", "v": 5}]
    out = decode(GAUGE, orjson.dumps(pack))
    assert [(r.ts_ns, r.values["level_cm"]) for r in out.readings] == [
        (NOW_NS - 60 * 10**9, 102.0), (NOW_NS, 105.0)]


def test_seq_maps_as_an_integer() -> None:
    [reading] = decode(GAUGE, orjson.dumps([{"n": "seq", "v": 42},
                                            {"n": "level_cm", "v": 1}])).readings
    assert reading.seq == 42


@pytest.mark.parametrize(("pack", "reason"), [
    ([{"n": "level", "u": "m", "v": 1}, 3], "SenML record 1: expected a JSON object"),
    ([{"bn": 7, "n": "level", "v": 1}], "SenML record 0: bn must be a string"),
    ([{"n": "level", "t": "now", "v": 1}], "SenML record 0: t must be a number"),
    ([{"n": "level", "v": True}], "SenML record 0: v must be a number"),
    ([{"n": "level", "vb": 1}], "SenML record 0: vb must be true or false"),
    ([{"bver": 11, "n": "level_cm", "v": 1}], "SenML record 0: bver 11 is newer than the "
     "version Siaga reads (10)"),
    ([{"n": "level_cm", "v": 1, "unit_": "x"}], "SenML record 0: label 'unit_' must be "
     "understood and Siaga does not know it"),
    ([{"n": "-level", "v": 1}], "SenML record 0: the name (base name + name) must start with "
     "a letter or digit and hold only letters, digits and - : . / _ (RFC 8428 section 4.5.1)"),
    ([{"bn": "pos-uji:"}], "SenML pack holds no record with a value"),
    ([{"n": "level_cm", "v": 1, "vs": "1"}], "SenML record 0: more than one of v, vs, vb, vd "
     "(RFC 8428 section 4.3 allows one value a record)"),
])
def test_a_pack_that_is_not_valid_senml_is_one_dead_letter(
        pack: list[Any], reason: str) -> None:
    payload = orjson.dumps(pack)
    out = decode(GAUGE, payload)
    assert out.readings == []
    [letter] = out.dead
    assert (letter.code, letter.reason, letter.payload) == ("invalid-reading", reason, payload)


def test_a_pack_of_more_than_1000_records_is_too_large() -> None:
    pack = [{"n": "level_cm", "t": -i, "v": 1} for i in range(1001)]
    [letter] = decode(GAUGE, orjson.dumps(pack)).dead
    assert letter.code == "batch-too-large"


def test_siaga_batches_are_not_taken_for_senml() -> None:
    assert not looks_like_senml({"ts": 1_700_000_000, "level_cm": 1, "n": 3}, Kind.WATER_LEVEL)
    assert not looks_like_senml({"level_cm": 1}, Kind.WATER_LEVEL)
    assert looks_like_senml({"bn": "x:", "n": "level", "v": 1}, Kind.WATER_LEVEL)
    # A Siaga batch item with a stray `n` still decodes as Siaga's, `n` counted as ignored.
    out = decode(GAUGE, orjson.dumps([{"level_cm": 1, "n": 3}]))
    assert [r.values for r in out.readings] == [{"level_cm": 1.0}]
    assert out.ignored_fields == {("pos-uji", "n"): 1}


def test_to_items_groups_records_by_time_in_first_seen_order() -> None:
    pack: list[object] = [{"n": "level_cm", "t": 10, "v": 1}, {"n": "level_cm", "v": 2},
                          {"n": "battery_v", "t": 10, "v": 3.7}]
    items = to_items(pack, Kind.WATER_LEVEL, NOW_S)
    assert [(item.time_s, item.reading) for item in items] == [
        (NOW_S + 10, {"ts": NOW_S + 10, "level_cm": 1, "battery_v": 3.7}),
        (None, {"level_cm": 2}),
    ]


def test_to_items_refuses_a_bad_pack_with_an_input_error() -> None:
    with pytest.raises(SenmlRefused, match="record 0: expected a JSON object"):
        to_items([1], Kind.WATER_LEVEL, NOW_S)


def test_a_time_too_large_for_a_clock_is_a_dead_letter_not_a_crash() -> None:
    # 1e308 is valid JSON; made microseconds it overflowed, raised out of the decoder and
    # stopped ingestion, again at each redelivery (a review's reproduction).
    for pack in ('[{"bn": "urn:dev:x:", "bt": 1e308, "n": "level", "u": "cm", "v": 1}]',
                 '[{"bt": 1700000000, "n": "level", "u": "cm", "v": 1},'
                 ' {"t": 1e303, "n": "level", "u": "cm", "v": 2}]'):
        out = decode(GAUGE, pack)
        assert out.readings == []
        assert [(letter.code, "out of range" in letter.reason) for letter in out.dead] == [
            ("invalid-reading", True)]
