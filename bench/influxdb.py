"""The harness's side of InfluxDB 1.x: databases, counting what landed, raw line-protocol writes."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from urllib.parse import urlencode

from siaga.sandbox.influxdb import InfluxDB1

MEASUREMENTS = ("water_level", "air_quality", "traffic")  # one per device kind
COUNT_FIELD = "seq"  # every load-mode reading has one, whoever stores it
QUERY_TIMEOUT_S = 30.0  # a count over millions of points can take a while on a busy box


class Influx:
    """One InfluxDB 1.x server, reached over one kept-alive HTTP connection."""

    def __init__(self, server: InfluxDB1) -> None:
        self.server = server
        self._connection: http.client.HTTPConnection | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a kept-alive connection the server closed is retried once
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    "127.0.0.1", self.server.port, timeout=QUERY_TIMEOUT_S)
            try:
                self._connection.request(method, path, body=body)
                response = self._connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def query(self, q: str, database: str | None = None) -> dict[str, object]:
        params = {"q": q} | ({"db": database} if database else {})
        status, body = self._request("POST", "/query?" + urlencode(params))
        if status != 200:
            raise RuntimeError(f"InfluxDB answered {status} to {q!r}: {body[:300]!r}")
        document: dict[str, object] = json.loads(body)
        return document

    def create(self, database: str) -> None:
        self.query(f'CREATE DATABASE "{database}"')

    def drop(self, database: str) -> None:
        self.query(f'DROP DATABASE "{database}"')

    def count(self, database: str, measurements: Iterable[str] = MEASUREMENTS,
              field: str = COUNT_FIELD) -> int:
        """Points stored in `measurements`, counted on `field` (by default the one every
        reading has)."""
        sources = ",".join(f'"{name}"' for name in measurements)
        result = self.query(f'SELECT count("{field}") FROM {sources}', database)
        total = 0
        for statement in result.get("results", []):  # type: ignore[attr-defined]
            if "error" in statement:
                raise RuntimeError(f"InfluxDB count failed: {statement['error']}")
            for series in statement.get("series", []):
                total += sum(int(row[1]) for row in series["values"])
        return total

    def write(self, database: str, body: bytes, precision: str = "n") -> None:
        """One /write of line protocol; raises unless InfluxDB answers 204."""
        path = "/write?" + urlencode({"db": database, "precision": precision})
        status, answer = self._request("POST", path, body)
        if status != 204:
            raise RuntimeError(f"InfluxDB /write answered {status}: {answer[:300]!r}")
