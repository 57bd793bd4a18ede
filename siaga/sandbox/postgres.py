"""A local PostgreSQL: a fresh cluster under the data dir, on 127.0.0.1, for the report book.

Debian keeps the server's programs (`initdb`, `postgres`) in /usr/lib/postgresql/<version>/bin,
off PATH, so they are found through `pg_config --bindir` or that directory. PostgreSQL
refuses to run as root: when the tests run as root, the cluster belongs to the `postgres`
user the Debian package creates, and the server is started as that user through `setpriv`,
which execs in place (no parent left between mirakuru and the server, so signals reach it).
Durability settings stay at PostgreSQL's defaults (fsync and synchronous_commit on): the
report book's SIGKILL test must be able to fail here as it would in production.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg

from siaga.sandbox.ports import free_port
from siaga.sandbox.server import PROBE_TIMEOUT_S, LocalServer, ServerNotInstalled
from siaga_core.errors import SandboxError

PACKAGE = "postgresql"  # the Debian package with initdb and postgres
SERVER_USER = "postgres"  # who owns the cluster when we are root (the package creates it)
SUPERUSER = "postgres"  # the cluster's superuser role, whoever runs it
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INITDB_TIMEOUT_S = 120.0  # initdb fsyncs a few hundred files: seconds on a slow CI disk
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # what create_database takes unquoted


def server_bindir() -> Path:
    """The directory holding `initdb` and `postgres`, or ServerNotInstalled."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            candidates.append(subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True,
                timeout=PROBE_TIMEOUT_S * 10).stdout.strip())
    # The newest version first: a machine mid-upgrade has two.
    candidates += sorted(glob.glob(DEBIAN_BIN_GLOB), key=_version_key, reverse=True)
    on_path = shutil.which("postgres")
    if on_path is not None:
        candidates.append(str(Path(on_path).resolve().parent))
    for candidate in candidates:
        if candidate and all(os.access(Path(candidate, name), os.X_OK)
                             for name in ("initdb", "postgres")):
            return Path(candidate)
    raise ServerNotInstalled("postgres", PACKAGE)


def _version_key(bindir: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir))


class PostgreSQL(LocalServer):
    """postgres on 127.0.0.1 with trust authentication and its socket in the cluster dir.

    `url` is the superuser's URL for the `postgres` database; `url_for(db)` another
    database's; tests take a database each (`create_database`, `drop_database`)."""

    name = "PostgreSQL"
    binary = "postgres"
    package = PACKAGE

    def __init__(self, data_dir: Path, port: int | None = None, *,
                 move_if_taken: bool | None = None) -> None:
        # Not LocalServer.__init__: it looks the binary up on PATH, where Debian does not
        # put it. The same attributes, with the executable from server_bindir().
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.move_if_taken = port is None if move_if_taken is None else move_if_taken
        self._bindir = server_bindir()
        self.executable = str(self._bindir / self.binary)
        self._executor = None
        self._owner = _server_user() if os.geteuid() == 0 else None
        self._temporary_cluster: Path | None = None

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def cluster_dir(self) -> Path:
        """The cluster (PGDATA); its unix socket lives in it too."""
        return self.data_dir / "cluster"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        self._admin(f"CREATE DATABASE {_checked_name(name)}")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending its sessions first (a test's book may still be open)."""
        self._admin(f"DROP DATABASE IF EXISTS {_checked_name(name)} WITH (FORCE)")

    def _admin(self, statement: str) -> None:
        # Database names cannot be parameters; _checked_name keeps the statement literal-safe.
        with psycopg.connect(self.url, autocommit=True,
                             connect_timeout=int(PROBE_TIMEOUT_S * 10)) as conn:
            conn.execute(statement.encode())

    def _prepare(self) -> None:
        if (self.cluster_dir / "PG_VERSION").exists():
            return
        cluster = self._cluster_location()
        command = [str(self._bindir / "initdb"), "-D", str(cluster), "-U", SUPERUSER,
                   "--auth=trust", "--encoding=UTF8", "--no-locale"]
        try:
            subprocess.run(self._as_owner(command), check=True, capture_output=True,
                           text=True, timeout=INITDB_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            raise SandboxError(f"initdb failed ({exc.returncode}):\n{exc.stderr}") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"initdb could not run: {exc}") from None

    def _cluster_location(self) -> Path:
        """Where initdb writes: the cluster dir, or (as root, when the `postgres` user cannot
        reach the data dir, e.g. under pytest's 0700 temp root) a fresh directory in the
        system's temp dir that the cluster dir links to, removed on exit."""
        if self._owner is None or _reachable_by_others(self.data_dir):
            target = self.cluster_dir
            target.mkdir(mode=0o700, exist_ok=True)
        else:
            target = Path(tempfile.mkdtemp(prefix="siaga-postgres-"))
            self._temporary_cluster = target
            self.cluster_dir.unlink(missing_ok=True)
            self.cluster_dir.symlink_to(target, target_is_directory=True)
        if self._owner is not None:
            os.chown(target, self._owner.pw_uid, self._owner.pw_gid)
        return target

    def _command(self) -> list[str]:
        cluster = str(self.cluster_dir.resolve())
        return self._as_owner([
            self.executable, "-D", cluster, "-k", cluster, "-h", "127.0.0.1",
            "-p", str(self.port),
            "-c", "log_min_messages=warning",  # the log stays readable in an error's tail
        ])

    def _as_owner(self, command: list[str]) -> list[str]:
        if self._owner is None:
            return command
        # setpriv execs in place, unlike runuser, which stays as a parent and, once
        # signalled, SIGKILLs its child after two seconds.
        return ["setpriv", f"--reuid={self._owner.pw_uid}", f"--regid={self._owner.pw_gid}",
                "--init-groups", "--", *command]

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=max(1, int(PROBE_TIMEOUT_S)),
                                 autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False  # refused, or "the database system is starting up"

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions ended, a checkpoint), then LocalServer's stop.

        LocalServer's SIGTERM is PostgreSQL's smart shutdown, which waits for every client
        to leave; the backends lead sessions of their own, so the group signal misses them.
        """
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        super().stop()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        super().__exit__(exc_type, exc, tb)
        if self._temporary_cluster is not None:
            shutil.rmtree(self._temporary_cluster, ignore_errors=True)
            self.cluster_dir.unlink(missing_ok=True)
            self._temporary_cluster = None


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise SandboxError(
            f"PostgreSQL will not run as root and there is no {SERVER_USER!r} user to run it "
            f"as: install the Debian package {PACKAGE!r} (it creates the user) or run as "
            "another user") from None


def _reachable_by_others(path: Path) -> bool:
    """Whether another user may walk down to `path` (every directory on the way has o+x)."""
    return all(candidate.stat().st_mode & stat.S_IXOTH
               for candidate in (path, *path.parents))


def _checked_name(name: str) -> str:
    if not _DATABASE_NAME.fullmatch(name):
        raise SandboxError(f"database name {name!r} must match {_DATABASE_NAME.pattern}")
    return name
