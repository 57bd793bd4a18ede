"""Real Mosquitto, InfluxDB 1.x and VictoriaMetrics on free local ports (demo, tests, bench)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import quote

from siaga.broker import auth as brokerauth
from siaga.broker import config as brokerconfig
from siaga.broker.auth import SERVICE_USER, SIMULATOR_USER
from siaga.broker.config import MOSQUITTO_CONF, TlsListener, adapt_mosquitto_config
from siaga.sandbox.ports import free_port, port_is_free

INSTALL_HINT = "sudo apt-get install -y mosquitto influxdb victoria-metrics (or `make setup`)"
# Sbin directories are often missing from a user's PATH, and mosquitto lives in /usr/sbin.
EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# influxd opens every shard and VictoriaMetrics its parts before listening: seconds on a
# cold CI disk, so allow plenty before calling the start a failure.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0  # a graceful stop flushes caches; past this, SIGKILL
POLL_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 30
# Starts on fresh ports after a port turned out taken: each new pick is a port the kernel
# just called free, so a second loss is already rare.
START_ATTEMPTS = 5
# How servers word a failed bind: Mosquitto "Address already in use", Go servers
# (influxd, VictoriaMetrics) "bind: address already in use".
PORT_TAKEN_MARK = "address already in use"
ADMIN_USER = "siaga.admin"  # local brokers only: the tests' observers and raw clients


class ServerNotInstalled(RuntimeError):
    """A server binary is missing; the message names the Debian package to install."""

    def __init__(self, binary: str, package: str) -> None:
        super().__init__(
            f"{binary} not found (Debian package {package!r}); install the servers with: "
            f"{INSTALL_HINT}"
        )
        self.binary = binary
        self.package = package


class ServerStartError(RuntimeError):
    """A server exited or did not answer in time; the message ends with its log's tail.

    `port_taken`: the start failed because one of its ports was in use.
    """

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        self.port_taken = port_taken


def find_binary(binary: str, package: str) -> str:
    """The path of `binary`, or ServerNotInstalled."""
    search_path = os.pathsep.join([os.environ.get("PATH", os.defpath), *EXTRA_BIN_DIRS])
    found = shutil.which(binary, path=search_path)
    if found is None:
        raise ServerNotInstalled(binary, package)
    return found


def log_tail(paths: list[Path], lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of each existing log in `paths`, for error messages."""
    parts = []
    for path in paths:
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts) or "(no log written)"


def http_request(
    url: str, form: dict[str, str] | None = None, timeout: float = PROBE_TIMEOUT_S
) -> tuple[int, bytes]:
    """GET `url`, or POST `form` to it, never through a proxy from the environment."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class LocalServer:
    """One server process on 127.0.0.1; `stop()` and `start()` keep its port and data.

    Ports left to the server (None) are picked free, but a pick is only a guess: between
    `free_port()` and the server's bind another process may take the port. So until its
    first successful start, a server with `move_if_taken` (the default for picked ports)
    that finds a port taken, before starting or when the process fails to bind, starts
    again on fresh ports; read `port` after `start()`. Once started, it keeps its ports,
    as clients know them.
    """

    name: ClassVar[str]
    binary: ClassVar[str]
    package: ClassVar[str]  # the Debian package providing `binary`

    def __init__(self, data_dir: Path, port: int | None = None, *,
                 move_if_taken: bool | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.move_if_taken = port is None if move_if_taken is None else move_if_taken
        self.executable = find_binary(self.binary, self.package)  # fail before any work
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def output_path(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.data_dir / f"{self.binary}.out"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (no-op if running) and return once it answers.

        A taken port is a ServerStartError with `port_taken`, unless the server may move
        (see the class): then it tries fresh ports, up to START_ATTEMPTS starts in all.
        """
        if self.running:
            return
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
            except ServerStartError as exc:
                if not (exc.port_taken and self.move_if_taken) or attempt == START_ATTEMPTS:
                    raise
                self._take_fresh_ports()
            else:
                self.move_if_taken = False  # clients may know these ports from now on
                return

    def _take_fresh_ports(self) -> None:
        """Pick new free ports for every port the server listens on."""
        self.port = free_port()

    def _start_once(self) -> None:
        # Otherwise the readiness probe could be answered by whoever holds the port.
        taken = [port for port in self.ports() if not port_is_free(port)]
        if taken:
            raise ServerStartError(f"{self.name}: port {taken[0]} is already in use",
                                   port_taken=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        command = self._command()
        logs_before = {path: _size(path) for path in self.log_paths()}
        with self.output_path.open("ab") as output:
            output.write(f"--- {time.strftime('%FT%T')} starting {' '.join(command)}\n".encode())
            output.flush()
            # A session of its own: Ctrl-C in a terminal (`siaga demo`) reaches the service,
            # which shuts down first; the servers are stopped after it, by `stop()`.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._process = process
        self._wait_until_answering(process, logs_before)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; no-op if not running."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to save anything."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port}, data_dir={str(self.data_dir)!r})"

    def _wait_until_answering(self, process: subprocess.Popen[bytes],
                              logs_before: dict[Path, int]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                self._process = None
                raise ServerStartError(
                    f"{self.name} exited with status {process.returncode} on start-up "
                    f"(port {self.port})\n{log_tail(self.log_paths())}",
                    port_taken=_logged_since(logs_before, PORT_TAKEN_MARK),
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"{self.name} did not answer on 127.0.0.1:{self.port} within "
                    f"{START_TIMEOUT_S:g} s\n{log_tail(self.log_paths())}"
                )
            time.sleep(POLL_INTERVAL_S)

    def log_paths(self) -> list[Path]:
        """The files to look at when the server misbehaves."""
        return [self.output_path]

    def ports(self) -> list[int]:
        """Every port the server listens on."""
        return [self.port]

    def _prepare(self) -> None:
        """Write the configuration files the command needs."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _logged_since(sizes: dict[Path, int], mark: str) -> bool:
    """Whether `mark` (any case) was written to one of the logs past the sizes noted."""
    for path, size in sizes.items():
        with contextlib.suppress(OSError), path.open("rb") as log:
            log.seek(size)
            if mark in log.read().decode(errors="replace").lower():
                return True
    return False


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


class InfluxDB1(LocalServer):
    """influxd 1.x with everything under `data_dir`, quiet logs and no telemetry."""

    name = "InfluxDB"
    binary = "influxd"
    package = "influxdb"

    def __init__(
        self, data_dir: Path, port: int | None = None, rpc_port: int | None = None, *,
        move_if_taken: bool | None = None,
    ) -> None:
        super().__init__(data_dir, port, move_if_taken=move_if_taken)
        self.rpc_port = rpc_port or free_port()  # backup/restore service; default 8088 clashes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "influxdb.conf"

    def ports(self) -> list[int]:
        return [self.port, self.rpc_port]

    def _take_fresh_ports(self) -> None:
        super()._take_fresh_ports()
        self.rpc_port = free_port()

    def query(self, q: str, db: str | None = None, epoch: str | None = None) -> dict[str, Any]:
        """Run InfluxQL and return the decoded JSON; raise RuntimeError unless HTTP 200."""
        form = {"q": q} | ({"db": db} if db else {}) | ({"epoch": epoch} if epoch else {})
        status, body = http_request(f"{self.url}/query", form, timeout=30.0)
        if status != 200:
            text = body.decode(errors="replace")
            raise RuntimeError(f"InfluxDB answered {status} to {q!r}: {text}")
        result: dict[str, Any] = json.loads(body)
        return result

    def _prepare(self) -> None:
        self.config_path.write_text(
            # `reporting-enabled` is Debian's patched key, `reporting-disabled` upstream's;
            # influxd ignores the one it does not know.
            "reporting-enabled = false\n"
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            "[meta]\n"
            f"  dir = {_toml_string(self.data_dir / 'meta')}\n"
            "  logging-enabled = false\n"
            "[data]\n"
            f"  dir = {_toml_string(self.data_dir / 'data')}\n"
            f"  wal-dir = {_toml_string(self.data_dir / 'wal')}\n"
            "  query-log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"  # no _internal database filling up the data dir
            "[http]\n"
            f'  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[continuous_queries]\n"
            "  log-enabled = false\n"
            "[logging]\n"
            '  level = "warn"\n'
            "  suppress-logo = true\n"
        )

    def _command(self) -> list[str]:
        return [self.executable, "run", "-config", str(self.config_path)]

    def _answers(self) -> bool:
        try:
            return http_request(f"{self.url}/ping")[0] == 204
        except OSError:
            return False


def _toml_string(path: Path) -> str:
    # JSON's string escapes are all valid in a TOML basic string.
    return json.dumps(str(path))


class VictoriaMetrics(LocalServer):
    """Single-node VictoriaMetrics: `/api/v2/write` for the v2 writer, export for reading back."""

    name = "VictoriaMetrics"
    binary = "victoria-metrics"
    package = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flush(self) -> None:
        """Make every accepted sample searchable now, not after the ~1 s in-memory buffering."""
        status, body = http_request(f"{self.url}/internal/force_flush", timeout=30.0)
        if status != 200:
            raise RuntimeError(f"VictoriaMetrics force_flush answered {status}: {body!r}")

    def export(self, match: str) -> list[dict[str, Any]]:
        """The series matching the selector `match`, as `/api/v1/export` JSON lines."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": match})
        status, body = http_request(f"{self.url}/api/v1/export?{query}", timeout=30.0)
        if status != 200:
            raise RuntimeError(f"VictoriaMetrics export answered {status}: {body!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def _command(self) -> list[str]:
        return [
            self.executable,
            f"-storageDataPath={self.data_dir / 'storage'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",  # tests and replays write timestamps years in the past
            "-search.latencyOffset=0",  # show the newest samples at once, not 30 s later
            "-search.disableCache",  # a test's second query must not see the first's answer
        ]

    def _answers(self) -> bool:
        try:
            return http_request(f"{self.url}/health")[0] == 200
        except OSError:
            return False
