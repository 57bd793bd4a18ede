"""Local servers start on a fresh port when theirs was taken, and keep their port once up."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from siaga.sandbox import server as localserver
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.server import ServerStartError
from tests.integration.support import Publisher


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port a stranger listens on for the whole test."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        yield int(stranger.getsockname()[1])


@pytest.fixture
def blind_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The free-port check misses the stranger: the port is lost between the check and the
    server's own bind, the race `free_port()` cannot rule out."""
    monkeypatch.setattr(localserver, "port_is_free", lambda port: True)


def answers_mqtt(broker: Mosquitto) -> bool:
    publisher = Publisher(broker)
    try:
        publisher.publish("t/local-servers", b"x")
        publisher.wait_acked(1)
        return True
    finally:
        publisher.close()


def test_a_broker_whose_port_is_taken_starts_on_a_fresh_one(
    tmp_path: Path, held_port: int
) -> None:
    with Mosquitto(tmp_path, port=held_port, move_if_taken=True) as broker:
        assert broker.port != held_port
        assert answers_mqtt(broker)


def test_a_broker_that_loses_its_port_at_bind_starts_again_elsewhere(
    tmp_path: Path, held_port: int, blind_check: None
) -> None:
    with Mosquitto(tmp_path, port=held_port, move_if_taken=True) as broker:
        assert broker.port != held_port
        assert answers_mqtt(broker)
    # The first attempt really did fail at the bind, and said so in its log.
    logs = "".join(path.read_text(errors="replace") for path in broker.log_paths())
    assert "address already in use" in logs.lower()


def test_influxdb_that_loses_its_port_at_bind_starts_again_elsewhere(
    tmp_path: Path, held_port: int, blind_check: None
) -> None:
    with InfluxDB1(tmp_path, port=held_port, move_if_taken=True) as influx:
        assert influx.port != held_port
        assert influx.query("SHOW DATABASES")["results"]


def test_a_port_asked_for_is_not_moved(tmp_path: Path, held_port: int) -> None:
    with pytest.raises(ServerStartError, match="already in use") as raised:
        Mosquitto(tmp_path, port=held_port).start()
    assert raised.value.port_taken


def test_a_started_server_keeps_its_port_across_a_restart(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    with broker:
        port = broker.port
    with socket.socket() as stranger:  # takes the port while the broker is down
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        with pytest.raises(ServerStartError, match="already in use") as raised:
            broker.start()
    assert raised.value.port_taken and broker.port == port
    with broker:
        assert broker.port == port and answers_mqtt(broker)
