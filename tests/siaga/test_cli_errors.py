"""A mistake in a configuration file stops `siaga run` as `siaga check` reports it: no traceback.

Each case writes real files into a temporary folder and runs the real command in a child
process (`python -m siaga`); `siaga run` fails before it connects to anything, so no
server is needed. A traceback is for bugs; a wrong file is the operator's to fix.

Once the service runs, the same edge (siaga_core.errors): an error raised on purpose, or
the machine's (a taken port), is one logged line and exit 1; a bug keeps its traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
COMMAND_TIMEOUT_S = 60  # a child that loads a config and exits takes about a second
CATALOG = """\
devices:
  - id: gauge-a
    kind: water-level
    name: Gauge A
    lat: -6.2
    lon: 106.8
    thresholds: {siaga3_cm: 100, siaga2_cm: 200, siaga1_cm: 300}
"""
RULES = """\
rules:
  - name: GaugeHigh
    type: threshold
    field: level_cm
    above: 250
"""


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def siaga(folder: Path, *args: str) -> Result:
    """The real console script's code, run in `folder` with no SIAGA_ variable inherited."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIAGA_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "siaga", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    return Result(done.returncode, done.stdout, done.stderr)


def site(folder: Path, config: str, files: dict[str, str | bytes]) -> Path:
    """A configuration file and the files it names, as an operator would write them."""
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    path = folder / "siaga.yaml"
    path.write_text(config, encoding="utf-8")
    return path


# name -> (configuration, its files, a line `siaga check` must print on stderr)
CASES: dict[str, tuple[str, dict[str, str | bytes], str]] = {
    "rules-steps-not-a-list": (
        "catalog: devices.yaml\nrules: rules.yaml\n",
        {"devices.yaml": CATALOG,
         "rules.yaml": "rules:\n  - name: Flood\n    type: ladder\n    steps: 7\n"},
        "rules.yaml:4: rules[0].steps: must be a list (- item lines), not an integer"),
    "catalog-missing": (
        "catalog: devices.yaml\n", {},
        "siaga.yaml:1: catalog: devices.yaml: no such file"),
    "rules-missing": (
        "catalog: devices.yaml\nrules: my-rules.yaml\n", {"devices.yaml": CATALOG},
        "siaga.yaml:2: rules: my-rules.yaml: no such file"),
    "ca-file-missing": (
        "mqtt:\n  url: mqtts://broker.example:8883\n  ca_file: ca.pem\n", {},
        "siaga.yaml:3: mqtt.ca_file: ca.pem: no such file"),
    "catalog-not-utf8": (
        "catalog: devices.yaml\n", {"devices.yaml": b"devices:\n  - id: \xff\n"},
        "devices.yaml: file: not UTF-8 text (byte 17)"),
    "config-yaml-syntax": (
        "http:\n  port: [8080\n", {},
        "siaga.yaml:3: YAML syntax: expected ',' or ']'"),
    "catalog-yaml-syntax": (
        "catalog: devices.yaml\n", {"devices.yaml": "devices:\n  - {id: a, kind: traffic\n"},
        "devices.yaml:3: YAML syntax: expected ',' or '}'"),
    "catalog-duplicate-id": (
        "catalog: devices.yaml\n", {"devices.yaml": CATALOG + CATALOG.removeprefix("devices:\n")},
        "devices.yaml:8: devices[1].id: duplicate id 'gauge-a': devices[0] has it too"),
    "config-unknown-key": (
        "catalog: devices.yaml\nrule: rules.yaml\n", {"devices.yaml": CATALOG},
        "siaga.yaml:2: rule: unknown key (did you mean rules?"),
    "user-rules-name-a-missing-device": (
        "catalog: devices.yaml\nrules: rules.yaml\n",
        {"devices.yaml": CATALOG, "rules.yaml": RULES + "    devices: [gauge-b]\n"},
        "rules.yaml:6: rules[0].devices[0]: unknown device 'gauge-b'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_siaga_run_prints_what_siaga_check_prints_and_exits_1(tmp_path: Path, case: str) -> None:
    config, files, expected = CASES[case]
    site(tmp_path, config, files)
    run = siaga(tmp_path, "run", "-c", "siaga.yaml")
    check = siaga(tmp_path, "check", "-c", "siaga.yaml")
    assert (run.code, check.code) == (1, 1)
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("siaga: configuration error:\n")
    assert expected in run.stderr
    assert run.stderr == check.stderr


def test_a_folder_named_as_the_rules_file_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    site(tmp_path, "catalog: devices.yaml\nrules: rules\n", {"devices.yaml": CATALOG})
    run = siaga(tmp_path, "run", "-c", "siaga.yaml")
    assert run.code == 1 and "Traceback" not in run.stderr
    assert "siaga.yaml:2: rules: rules: not a file" in run.stderr


def test_a_missing_configuration_file_is_one_line(tmp_path: Path) -> None:
    run = siaga(tmp_path, "run", "-c", "nowhere.yaml")
    expected = "siaga: configuration error:\nnowhere.yaml: file: not found\n"
    assert (run.code, run.stderr) == (1, expected)


def test_a_bad_environment_variable_is_named(tmp_path: Path) -> None:
    site(tmp_path, "catalog: devices.yaml\n", {"devices.yaml": CATALOG})
    env_run = subprocess.run(
        [sys.executable, "-m", "siaga", "run", "-c", "siaga.yaml"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "SIAGA_HTTP_PORT": "eighty"},
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert env_run.returncode == 1 and "Traceback" not in env_run.stderr
    assert "environment SIAGA_HTTP_PORT: must be an integer, got 'eighty'" in env_run.stderr


@pytest.mark.parametrize("case", ["catalog-missing", "catalog-yaml-syntax", "ca-file-missing"])
def test_siaga_simulate_reports_the_same_mistakes(tmp_path: Path, case: str) -> None:
    config, files, expected = CASES[case]
    site(tmp_path, config, files)
    simulate = siaga(tmp_path, "simulate", "-c", "siaga.yaml", "--duration", "1")
    assert simulate.code == 1 and "Traceback" not in simulate.stderr
    assert simulate.stderr.startswith("siaga: configuration error:\n")
    assert expected in simulate.stderr


def test_a_data_dir_that_is_a_file_is_named_before_start(tmp_path: Path) -> None:
    site(tmp_path, "catalog: devices.yaml\ndata_dir: state\n",
         {"devices.yaml": CATALOG, "state": "not a folder\n"})
    run = siaga(tmp_path, "run", "-c", "siaga.yaml")
    assert run.code == 1 and "Traceback" not in run.stderr
    assert "siaga.yaml:2: data_dir: " in run.stderr and "exists and is not a folder" in run.stderr


# `python -c` this, then the arguments: the real `siaga` command line (main, _run and the
# edge of the error tree) over a `serve` whose one task raises `error` inside the TaskGroup,
# as the service's tasks do. Nothing outside the service raises either on purpose.
SERVE_RAISING = """\
import asyncio, sys
import siaga.app
from ingest.spool import SpoolFull
from siaga.cli.main import main

async def serve(*args):
    async def task():
        raise {error}
    async with asyncio.TaskGroup() as group:
        group.create_task(task())

siaga.app.serve = serve
sys.exit(main())
"""


def siaga_serving(folder: Path, error: str) -> Result:
    """`siaga run -c siaga.yaml` in `folder`, the service raising `error` once started."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIAGA_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", SERVE_RAISING.format(error=error), "run", "-c", "siaga.yaml"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
        check=False)
    return Result(done.returncode, done.stdout, done.stderr)


def errors_logged(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


def test_an_error_raised_on_purpose_in_the_service_is_one_line_and_exit_1(
        tmp_path: Path) -> None:
    site(tmp_path, "catalog: devices.yaml\n", {"devices.yaml": CATALOG})
    run = siaga_serving(tmp_path, "SpoolFull(1024, 1000, 100)")
    assert run.code == 1 and "Traceback" not in run.stderr
    [line] = errors_logged(run.stderr)
    assert line.endswith(
        "siaga: the service stopped: spool full: 1000 of 1024 bytes used, 100 more needed; "
        "nothing unacknowledged is lost (the broker redelivers it): fix the cause and start "
        "it again")


def test_a_bug_in_the_service_keeps_its_traceback_and_exits_1(tmp_path: Path) -> None:
    site(tmp_path, "catalog: devices.yaml\n", {"devices.yaml": CATALOG})
    run = siaga_serving(tmp_path, "KeyError('reading')")
    assert run.code == 1 and errors_logged(run.stderr) == []
    assert "Traceback (most recent call last)" in run.stderr
    assert "KeyError: 'reading'" in run.stderr
    # The PEP 678 note, printed with the (TaskGroup's) exception: what the bug cost.
    assert ("siaga: the service stopped on an error; nothing unacknowledged is lost (the "
            "broker redelivers it): fix the cause and start it again\n") in run.stderr


def test_a_taken_api_port_stops_the_real_service_in_one_line(tmp_path: Path) -> None:
    # Taken: something listens there. Refusing: bound, never listening, so the service's
    # attempt to create its InfluxDB database is refused at once (it only warns).
    with socket.socket() as taken, socket.socket() as refusing:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refusing.bind(("127.0.0.1", 0))
        site(tmp_path, f"catalog: devices.yaml\n"
                       f"http: {{port: {taken.getsockname()[1]}}}\n"
                       f"influx: {{url: 'http://127.0.0.1:{refusing.getsockname()[1]}'}}\n",
             {"devices.yaml": CATALOG})
        run = siaga(tmp_path, "run", "-c", "siaga.yaml")
    assert run.code == 1 and "Traceback" not in run.stderr
    [line] = errors_logged(run.stderr)
    assert "siaga: the service stopped: " in line and "address already in use" in line
