"""One local server process: free ports, start until it answers, stop, and errors with its log.

mirakuru runs the process (its own session, polling readiness, SIGTERM then SIGKILL, and the
leftovers killed at interpreter exit). What it does not know stays here: picking free ports and
moving to fresh ones when a port turns out taken, writing the configuration, recognising a
failed bind in the log, and ending errors with the log's tail. Each server says how it is
started (`_command`) and how it answers (`_answers`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import mirakuru
from mirakuru.exceptions import ProcessFinishedWithError

from siaga.sandbox.ports import free_port, port_is_free
from siaga_core.errors import SandboxError

INSTALL_HINT = "sudo apt-get install -y mosquitto influxdb victoria-metrics (or `make setup`)"
# Sbin directories are often missing from a user's PATH, and mosquitto lives in /usr/sbin.
EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# influxd opens every shard and VictoriaMetrics its parts before listening: seconds on a
# cold CI disk, so allow plenty before calling the start a failure. mirakuru has one time-out
# for starting and stopping, so a server that hangs on SIGTERM also gets this long before
# SIGKILL (a graceful stop only flushes caches: well under a second here).
START_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 30
# Starts on fresh ports after a port turned out taken: each new pick is a port the kernel
# just called free, so a second loss is already rare.
START_ATTEMPTS = 5
# How servers word a failed bind: Mosquitto "Address already in use", Go servers
# (influxd, VictoriaMetrics) "bind: address already in use".
PORT_TAKEN_MARK = "address already in use"


class ServerNotInstalled(SandboxError, RuntimeError):
    """A server binary is missing; the message names the Debian package to install."""

    def __init__(self, binary: str, package: str) -> None:
        super().__init__(
            f"{binary} not found (Debian package {package!r}); install the servers with: "
            f"{INSTALL_HINT}"
        )
        self.binary = binary
        self.package = package


class ServerStartError(SandboxError, RuntimeError):
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


class _Probe(mirakuru.Executor):
    """A mirakuru executor whose readiness is the server's own probe (MQTT CONNECT, HTTP)."""

    def __init__(self, command: list[str], answers: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(command, **kwargs)
        self._answers = answers

    def pre_start_check(self) -> bool:
        return False  # LocalServer checked its ports by binding them, which is stricter

    def after_start_check(self) -> bool:
        # mirakuru lets a process exit with status 0 (a daemon forking away) and waits out the
        # time-out; our servers run in the foreground, so any exit is a failed start.
        if self.process is not None and self.process.poll() is not None:
            raise mirakuru.ProcessExitedWithError(self, self.process.returncode)
        return self._answers()


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
    # Until it answers (and, on stop, until SIGKILL): an Erlang node joining a cluster on a
    # loaded machine needs more than a database does.
    start_timeout_s: ClassVar[float] = START_TIMEOUT_S

    def __init__(self, data_dir: Path, port: int | None = None, *,
                 move_if_taken: bool | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.move_if_taken = port is None if move_if_taken is None else move_if_taken
        self.executable = find_binary(self.binary, self.package)  # fail before any work
        self._executor: _Probe | None = None

    @property
    def output_path(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.data_dir / f"{self.binary}.out"

    @property
    def running(self) -> bool:
        return self._executor is not None and self._executor.running()

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (for measuring it), else None."""
        process = self._executor.process if self._executor is not None else None
        return process.pid if process is not None and self.running else None

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
            # mirakuru starts the process in a session of its own: Ctrl-C in a terminal
            # (`siaga demo`) reaches the service, which shuts down first; the servers are
            # stopped after it, by `stop()`.
            executor = _Probe(command, self._answers, timeout=self.start_timeout_s,
                              sleep=POLL_INTERVAL_S, stdin=subprocess.DEVNULL, stdout=output,
                              stderr=subprocess.STDOUT)
            try:
                executor.start()
            except mirakuru.ProcessExitedWithError as exc:
                executor.kill()  # reaps a process that exited with status 0
                raise ServerStartError(
                    f"{self.name} exited with status {exc.exit_code} on start-up "
                    f"(port {self.port})\n{log_tail(self.log_paths())}",
                    port_taken=_logged_since(logs_before, PORT_TAKEN_MARK),
                ) from None
            except mirakuru.TimeoutExpired:  # mirakuru has killed it
                raise ServerStartError(
                    f"{self.name} did not answer on 127.0.0.1:{self.port} within "
                    f"{self.start_timeout_s:g} s\n{log_tail(self.log_paths())}"
                ) from None
        self._executor = executor

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `start_timeout_s`; no-op if not running."""
        executor, self._executor = self._executor, None
        if executor is not None:
            # mirakuru raises when the exit status is not the signal's; a server that
            # crashed or exited by itself is just as stopped.
            with contextlib.suppress(ProcessFinishedWithError):
                executor.stop()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to save anything."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.kill()

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


class PrometheusFamilyServer(LocalServer):
    """A server of the Prometheus project (Prometheus, Alertmanager): an HTTP API at `url`,
    ready once `/-/ready` answers 200."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            return http_request(f"{self.url}/-/ready")[0] == 200
        except OSError:
            return False


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
