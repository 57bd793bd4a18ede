"""`siaga run --log-format json` as a real process: every line it writes is a JSON object
with the text log's fields, from start-up through a graceful stop on SIGTERM."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.settings import InfluxSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.integration.support import ServiceProcess, make_settings, unique_name, write_config

FIELDS = {"time", "level", "logger", "message"}
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def entries(log: Path) -> list[dict[str, Any]]:
    """Each line of the log as a JSON object; fails on the first line that is not one."""
    parsed = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line}")
        assert isinstance(entry, dict), f"line {number}: {line}"
        assert entry.keys() >= FIELDS, f"line {number} lacks {FIELDS - entry.keys()}: {line}"
        assert RFC3339_MS.match(entry["time"]), f"line {number}: time {entry['time']!r}"
        assert entry["level"] in LEVELS, f"line {number}: level {entry['level']!r}"
        parsed.append(entry)
    return parsed


def test_the_service_logs_json_lines_from_start_to_graceful_stop(
        mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path) -> None:
    influx = InfluxSettings(api="v1", url=influxdb1.url, database=unique_name("siaga_"))
    settings = make_settings(mosquitto.url, influx, tmp_path / "data")
    config = write_config(settings, tmp_path / "siaga.yaml")
    service = ServiceProcess(config, tmp_path / "service.log", ["--log-format", "json"])
    try:
        service.start()  # waits for the start-up line and /readyz
    finally:
        service.stop()
    assert service.process is not None and service.process.returncode == 0
    logged = entries(service.log)
    messages = [entry["message"] for entry in logged]
    started = [entry for entry in logged if entry["message"].startswith("Siaga ingest started:")]
    assert len(started) == 1, messages
    # `siaga run` takes start-up's heap out of the collector's passes before it starts.
    settled = [n for n, message in enumerate(messages) if message.startswith("heap settled:")]
    assert settled and settled[0] < messages.index(started[0]["message"]), messages
    assert (started[0]["level"], started[0]["logger"]) == ("INFO", "siaga.app")
    assert f"API {service.base}," in started[0]["message"]
    assert any(message.startswith("Siaga ingest ready:") for message in messages), messages
    assert messages[-1].startswith("Siaga ingest stopped:"), messages
    times = [datetime.fromisoformat(entry["time"]) for entry in logged]
    assert times == sorted(times)
