"""The shipped TLS listener, with a certificate made here: the service ingests over mqtts://."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from devices.kinds import Kind
from devices.topics import TopicScheme
from ingest.settings import InfluxSettings
from siaga.broker.auth import SERVICE_USER, SIMULATOR_USER
from siaga.broker.config import MOSQUITTO_CONF, TlsListener, adapt_mosquitto_config
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga_core.mqttloop import BrokerAddress
from simulators.connection import BrokerUnavailable, Connection
from tests.integration.support import (
    influx_count,
    make_settings,
    running_service,
    unique_name,
)
from tests.polling import eventually

TS = 1_700_000_000


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "broker.crt", folder / "broker.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory,
               certificate: tuple[Path, Path]) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("tls-broker"), tls=certificate) as server:
        yield server


def test_the_tls_listener_is_the_shipped_one_uncommented(tmp_path: Path) -> None:
    tls = TlsListener(8884, tmp_path / "c.crt", tmp_path / "c.key")
    shipped = MOSQUITTO_CONF.read_text().splitlines()
    adapted = adapt_mosquitto_config("\n".join(shipped), 1234, tmp_path, as_root=False, tls=tls)
    changed = dict((old, new) for old, new in zip(shipped, adapted.splitlines(), strict=True)
                   if old != new)
    assert changed["#listener 8883"] == "listener 8884 127.0.0.1"
    assert changed["#certfile /etc/mosquitto/certs/siaga.crt"] == f"certfile {tls.certfile}"
    assert changed["#keyfile /etc/mosquitto/certs/siaga.key"] == f"keyfile {tls.keyfile}"


async def test_the_service_ingests_a_simulated_device_over_tls(
    tls_broker: Mosquitto, influxdb1: InfluxDB1, certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    database = unique_name("tls_")
    influx = InfluxSettings(api="v1", url=influxdb1.url, database=database)
    settings = make_settings(tls_broker.url_for(SERVICE_USER, tls=True), influx, tmp_path)
    settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(
        update={"ca_file": certificate[0]})})
    assert tls_broker.tls is not None
    address = BrokerAddress("127.0.0.1", tls_broker.tls.port, SIMULATOR_USER,
                            tls_broker.users[SIMULATOR_USER], tls=True,
                            ca_file=str(certificate[0]))
    topic = TopicScheme(settings.mqtt.topic_prefix).telemetry(Kind.WATER_LEVEL, "manggarai")
    async with running_service(settings) as service:
        async with Connection(address, unique_name("tls-sim-"), window=10) as device:
            device.publish(topic, orjson.dumps({"ts": TS, "seq": 1, "level_cm": 420.0}), "t", 1)
            assert await device.drain(10)
        await eventually(lambda: influx_count(influxdb1, database, "water_level", "seq") == 1)
        assert service.stats.dead_lettered == 0


async def test_a_client_that_does_not_trust_the_certificate_cannot_connect(
    tls_broker: Mosquitto,
) -> None:
    assert tls_broker.tls is not None
    address = BrokerAddress("127.0.0.1", tls_broker.tls.port, SIMULATOR_USER,
                            tls_broker.users[SIMULATOR_USER], tls=True)  # system CAs only
    with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        async with Connection(address, unique_name("tls-sim-"), window=10):
            pass

