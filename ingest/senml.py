"""SenML (RFC 8428) JSON packs -> Siaga-shaped readings, one per distinct time.

A device may publish a SenML pack (a JSON array of records) on its own telemetry topic
instead of Siaga's payload. The pack is resolved as RFC 8428 says: base name + name, base
time + time (a result below 2**28 is relative to "now", the time the message was received),
base value + value, the record's unit or else the base unit; a base field applies to its
record and to every later one until changed. A record without a value (only base fields,
as in the RFC's thermostat example) is no measurement and is skipped.

Each record is mapped by the last segment of its name (after the last `:` or `/`, so
`urn:dev:ow:10e2073a01080063:level` is `level`) and its unit to one field of the device's
kind (`QUANTITIES`), converted to the field's unit; records at the same time make one
reading, shaped as Siaga's own (`{"ts": epoch_s, "level_cm": ...}`), which the decoder then
validates exactly as it validates Siaga's readings. A name Siaga does not know is kept as an
unknown field, so it is counted as ignored. A known name with a unit that is not one Siaga
converts is refused, naming the units expected: a value is never silently mis-scaled.

Refusals: `SenmlRefused` for the whole pack (it is not valid SenML: a record that is not an
object, a label of the wrong type, a name outside the RFC's characters, a newer `bver`, a
must-understand label), or a reason per reading (`Item.refusal`) for what is valid SenML
that Siaga cannot take at that time (a wrong unit, a text value, a field given twice).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, cast

from devices.kinds import Kind
from devices.readings import NUMERIC_FIELDS
from siaga_core.errors import InputError

# RFC 8428 section 4.1 (base) and 4.2 (regular) labels; a record is SenML when it has one.
BASE_LABELS: Final = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
REGULAR_LABELS: Final = frozenset({"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})
SENML_LABELS: Final = BASE_LABELS | REGULAR_LABELS
_VALUE_LABELS: Final = ("v", "vs", "vb", "vd", "s")
SENML_VERSION: Final = 10  # RFC 8428 section 4.4: a pack of a newer version must not be used
RELATIVE_BELOW_S: Final = 2**28  # RFC 8428 section 4.5.3: smaller times are relative to now
# A record's time beyond this either way is refused here; a time within it but outside what
# Siaga stores is refused by the timestamp check with its own reason. 1e308 (valid JSON)
# would overflow when made microseconds.
MAX_TIME_S: Final = 1e12
# RFC 8428 section 4.5.1: the concatenated name's characters.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][-:./_A-Za-z0-9]*")
_SEGMENT_RE: Final = re.compile(r"[:/]")
_DIGITS: Final = 9  # converted values are rounded to 1e-9, far below any sensor's resolution
_STRINGS: Final = frozenset({"bn", "bu", "n", "u", "vs", "vd"})
_NUMBERS: Final = frozenset({"bt", "bv", "bs", "v", "s", "t", "ut"})


class SenmlRefused(InputError):
    """A pack that is not valid SenML; the text is the dead letter's reason."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """What a SenML name maps to: a Siaga field and the units converted to it (factor)."""

    field: str
    units: Mapping[str, float]
    # Siaga's own field names carry their unit: a record may leave `u` out. Plain names
    # (`level`) need a unit: `level` in m read as cm would be a hundred times too low.
    unit_optional: bool = False


def _quantities() -> Mapping[str, Quantity]:
    length = {"m": 100.0, "cm": 1.0, "mm": 0.1}
    mass_per_volume = {"ug/m3": 1.0}  # RFC 8798; ppm needs the gas and temperature: refused
    speed = {"km/h": 1.0, "m/s": 3.6}
    rate = {"1/h": 1.0, "1/min": 60.0, "1/s": 3600.0}
    table: dict[str, Quantity] = {
        "level": Quantity("level_cm", length),
        "water_level": Quantity("level_cm", length),
        "pm2.5": Quantity("pm25", mass_per_volume),
        "pm2_5": Quantity("pm25", mass_per_volume),
        "temperature": Quantity("temp_c", {"Cel": 1.0}),
        "temp": Quantity("temp_c", {"Cel": 1.0}),
        "humidity": Quantity("rh_pct", {"%RH": 1.0, "%": 1.0}),
        "speed": Quantity("speed_kmh", speed),
        "volume": Quantity("volume_vph", rate),
        "occupancy": Quantity("occupancy_pct", {"%": 1.0, "/": 100.0}),
        "battery": Quantity("battery_v", {"V": 1.0, "mV": 0.001}),
        "rssi": Quantity("rssi_dbm", {"dBm": 1.0}),
        "snr": Quantity("snr_db", {"dB": 1.0}),
    }
    # Siaga's field names as SenML names, in the field's own unit (or none).
    own_units = {"level_cm": "cm", "temp_c": "Cel", "rh_pct": "%RH", "speed_kmh": "km/h",
                 "mean_speed_kmh": "km/h", "volume_vph": "1/h", "occupancy_pct": "%",
                 "battery_v": "V", "rssi_dbm": "dBm", "snr_db": "dB",
                 "vehicles_per_min": "1/min", "water_score": "/"}
    for pollutant in ("pm25", "pm10", "o3", "no2", "so2", "co", "hc"):
        own_units[pollutant] = "ug/m3"
        table.setdefault(pollutant, Quantity(pollutant, mass_per_volume))
    for field in sorted(set().union(*NUMERIC_FIELDS.values()) | {"seq"}):
        unit = own_units.get(field)
        table[field] = Quantity(field, {} if unit is None else {unit: 1.0}, unit_optional=True)
    return MappingProxyType(table)


QUANTITIES: Final = _quantities()
# Names that would overwrite what the decoder reads besides fields.
_RESERVED: Final = frozenset({"ts"})


def looks_like_senml(first: dict[str, object], kind: Kind) -> bool:
    """Whether a JSON array whose first item is `first` is a SenML pack, not a batch of
    Siaga readings: it has a SenML label and none of the kind's own fields."""
    return not first.keys().isdisjoint(SENML_LABELS) and (
        first.keys().isdisjoint(NUMERIC_FIELDS[kind]) and "ts" not in first)


@dataclass(frozen=True, slots=True)
class Record:
    """One resolved record (RFC 8428 section 4.6) that holds a value."""

    index: int  # its place in the pack, for reasons
    name: str
    unit: str | None
    time_s: float  # absolute, or relative to now when below RELATIVE_BELOW_S
    label: str  # which value it holds: v, vs, vb, vd or s
    value: object


@dataclass(frozen=True, slots=True)
class Item:
    """A Siaga-shaped reading of one time, or why that time's records cannot be one."""

    time_s: float | None  # None: "now" (no time given): the decoder stamps it
    reading: dict[str, object]
    refusal: str | None = None

    @property
    def when(self) -> str:
        """Which of the pack's times this is, for a reason."""
        return "SenML records of now" if self.time_s is None else \
            f"SenML records at t={self.time_s:.15g}"


def resolve(pack: list[object]) -> list[Record]:
    """The pack's records that hold a value, resolved; raises `SenmlRefused`."""
    base_name, base_time, base_unit = "", 0.0, None
    base_value: float | None = None
    records = []
    for index, record in enumerate(pack):
        if not isinstance(record, dict):
            raise SenmlRefused(f"SenML record {index}: expected a JSON object")
        _check_labels(index, record)  # the casts below rest on its checks
        base_name = cast(str, record.get("bn", base_name))
        base_time = cast(float, record.get("bt", base_time))
        base_unit = cast("str | None", record.get("bu", base_unit))
        base_value = cast("float | None", record.get("bv", base_value))
        if sum(label in record for label in _VALUE_LABELS[:4]) > 1:
            raise SenmlRefused(f"SenML record {index}: more than one of v, vs, vb, vd "
                               "(RFC 8428 section 4.3 allows one value a record)")
        label = next((label for label in _VALUE_LABELS if label in record), None)
        if label is None:
            continue  # base fields only: they apply to the records after it
        name = base_name + cast(str, record.get("n", ""))
        if not _NAME_RE.fullmatch(name):
            raise SenmlRefused(f"SenML record {index}: the name (base name + name) must "
                               "start with a letter or digit and hold only letters, digits "
                               "and - : . / _ (RFC 8428 section 4.5.1)")
        value = record[label]
        if label == "v" and base_value is not None:
            value = base_value + cast(float, value)
        time_s = base_time + cast(float, record.get("t", 0))
        if not -MAX_TIME_S < time_s < MAX_TIME_S:  # 1e308 would overflow on the way to ns
            raise SenmlRefused(f"SenML record {index}: time (base time + time) {time_s:g} "
                               f"is out of range: at most {MAX_TIME_S:g} seconds either way")
        unit = cast("str | None", record.get("u", base_unit))
        records.append(Record(index, name, unit, time_s, label, value))
    return records


def _check_labels(index: int, record: dict[str, object]) -> None:
    for label, value in record.items():
        if label.endswith("_"):
            raise SenmlRefused(f"SenML record {index}: label {label[:40]!r} must be understood "
                               "and Siaga does not know it")
        if label in _STRINGS and not isinstance(value, str):
            raise SenmlRefused(f"SenML record {index}: {label} must be a string")
        if label in _NUMBERS and not _is_number(value):
            raise SenmlRefused(f"SenML record {index}: {label} must be a number")
        if label == "vb" and not isinstance(value, bool):
            raise SenmlRefused(f"SenML record {index}: vb must be true or false")
    version = record.get("bver")
    if version is not None:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise SenmlRefused(f"SenML record {index}: bver must be a positive integer")
        if version > SENML_VERSION:
            raise SenmlRefused(f"SenML record {index}: bver {version} is newer than the "
                               f"version Siaga reads ({SENML_VERSION})")


def _is_number(value: object) -> bool:
    # JSON numbers only; orjson gives floats and ints, never NaN or infinities.
    return isinstance(value, int | float) and not isinstance(value, bool)


def to_items(pack: list[object], kind: Kind, now_s: float) -> list[Item]:
    """The pack as Siaga-shaped readings of `kind`, one per distinct time, in the order
    their times first appear; relative times count from `now_s`. Raises `SenmlRefused`."""
    records = resolve(pack)
    if not records:
        raise SenmlRefused("SenML pack holds no record with a value")
    fields = NUMERIC_FIELDS[kind] | {"seq"}
    by_time: dict[int | None, list[Record]] = {}
    for record in records:
        by_time.setdefault(_time_key(record.time_s), []).append(record)
    items = []
    for key, group in by_time.items():
        time_s = None if key is None else _absolute(group[0].time_s, now_s)
        items.append(_item(group, fields, time_s))
    return items


def _time_key(time_s: float) -> int | None:
    # Records a rounding error apart are the same time; 0 is "roughly now" (section 4.5.3).
    return None if time_s == 0 else round(time_s * 1_000_000)


def _absolute(time_s: float, now_s: float) -> float:
    return now_s + time_s if time_s < RELATIVE_BELOW_S else time_s


def _item(records: list[Record], fields: frozenset[str], time_s: float | None) -> Item:
    reading: dict[str, object] = {} if time_s is None else {"ts": time_s}
    given: dict[str, int] = {}  # field -> index of the record that gave it
    for record in records:
        # `bn` often ends in `:` and a record may add no `n`: the last segment holding text.
        segment = _SEGMENT_RE.split(record.name.rstrip(":/"))[-1]
        quantity = QUANTITIES.get(segment) or QUANTITIES.get(segment.lower())
        if segment in _RESERVED:
            return Item(time_s, reading, f"SenML record {record.index}: name {segment!r} is "
                        "not a measurement (a record's time goes in t or bt)")
        if quantity is None or quantity.field not in fields:
            reading.setdefault(segment, record.value)  # counted as an ignored field
            continue
        value = _converted(record, segment, quantity)
        if isinstance(value, str):
            return Item(time_s, reading, value)
        if quantity.field in given:
            return Item(time_s, reading, f"SenML records {given[quantity.field]} and "
                        f"{record.index}: both give {quantity.field} at the same time")
        given[quantity.field] = record.index
        reading[quantity.field] = value
    return Item(time_s, reading)


def _converted(record: Record, segment: str, quantity: Quantity) -> object:
    """The record's value in the field's unit, or a reason (a str) why it cannot be."""
    where = f"SenML record {record.index} ({segment})"
    if record.label != "v":
        return f"{where}: {quantity.field} needs a number in v, not {record.label}"
    expected = " or ".join(quantity.units) or "no unit"
    if record.unit is None:
        if quantity.unit_optional:
            return record.value
        return f"{where}: a unit is needed to read it as {quantity.field}: {expected}"
    factor = quantity.units.get(record.unit)
    if factor is None:
        return (f"{where}: unit {record.unit[:20]!r} cannot be read as {quantity.field}; "
                f"expected {expected}")
    if factor == 1.0:
        return record.value  # as sent: an int stays an int (seq)
    return round(cast(float, record.value) * factor, _DIGITS)
