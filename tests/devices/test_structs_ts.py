"""The fast path reads a float `ts` itself: the instant `parse_ts` gives, or no fast result
(the reference path then says why) for the floats `parse_ts` refuses."""

from __future__ import annotations

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from devices.kinds import Kind
from devices.structs import fast_readings
from devices.timestamps import MAX_EPOCH_S, MAX_NS, MIN_EPOCH_S, parse_ts

RECEIVED_NS = 1_700_000_000 * 1_000_000_000
BEYOND_NS = MAX_NS + 10**18  # no reading is too far ahead here: only `ts` itself decides


def fast_ts(ts: float) -> int | None:
    payload = orjson.dumps([{"ts": ts, "level_cm": 50.0}, {"ts": ts, "level_cm": 51.0}])
    readings = fast_readings(Kind.WATER_LEVEL, "manggarai", payload, RECEIVED_NS,
                             max_items=1000, latest_ns=BEYOND_NS)
    if readings is None:
        return None
    assert len({reading.ts_ns for reading in readings}) == 1
    return readings[0].ts_ns


def parsed(ts: float) -> int | None:
    try:
        return parse_ts(ts)
    except ValueError:
        return None


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False))
@example(float(MIN_EPOCH_S))
@example(MIN_EPOCH_S - 0.5)
@example(MIN_EPOCH_S - 1e-6)
@example(float(MAX_EPOCH_S))
@example(MAX_EPOCH_S - 1e-6)
@example(MAX_EPOCH_S - 0.5)
@example(1_700_000_000.1234565)
@example(0.0)
@example(-0.0)
@example(1e3)
def test_a_float_ts_is_the_instant_parse_ts_gives_or_left_to_the_reference(ts: float) -> None:
    assert fast_ts(ts) == parsed(ts)
