"""A local Mosquitto: the project's mosquitto.conf adapted to a port, users and an ACL."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from siaga.broker import auth as brokerauth
from siaga.broker import config as brokerconfig
from siaga.broker.auth import SERVICE_USER, SIMULATOR_USER
from siaga.broker.config import MOSQUITTO_CONF, TlsListener, adapt_mosquitto_config
from siaga.sandbox.ports import free_port
from siaga.sandbox.server import PROBE_TIMEOUT_S, LocalServer

ADMIN_USER = "siaga.admin"  # local brokers only: the tests' observers and raw clients


class Mosquitto(LocalServer):
    """Mosquitto from the project's mosquitto.conf, adapted to a port and data dir.

    Users (random passwords in `users`): the service, the simulators, ADMIN_USER and one
    per name in `devices`; the ACL is `siaga broker init`'s for `topic_prefix` (`+`: tests
    use a prefix each). `tls` (certificate, key) enables the shipped TLS listener."""

    name = "Mosquitto"
    binary = "mosquitto"
    package = "mosquitto"

    def __init__(
        self, data_dir: Path, config: Path = MOSQUITTO_CONF, port: int | None = None, *,
        topic_prefix: str = "+", devices: Iterable[str] = (),
        tls: tuple[Path, Path] | None = None, tls_port: int | None = None,
        move_if_taken: bool | None = None,
    ) -> None:
        super().__init__(data_dir, port, move_if_taken=move_if_taken)
        self.config = config
        self.topic_prefix = topic_prefix
        users = [SERVICE_USER, SIMULATOR_USER, ADMIN_USER, *devices]
        self.users = {user: brokerauth.generate_password() for user in users}
        self.tls = None if tls is None else TlsListener(tls_port or free_port(), *tls)

    @property
    def url(self) -> str:
        """The service's URL, its credentials included."""
        return self.url_for(SERVICE_USER)

    @property
    def simulator_url(self) -> str:
        """The simulators' URL: publish anything under the prefix."""
        return self.url_for(SIMULATOR_USER)

    def url_for(self, user: str, *, tls: bool = False) -> str:
        """mqtt://user:password@127.0.0.1:port (mqtts:// and the TLS port with `tls`)."""
        assert self.tls is not None or not tls, "this broker has no TLS listener"
        scheme, port = ("mqtts", self.tls.port) if self.tls and tls else ("mqtt", self.port)
        return f"{scheme}://{quote(user, safe='')}:{quote(self.users[user], safe='')}" \
               f"@127.0.0.1:{port}"

    @property
    def config_path(self) -> Path:
        """The adapted configuration the broker runs."""
        return self.data_dir / "mosquitto.conf"

    def log_paths(self) -> list[Path]:
        return [self.output_path, self.data_dir / "mosquitto.log"]

    def ports(self) -> list[int]:
        return [self.port] + ([self.tls.port] if self.tls else [])

    def _take_fresh_ports(self) -> None:
        super()._take_fresh_ports()
        if self.tls is not None:
            self.tls = replace(self.tls, port=free_port())

    def _prepare(self) -> None:
        adapted = adapt_mosquitto_config(
            self.config.read_text(), self.port, self.data_dir, as_root=os.geteuid() == 0,
            tls=self.tls,
        )
        self.config_path.write_text(adapted)
        brokerauth.write_local_files(self.data_dir, self.users, self.topic_prefix, ADMIN_USER)

    def _command(self) -> list[str]:
        return [self.executable, "-c", str(self.config_path)]

    def _answers(self) -> bool:
        # A full MQTT CONNECT/CONNACK: an open port alone may still be a stranger's.
        connect = brokerconfig.connect_packet("", SERVICE_USER, self.users[SERVICE_USER])
        try:
            with socket.create_connection(("127.0.0.1", self.port), PROBE_TIMEOUT_S) as sock:
                sock.sendall(connect)
                accepted = sock.recv(4) == b"\x20\x02\x00\x00"
                sock.sendall(b"\xe0\x00")  # DISCONNECT
                return accepted
        except OSError:
            return False
