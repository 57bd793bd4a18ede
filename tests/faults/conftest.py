"""Fault suite fixtures: markers, the short/long mode, rigs that are always torn down, figures."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import Settings
from tests.faults.harness import LONG, Rig, ServiceProcess, ThreadedReceiver, started_rig

FAULTS_DIR = Path(__file__).parent
FIGURES = pytest.StashKey[list[dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite (SIAGA_FAULTS=long for hours)")
    config.stash[FIGURES] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m "not faults"` skips the suite; `-m "not integration"` too, as it needs servers.
    for item in items:
        if FAULTS_DIR in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)
            if LONG:
                item.add_marker(pytest.mark.timeout(3 * 3600))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    if not figures:
        return
    terminalreporter.section(f"fault figures ({'long' if LONG else 'short'} mode)")
    load = os.getloadavg()
    terminalreporter.write_line(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}, {os.cpu_count()} CPUs")
    for record in figures:
        terminalreporter.write_line(json.dumps(record))
    report = os.environ.get("SIAGA_FAULTS_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as out:
            for record in figures:
                out.write(json.dumps(record) + "\n")


class Figures:
    """What a test measured, printed at the end of the run (and appended to
    $SIAGA_FAULTS_REPORT as JSON lines when set)."""

    def __init__(self, records: list[dict[str, Any]], test: str) -> None:
        self._records, self._test = records, test

    def record(self, **values: Any) -> None:
        self._records.append({"test": self._test, "mode": "long" if LONG else "short",
                              **values})


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.config.stash[FIGURES], request.node.name)


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Any]:
    """`rigs(broker, settings, rate)` starts the service and the load; all stopped at the end."""
    made: list[Rig] = []

    def start(broker: Mosquitto, settings: Settings, rate: float) -> Rig:
        workdir = tmp_path / f"rig{len(made)}"
        workdir.mkdir()
        rig = started_rig(broker, ServiceProcess(settings, workdir), rate)
        made.append(rig)
        return rig

    yield start
    for rig in made:
        rig.close()


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Any]:
    """A service process that is not started yet; killed at the end if still running."""
    made: list[ServiceProcess] = []

    def make(settings: Settings) -> ServiceProcess:
        workdir = tmp_path / f"service{len(made)}"
        workdir.mkdir()
        made.append(ServiceProcess(settings, workdir))
        return made[-1]

    yield make
    for process in made:
        process.stop()


@pytest.fixture
def webhook() -> Iterator[ThreadedReceiver]:
    """A real webhook receiver, started; stopped at the end."""
    receiver = ThreadedReceiver()
    receiver.start()
    yield receiver
    receiver.close()
