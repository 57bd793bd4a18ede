"""Session fixtures running the real servers; each starts only when a test asks for it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings

from siaga.sandbox.alertmanager import Alertmanager
from siaga.sandbox.influxdb import InfluxDB1, VictoriaMetrics
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.ports import free_port
from siaga.sandbox.postgres import PostgreSQL
from siaga.sandbox.prometheus import Prometheus
from siaga.sandbox.rabbitmq import RabbitCluster
from tests.receiver import RecordingReceiver

INTEGRATION_DIR = Path(__file__).parent / "integration"

# Hypothesis' policy for `make test`, written down rather than left to its defaults:
# - deadline=None and no too_slow health check: both measure speed, so on a slow or busy
#   CI machine they fail a correct property; speed belongs to the benchmark.
# - derandomize=True: the same examples on every run, so a run passes or fails the same
#   way everywhere and a failure reproduces from the commit alone; database=None, as a
#   derandomized run has nothing to replay and writes no .hypothesis/ into the tree.
# `HYPOTHESIS_PROFILE=explore` searches with fresh random examples, and more of them, to
# look for new failures on purpose; a failure found there becomes an @example.
settings.register_profile("ci", deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", parent=settings.get_profile("ci"), derandomize=False,
                          max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgreSQL]:
    """PostgreSQL; tests isolate themselves by database (`create_database`)."""
    with PostgreSQL(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """Prometheus Alertmanager, notifying a webhook on `alertmanager_receiver`'s port; tests
    isolate themselves by a label of their own."""
    hook = f"http://127.0.0.1:{free_port()}/hook"
    with Alertmanager(tmp_path_factory.mktemp("alertmanager"), hook) as server:
        yield server


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping every second what tests give it (`scrape`); tests isolate
    themselves by a label of their own on their targets."""
    with Prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes clustered (issue 18's broker); tests isolate themselves by topic
    prefix and by partitions of their own (`declare_partitions(name=...)`), and a test that
    stops or kills a node starts it again before it ends."""
    with RabbitCluster(tmp_path_factory.mktemp("rabbitmq")) as cluster:
        yield cluster


@pytest.fixture
async def alertmanager_receiver(alertmanager: Alertmanager) -> AsyncIterator[RecordingReceiver]:
    """The webhook receiver the session's Alertmanager notifies (it sees every test's alerts)."""
    port = urlsplit(alertmanager.webhook_url).port
    assert port is not None
    server = RecordingReceiver(port)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[RecordingReceiver]:
    """A real HTTP webhook receiver on a free port, recording what it is sent."""
    server = RecordingReceiver()
    await server.start()
    yield server
    await server.stop()
