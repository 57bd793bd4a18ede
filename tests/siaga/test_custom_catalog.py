"""A catalog of one's own gauges with the bundled rules: `siaga run` starts, and says once
which bundled rules it skipped; `siaga check` says the same as a warning (exit 0).

The real command in a child process (`python -m ingest`), against the real Mosquitto and
InfluxDB of tests/conftest.py; readiness is the service's own `/readyz`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.polling import wait_until

REPO = Path(__file__).parents[2]
COMMAND_TIMEOUT_S = 60  # `siaga check` loads three files and exits in about a second
STOP_TIMEOUT_S = 30  # SIGTERM: flush, acknowledge, close; seconds on an idle service
CATALOG = """\
devices:
  - id: kali-a
    kind: water-level
    name: Pos Kali A
    lat: -7.25
    lon: 112.75
    thresholds: {siaga3_cm: 150, siaga2_cm: 200, siaga1_cm: 250}
  - id: jalan-b
    kind: traffic
    name: Jalan B
    lat: -7.26
    lon: 112.74
"""
# The bundled rules that name Jakarta's devices, or a kind this catalog lacks.
SKIPPED = {
    "KatulampaRapidRise": "the catalog has no device 'katulampa'",
    "FloodWaveExpected": "the catalog has no device 'katulampa' (the upstream gauge)",
    "FloodWaveExpectedKrukut": "the catalog has no device 'krukut-hulu' (the upstream gauge)",
    "FloodWaveExpectedSunter": "the catalog has no device 'sunter-hulu' (the upstream gauge)",
    "AirQuality": "the catalog has no air-quality device",
}


def siaga(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siaga", *args], cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIAGA_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def write_site(folder: Path, mosquitto: Mosquitto | None = None,
               influx: InfluxDB1 | None = None) -> None:
    """A site with its own catalog and no `rules:`: the bundled rules apply."""
    (folder / "devices.yaml").write_text(CATALOG, encoding="utf-8")
    tag = uuid.uuid4().hex[:8]
    lines = ["catalog: devices.yaml", "data_dir: state", "http: {port: 0}"]
    if mosquitto is not None:
        lines.append(f"mqtt: {{url: '{mosquitto.url}', client_id: cat-{tag}, "
                     f"topic_prefix: cat{tag}}}")
    if influx is not None:
        lines.append(f"influx: {{url: '{influx.url}', database: cat{tag}}}")
    (folder / "siaga.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_siaga_check_warns_of_the_skipped_bundled_rules_and_exits_0(tmp_path: Path) -> None:
    write_site(tmp_path)
    check = siaga(tmp_path, "check", "-c", "siaga.yaml")
    assert check.returncode == 0, check.stderr
    assert "siaga.yaml: OK" in check.stdout
    assert "rules.yaml" not in check.stdout  # the bundled file: rules/default.yaml
    assert "2 rules (5 skipped or cut, below)" in check.stdout
    warning = check.stdout[check.stdout.index("warning: 5 optional rules skipped"):]
    for name, reason in SKIPPED.items():
        assert re.search(rf"default\.yaml:\d+: rules\[\d\]: {name} skipped: {re.escape(reason)}",
                         warning), name
    assert "FloodLevel" not in warning and "Congestion" not in warning  # these apply


class Running:
    """`siaga run` in a child process, its stderr collected line by line."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "siaga", "run", "-c", "siaga.yaml"], cwd=folder,
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def api_port(self) -> int | None:
        found = re.search(r"API http://127\.0\.0\.1:(\d+)", self.text)
        return int(found.group(1)) if found else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=STOP_TIMEOUT_S)
        self._reader.join(timeout=STOP_TIMEOUT_S)
        return code


@pytest.fixture
def running(tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1) -> Iterator[Running]:
    write_site(tmp_path, mosquitto, influxdb1)
    service = Running(tmp_path)
    try:
        yield service
    finally:
        if service.process.poll() is None:
            service.stop()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:  # 503 (HTTPError is an OSError) or not listening yet
        return False


@pytest.mark.integration  # real Mosquitto and InfluxDB: `-m "not integration"` skips it
def test_siaga_run_starts_with_its_own_catalog_and_says_once_what_it_skipped(
        running: Running) -> None:
    wait_until(lambda: running.api_port() or running.process.poll() is not None,
               within=60, what="the service's start line (or its exit)")
    port = running.api_port()
    assert port is not None, running.text
    wait_until(lambda: _ready(port), within=60, what="GET /readyz answering 200")
    assert "Siaga ingest started: 2 devices, 2 rules" in running.text
    assert running.text.count("optional rules skipped or cut") == 1
    for name, reason in SKIPPED.items():
        assert f"{name} skipped: {reason}" in running.text
    assert running.stop() == 0
    assert "Traceback" not in running.text
