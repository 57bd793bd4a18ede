"""Session fixtures running the real servers; each starts only when a test asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.localservers import InfluxDB1, Mosquitto, VictoriaMetrics

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `pytest -m "not integration"` then runs without any server.
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """Mosquitto from the shipped mosquitto.conf; tests isolate themselves by topic."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


@pytest.fixture(scope="session")
def influxdb1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """InfluxDB 1.x; tests isolate themselves by database."""
    with InfluxDB1(tmp_path_factory.mktemp("influxdb1")) as server:
        yield server


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics (the v2 write API); tests isolate themselves by metric or label."""
    with VictoriaMetrics(tmp_path_factory.mktemp("victoria")) as server:
        yield server
