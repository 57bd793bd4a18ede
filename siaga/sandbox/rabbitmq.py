"""A local RabbitMQ cluster: three nodes on 127.0.0.1, the partitions Siaga reads declared.

Everything a node touches is under the data dir and on ports picked free: its own epmd
(`ERL_EPMD_PORT`, so it never meets a system epmd or another cluster's), its own Erlang
cookie (a `HOME` of its own holding `.erlang.cookie`), its own environment file (so
/etc/rabbitmq/rabbitmq-env.conf is never read), its database, logs, configuration and
enabled plugins. The nodes run as the current user from /usr/lib/rabbitmq/bin: Debian's
/usr/sbin wrappers switch to the `rabbitmq` user when called as root.

Node 1 forms the cluster and the others join it on their first boot through RabbitMQ's own
classic peer discovery (node 1 listed as the only seed), so no `rabbitmqctl join_cluster`
round trip is needed; a restarted node rejoins from its database.

The partitions (`declare_partitions`, written once in `ingest.amqp`) are the topology of
docs/plans/issue-18.md: the MQTT plugin publishes to `amq.topic` (topic `a/b/c` becomes
routing key `a.b.c`), a binding on `{prefix}.#` hands the messages to an
`x-consistent-hash` exchange, which puts each routing key, so each device's topic, in one
of N quorum queues (replicated on every node) with single-active-consumer set.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import aiormq

from ingest.amqp import Partitions, declare_partitions
from siaga.sandbox.ports import free_port, port_is_free
from siaga.sandbox.server import (
    POLL_INTERVAL_S,
    PROBE_TIMEOUT_S,
    LocalServer,
    ServerNotInstalled,
)
from siaga_core.errors import SandboxError

PACKAGE = "rabbitmq-server"
# Debian's /usr/sbin/rabbitmq-server and rabbitmqctl are wrappers that `su rabbitmq` when
# run as root; the scripts they wrap run as whoever calls them.
RABBIT_BIN_DIR = Path("/usr/lib/rabbitmq/bin")
PLUGINS = ("rabbitmq_mqtt", "rabbitmq_consistent_hash_exchange")
USER = "siaga"  # the cluster's one user: AMQP and MQTT, administrator, everything on "/"
NODE_PREFIX = "siaga-r"  # node names siaga-r1@localhost, siaga-r2@localhost, ...
HOST = "localhost"  # short node names resolve it to 127.0.0.1, with no DNS involved
# A rabbitmqctl call boots an Erlang VM of its own (about a second here) and then waits on
# the node; a node in the middle of a leader election can take several more seconds.
CTL_TIMEOUT_S = 60.0
# Erlang's schedulers spin while idle by default, taking a core each; three nodes on a
# shared 2-core CI machine would starve the tests. RabbitMQ's docs recommend these flags
# for shared hosts. The distribution listener binds 127.0.0.1 only.
ERL_ARGS = "+sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


class RabbitError(SandboxError, RuntimeError):
    """A rabbitmqctl call failed, or the cluster is not as expected."""


def rabbit_script(name: str) -> str:
    """The path of one of RabbitMQ's scripts, or ServerNotInstalled."""
    path = RABBIT_BIN_DIR / name
    if not os.access(path, os.X_OK):
        raise ServerNotInstalled(name, PACKAGE)
    return str(path)


class Epmd(LocalServer):
    """The Erlang port mapper for one cluster, on a port of its own, in the foreground.

    Started by us rather than by the first node (which would daemonise it where no one
    stops it), so the cluster's exit leaves no epmd behind."""

    name = "epmd"
    binary = "epmd"
    package = "erlang-base"

    def _command(self) -> list[str]:
        return [self.executable, "-port", str(self.port), "-address", "127.0.0.1"]

    def _answers(self) -> bool:
        # NAMES_REQ: two length bytes then 'n'; epmd answers with its port (4 bytes).
        try:
            with socket.create_connection(("127.0.0.1", self.port), PROBE_TIMEOUT_S) as sock:
                sock.sendall(b"\x00\x01n")
                return sock.recv(4) == self.port.to_bytes(4, "big")
        except OSError:
            return False


class RabbitNode(LocalServer):
    """One node of a RabbitCluster; `port` is its AMQP port."""

    name = "RabbitMQ"
    # 9 to 10 s per node here; a join or a restart after SIGKILL on a loaded 2-core CI
    # machine, with the quorum queues of earlier tests to recover, can take several times that.
    start_timeout_s = 120.0
    binary = "rabbitmq-server"
    package = PACKAGE

    def __init__(self, cluster: RabbitCluster, index: int) -> None:
        # Not LocalServer.__init__: the binary is not the one on PATH (see RABBIT_BIN_DIR).
        self.data_dir = (cluster.data_dir / f"r{index}").resolve()
        self.port = free_port()
        self.move_if_taken = True
        self.executable = rabbit_script(self.binary)
        self._executor = None
        self.cluster = cluster
        self.index = index
        self.mqtt_port = free_port()
        self.dist_port = free_port()

    @property
    def node_name(self) -> str:
        return f"{NODE_PREFIX}{self.index}@{HOST}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "rabbitmq.conf"

    def log_paths(self) -> list[Path]:
        return [self.output_path, self.data_dir / "log" / f"{self.node_name}.log"]

    def ports(self) -> list[int]:
        return [self.port, self.mqtt_port, self.dist_port]

    def _take_fresh_ports(self) -> None:
        self.port, self.mqtt_port, self.dist_port = free_port(), free_port(), free_port()

    def environment(self) -> dict[str, str]:
        """The variables RabbitMQ's scripts read for this node (the server and its CLI)."""
        return {
            **self.cluster.environment(),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.config_path),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.data_dir / "advanced.config"),
            "RABBITMQ_MNESIA_BASE": str(self.data_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.data_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.data_dir / "beam.pid"),  # for kill()
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ERL_ARGS,
        }

    def _prepare(self) -> None:
        seed = f"{NODE_PREFIX}1@{HOST}"
        self.config_path.write_text("\n".join([
            f"listeners.tcp.1 = 127.0.0.1:{self.port}",
            f"mqtt.listeners.tcp.1 = 127.0.0.1:{self.mqtt_port}",
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            # Only MQTT subscribers with clean_session=false get a durable queue; as a quorum
            # queue it survives the loss of its node like the partitions do.
            "mqtt.durable_queue_type = quorum",
            f"default_user = {USER}",
            f"default_pass = {self.cluster.password}",
            "default_user_tags.administrator = true",
            # Partition leaders spread over the nodes instead of all on the declaring one.
            "queue_leader_locator = balanced",
            "cluster_formation.peer_discovery_backend = classic_config",
            f"cluster_formation.classic_config.nodes.1 = {seed}",
            "log.console = false",
            "log.file.level = info",
            "",
        ]))

    def kill(self) -> None:
        """SIGKILL the node's processes and return once the beam is gone, its ports free.

        mirakuru waits for the start script only; the beam, its child, may still be in its
        exit for a few milliseconds, holding its ports, and a restart would find them taken.
        """
        beam = self._beam_pid() if self.running else None
        super().kill()
        deadline = time.monotonic() + self.start_timeout_s
        while beam is not None and _running(beam) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        # The beam's own helpers (erl_child_setup and the like) can hold its listening
        # sockets for a moment after it is gone: seen on CI as "port already in use".
        while (not all(port_is_free(port) for port in self.ports())
               and time.monotonic() < deadline):
            time.sleep(POLL_INTERVAL_S)

    def _beam_pid(self) -> int | None:
        try:
            return int((self.data_dir / "beam.pid").read_text().strip())
        except (OSError, ValueError):
            return None  # not written yet: the node was still booting

    def _command(self) -> list[str]:
        # LocalServer starts the command in our own environment; `env` (which execs in
        # place) adds the node's variables without touching os.environ, shared by the
        # threads that start the nodes together.
        variables = [f"{key}={value}" for key, value in self.environment().items()]
        return ["env", *variables, self.executable]

    def _answers(self) -> bool:
        # The AMQP listener opens last in a node's boot, after the plugins (MQTT) and after
        # joining the cluster; an answer is Connection.Start, a method frame on channel 0.
        try:
            with socket.create_connection(("127.0.0.1", self.port), PROBE_TIMEOUT_S) as sock:
                sock.sendall(AMQP_HEADER)
                return sock.recv(3) == b"\x01\x00\x00"
        except OSError:
            return False


class RabbitCluster:
    """`nodes` RabbitMQ nodes clustered on 127.0.0.1; a context manager.

    Nodes are numbered from 1, as their names are (`siaga-r1@localhost`). Every node takes
    AMQP (`amqp_url(i)`) and MQTT (`mqtt_port(i)`) from the user `USER` with `password`.
    """

    def __init__(self, data_dir: Path, nodes: int = 3) -> None:
        if nodes < 1:
            raise SandboxError(f"a cluster needs at least one node, not {nodes}")
        self.data_dir = Path(data_dir).resolve()
        self.password = secrets.token_urlsafe(16)
        self._cookie = secrets.token_hex(20)
        self.epmd = Epmd(self.data_dir / "epmd")
        self.nodes = [RabbitNode(self, index) for index in range(1, nodes + 1)]
        self._ctl = rabbit_script("rabbitmqctl")

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start epmd, node 1, then the others at once (they join node 1 as they boot)."""
        self._prepare()
        self.epmd.start()
        first, *others = self.nodes
        first.start()
        if others:
            with ThreadPoolExecutor(len(others)) as pool:
                for future in [pool.submit(node.start) for node in others]:
                    future.result()

    def stop(self) -> None:
        """Stop every node (at once), then epmd."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            futures = [pool.submit(node.stop) for node in self.nodes]
        self.epmd.stop()
        for future in futures:
            future.result()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.stop()
        finally:
            self.kill()  # whatever did not stop in time

    def kill(self) -> None:
        """SIGKILL every node and epmd."""
        for node in self.nodes:
            node.kill()
        self.epmd.kill()

    def node(self, i: int) -> RabbitNode:
        """Node `i`, counted from 1."""
        if not 1 <= i <= len(self.nodes):
            raise SandboxError(f"no node {i} in a cluster of {len(self.nodes)}")
        return self.nodes[i - 1]

    def stop_node(self, i: int) -> None:
        """Stop node `i` gracefully (SIGTERM: it hands over its queue leaderships)."""
        self.node(i).stop()

    def kill_node(self, i: int) -> None:
        """SIGKILL node `i` (its beam and the helpers it started): a crash."""
        self.node(i).kill()

    def start_node(self, i: int) -> None:
        """Start node `i` again on its ports; it rejoins the cluster from its database."""
        self.node(i).start()

    # -- addresses --------------------------------------------------------------------

    def amqp_url(self, i: int) -> str:
        """amqp://siaga:password@127.0.0.1:port/ of node `i` (vhost "/")."""
        return f"amqp://{USER}:{quote(self.password, safe='')}@127.0.0.1:{self.node(i).port}/"

    def mqtt_port(self, i: int) -> int:
        return self.node(i).mqtt_port

    def node_name(self, i: int) -> str:
        return self.node(i).node_name

    def node_index(self, node_name: str) -> int:
        """The number of the node called `node_name`."""
        for node in self.nodes:
            if node.node_name == node_name:
                return node.index
        raise RabbitError(f"{node_name!r} is not a node of this cluster")

    # -- inspection -------------------------------------------------------------------

    def rabbitmqctl(self, i: int, *args: str, timeout: float = CTL_TIMEOUT_S) -> str:
        """Run `rabbitmqctl -n <node i> args...`; its standard output, or RabbitError."""
        node = self.node(i)
        # The CLI is a distributed Erlang node too; a free port each call instead of
        # RabbitMQ's fixed 35672-35682, which another cluster's CLI may hold.
        ctl_port = str(free_port())
        env = {**os.environ, **node.environment(),
               "RABBITMQ_CTL_DIST_PORT_MIN": ctl_port, "RABBITMQ_CTL_DIST_PORT_MAX": ctl_port}
        try:
            done = subprocess.run([self._ctl, "-n", node.node_name, *args], env=env,
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {node.node_name}: "
                              f"no answer within {timeout:g} s") from None
        if done.returncode != 0:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {node.node_name} exited "
                              f"{done.returncode}:\n{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def running_nodes(self, i: int = 1) -> list[str]:
        """The cluster's running nodes as node `i` sees them."""
        status = json.loads(self.rabbitmqctl(i, "cluster_status", "--formatter", "json"))
        return sorted(status["running_nodes"])

    def queue_leaders(self, i: int = 1) -> dict[str, tuple[str, list[str]]]:
        """Each quorum queue's leader and members, as node `i` sees them."""
        rows = json.loads(self.rabbitmqctl(i, "list_queues", "name", "type", "leader",
                                           "members", "--formatter", "json"))
        return {row["name"]: (row["leader"], sorted(row["members"]))
                for row in rows if row["type"] == "quorum"}

    # -- topology ---------------------------------------------------------------------

    async def declare_partitions(self, prefix: str, partitions: int, *, name: str = "siaga",
                                 node: int = 1) -> Partitions:
        """Declare, through node `node`, the partitions for MQTT topics under `prefix`.

        `ingest.amqp.declare_partitions`, as the service declares them, with every topic
        under `prefix` bound and one queue member per node. Declaring again with the same
        arguments changes nothing; `name` lets tests keep to partitions of their own.
        """
        if partitions < 1:
            raise SandboxError(f"at least one partition, not {partitions}")
        async with aiormq.connect(self.amqp_url(node)) as connection:
            channel = await connection.channel(publisher_confirms=False)
            return await declare_partitions(channel, [f"{prefix}/#"], name=name,
                                            partitions=partitions, replicas=len(self.nodes))

    # -- setup ------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The variables every node and CLI call of this cluster shares."""
        return {
            "HOME": str(self.data_dir / "home"),  # .erlang.cookie
            "ERL_EPMD_PORT": str(self.epmd.port),
            "RABBITMQ_CONF_ENV_FILE": str(self.data_dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.data_dir / "enabled_plugins"),
        }

    def _prepare(self) -> None:
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            # Erlang refuses a cookie file others can read.
            cookie.write_text(self._cookie)
            cookie.chmod(0o400)
        (self.data_dir / "rabbitmq-env.conf").touch()
        (self.data_dir / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")

    def __repr__(self) -> str:
        return f"RabbitCluster(nodes={len(self.nodes)}, data_dir={str(self.data_dir)!r})"


def _running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has: its ports are free)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


__all__: Sequence[str] = ("Partitions", "RabbitCluster", "RabbitError", "RabbitNode")
