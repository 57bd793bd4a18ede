"""What `encode_plain` writes is what InfluxDB 1.6.7 stores: the real server parses orjson's
number text (`700.0`, `1e-7`, `1e+22`, ints, -0.0, the extremes) to the very floats the
readings held, as it does `encode_many`'s (Point's) text."""

from __future__ import annotations

import urllib.request

from ingest.lineprotocol import encode_many, encode_plain, series_key
from siaga.sandbox.influxdb import InfluxDB1
from tests.ingest.test_lineprotocol_fast import Sample
from tests.integration.support import influx_rows, unique_name

VALUES = [700.0, -0.0, 1e-7, 1e16, 1e22, 0.1 + 0.2, 123456789012345678.0, 5e-324,
          1.7976931348623157e308, -2.5, 42, -(2**53) - 1, 2**63 - 1]
BASE_NS = 1_700_000_000_000_000_000


def write(influx: InfluxDB1, database: str, lines: list[str]) -> None:
    request = urllib.request.Request(f"{influx.url}/write?db={database}&precision=ns",
                                     data="\n".join(lines).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204


def stored(influx: InfluxDB1, database: str, measurement: str) -> list[tuple[str, float, int]]:
    rows = influx_rows(influx, database, f'SELECT "v", "seq" FROM "{measurement}"')
    # The JSON answer writes a whole float without a point (2**63 as 9223372036854776000):
    # float() is the value InfluxDB holds.
    return [(row["time"], float(row["v"]), row["seq"]) for row in rows]


def test_influxdb_stores_the_same_floats_from_either_encoder(influxdb1: InfluxDB1) -> None:
    database = unique_name("plain")
    influxdb1.query(f'CREATE DATABASE "{database}"')
    points = [Sample({"v": value}, number, BASE_NS + number)
              for number, value in enumerate(VALUES)]
    for measurement, encoder in (("plain", encode_plain), ("point", encode_many)):
        key = series_key(measurement, {"device_id": "d1"})
        lines = encoder(key, points)
        if encoder is encode_plain:
            assert f"{key} v=700.0,seq=0i {BASE_NS}" in lines  # orjson's text, not Point's
        write(influxdb1, database, lines)
    plain = [(value, seq) for _, value, seq in stored(influxdb1, database, "plain")]
    assert plain == [(float(value), number) for number, value in enumerate(VALUES)]
    assert stored(influxdb1, database, "plain") == stored(influxdb1, database, "point")
