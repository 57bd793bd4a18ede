"""What broken firmware sends: payloads SPEC section 1 refuses, and topics naming no device."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import orjson

from devices.kinds import Kind
from devices.readings import CAMERA_COUNTS, POLLUTANTS
from devices.topics import TopicScheme

Reading = dict[str, object]

# The field every reading of a kind must carry (SPEC section 1), or the one a fault tampers
# with for air quality and cameras, where any single pollutant or count would do.
PRIMARY: Final[Mapping[Kind, str]] = MappingProxyType(
    {Kind.WATER_LEVEL: "level_cm", Kind.AIR_QUALITY: "pm25", Kind.TRAFFIC: "speed_kmh",
     Kind.CAMERA: "water_score"}
)
# Values outside the hard plausibility bounds of devices.readings (jakarta.md section 5):
# no gauge reads 50 m, no sensor a negative concentration, no car does 350 km/h in Jakarta,
# and a water score is a share (SPEC section 7: 0..1; a percentage is the usual mistake).
IMPOSSIBLE: Final[Mapping[Kind, float]] = MappingProxyType(
    {Kind.WATER_LEVEL: 5000.0, Kind.AIR_QUALITY: -3.0, Kind.TRAFFIC: 350.0,
     Kind.CAMERA: 85.0}
)
# The fields of which a kind needs at least one: a reading without any of them is refused.
_REQUIRED: Final[Mapping[Kind, frozenset[str]]] = MappingProxyType(
    {Kind.AIR_QUALITY: frozenset(POLLUTANTS), Kind.CAMERA: frozenset(CAMERA_COUNTS)}
)
MAX_ID_LENGTH: Final = 64  # SPEC section 1: device ids are at most 64 characters
BOGUS_SUFFIX_HEX: Final = 6  # random hex digits that make a bogus id no catalog has


def _truncated(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    # A message cut short (a buffer overrun, a lost packet): no prefix of an object is JSON.
    data = orjson.dumps(body)
    return data[: rng.randrange(1, len(data) - 1)]


def _nan(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    # Firmware printing a failed float read with printf: NaN is not JSON (SPEC section 1).
    ts = orjson.dumps(body["ts"]).decode()
    literal = rng.choice(("NaN", "nan", "Infinity", "-Infinity"))
    return f'{{"ts":{ts},"{PRIMARY[kind]}":{literal}}}'.encode()


def _string_number(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    # The number sent as a string: a known field with a wrong type makes the reading invalid.
    return orjson.dumps({**body, PRIMARY[kind]: str(body.get(PRIMARY[kind], "12.5"))})


def _null(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    return orjson.dumps({**body, PRIMARY[kind]: None})


def _empty(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    return b""


def _scalar(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    # The bare value without its object: neither a reading nor a batch.
    return orjson.dumps(body.get(PRIMARY[kind], 0.0))


def _impossible(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    return orjson.dumps({**body, PRIMARY[kind]: IMPOSSIBLE[kind]})


def _missing(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    # A sensor that failed to read leaves out the measurement the kind requires.
    gone = _REQUIRED.get(kind, frozenset({PRIMARY[kind]}))
    return orjson.dumps({key: value for key, value in body.items() if key not in gone})


def _milliseconds(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    # The commonest clock bug: epoch milliseconds where seconds are expected.
    ts = body["ts"]
    assert isinstance(ts, float)
    return orjson.dumps({**body, "ts": round(ts * 1000)})


def _not_utf8(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    return b"\xff\xfe" + orjson.dumps(body)


def _empty_batch(kind: Kind, body: Reading, rng: random.Random) -> bytes:
    return b"[]"


VARIANTS: Final[tuple[Callable[[Kind, Reading, random.Random], bytes], ...]] = (
    _truncated, _nan, _string_number, _null, _empty, _scalar, _impossible, _missing,
    _milliseconds, _not_utf8, _empty_batch,
)  # fmt: skip


def malformed_payload(kind: Kind, reading: Reading, rng: random.Random) -> bytes:
    """A payload Siaga must dead-letter, made from a real reading of the device."""
    body = {key: value for key, value in reading.items() if key != "seq"}
    return rng.choice(VARIANTS)(kind, body, rng)


def bogus_topic(topics: TopicScheme, kind: Kind, device_id: str, rng: random.Random) -> str:
    """The telemetry topic of a device no catalog has: a misflashed id, or an invalid one."""
    if rng.random() < 0.7:
        suffix = f"-{rng.randrange(16**BOGUS_SUFFIX_HEX):0{BOGUS_SUFFIX_HEX}x}"
        return topics.telemetry(kind, device_id[: MAX_ID_LENGTH - len(suffix)] + suffix)
    # Upper case is outside SPEC's id pattern: the topic itself is invalid, yet publishable.
    return f"{topics.prefix}/{kind.value}/{device_id.upper()}-X/telemetry"
