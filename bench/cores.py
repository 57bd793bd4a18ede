"""Cores (issue 18): each system's consumers confined to 1, 2 and all cores, side by side.

For each count of cores N (1, 2 and all, deduplicated: `core_counts`), each system runs as a
user would run it on N cores, its processes started under `taskset -c 0-(N-1)` (so every
thread and child they start is confined too); the broker, InfluxDB and PostgreSQL stay
unconfined. A live load (the memory and latency runs) runs on the cores after the first N
when there are any (`spare_cpus`): the load generator is not the system measured, and on
Siaga's core it was most of the alert p99 (run-queue waits, bench/README.md):

- `siaga`: one `siaga run` reading Mosquitto (MQTT input, as today), at 1 core only: one
  process is one event loop.
- `siaga-amqp`: N `siaga run` instances sharing the work as the product does for several
  workers (docs/scaling.md): one RabbitMQ node whose MQTT plugin takes the devices'
  messages, `ingest.input: amqp`, instance i of N over 12 partitions (one replica), and one
  PostgreSQL for the shared alert book (`alerting.database_url`). At N = 1 this is the
  broker's (and the shared book's) own cost beside `siaga`, apart from the scaling.
- `node-red`, `paho-batched`: N processes on the same Mosquitto, each with a shared
  subscription (`$share/bench/...`, Mosquitto deals the messages round-robin) when N > 1,
  the plain subscription at N = 1. Shared subscriptions do not keep a device's readings in
  order; Siaga's partitions do.

Per (system, N, message shape): a backlog drain as bench/throughput.py measures it (a
backlog queued while the consumers are away, readings/s from the first poll that saw
readings to the first that saw them all), and memory at a steady live rate common to all
(bench/live.py's figures: the sum of the consumers' RSS, median after a warm-up). Then
Siaga's alert and storage latency (bench/latency.py's probes) with a background load of
half the batch-100 drain rate `siaga` reached at 1 core in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiormq
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench import backlog, feed, latency, live, nodered, throughput
from bench.bed import Bed, fresh_bed, prime_session
from bench.consumers import PEERS_DIR, Running
from bench.influxdb import Influx
from bench.procs import Usage, child, cpu_percent, usage, wait_quiet
from bench.receiver import Receiver
from devices.topics import TopicScheme
from ingest.amqp import declare_partitions
from siaga.sandbox.ports import free_port
from siaga.sandbox.postgres import PostgreSQL
from siaga.sandbox.rabbitmq import USER, RabbitCluster
from siaga.settings import load_settings
from simulators.load import LoadConfig, synthetic_devices

SHARE_GROUP = "bench"  # $share/bench/<filter>: every peer process of a setup in one group
PEERS = ("node-red", "paho-batched")  # scaled by shared subscriptions
# Out of this scenario: the naive script stores ~1,600 readings/s on any number of cores.
SYSTEMS = ("siaga", "siaga-amqp", *PEERS)
RABBIT_NODE = 1
LATENCY_SHARE = 0.5  # the alert and storage probes run at this share of the measured maximum


def core_counts(total: int) -> list[int]:
    """1, 2 and all `total` cores, without repeats or more than there are."""
    return sorted({count for count in (1, 2, total) if 1 <= count <= max(total, 1)})


def cpu_list(cores: int) -> str:
    """The `taskset -c` list of the first `cores` cores."""
    return "0" if cores == 1 else f"0-{cores - 1}"


def spare_cpus(cores: int, total: int | None = None) -> str | None:
    """The `taskset -c` list of the cores after the first `cores`, where the live load runs
    (None when the setup has them all: the load then runs anywhere)."""
    if total is None:
        total = os.cpu_count() or 1
    if cores >= total:
        return None
    return str(cores) if cores == total - 1 else f"{cores}-{total - 1}"


@dataclass(frozen=True, slots=True)
class Setup:
    """One system on `cores` cores."""

    system: str  # one of SYSTEMS
    cores: int

    @property
    def processes(self) -> int:
        return 1 if self.system == "siaga" else self.cores

    @property
    def amqp(self) -> bool:
        return self.system == "siaga-amqp"

    @property
    def label(self) -> str:
        return f"{self.system} x{self.processes} on {self.cores} core(s)"


def setups(systems: Sequence[str], counts: Sequence[int]) -> list[Setup]:
    """What runs for the chosen systems (names of bench.plan.SYSTEMS) at each count."""
    chosen: list[Setup] = []
    if "siaga" in systems:
        # One process on Mosquitto at every count too: what the second core gives a single
        # Siaga (its InfluxDB client's thread, the kernel's work) beside several instances.
        chosen += [Setup("siaga", count) for count in counts]
        chosen += [Setup("siaga-amqp", count) for count in counts]
    for peer in PEERS:
        if peer in systems:
            chosen += [Setup(peer, count) for count in counts]
    return chosen


@dataclass(frozen=True, slots=True)
class Shared:
    """The RabbitMQ node and the PostgreSQL the `siaga-amqp` instances share."""

    rabbit: RabbitCluster
    postgres: PostgreSQL
    partitions: int

    @property
    def mqtt_url(self) -> str:
        port = self.rabbit.mqtt_port(RABBIT_NODE)
        return f"mqtt://{USER}:{quote(self.rabbit.password, safe='')}@127.0.0.1:{port}"

    def beam_pid(self) -> int | None:
        """RabbitMQ's Erlang VM (the start script's pid is not the one holding the memory)."""
        path = Path(self.rabbit.node(RABBIT_NODE).environment()["RABBITMQ_PID_FILE"])
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None


@contextlib.contextmanager
def shared(root: Path, partitions: int) -> Iterator[Shared]:
    """One RabbitMQ node and one PostgreSQL, stopped at the end."""
    with RabbitCluster(root / "rabbit", nodes=1) as rabbit, \
            PostgreSQL(root / "postgres") as postgres:
        yield Shared(rabbit, postgres, partitions)


# --- the consumers --------------------------------------------------------------------------


class Group:
    """The processes of one setup on one bed: their sessions, configuration and commands."""

    def __init__(self, setup: Setup, bed: Bed, share: Shared | None) -> None:
        if setup.amqp and share is None:
            raise RuntimeError("siaga-amqp needs the RabbitMQ node and PostgreSQL")
        self.setup, self.bed, self.share = setup, bed, share
        self.amqp_name = f"cores{bed.prefix}"
        self.book_database = f"cores_{bed.prefix}"

    def client_id(self, index: int) -> str:
        return f"{self.setup.system}-{self.bed.prefix}-{index}"

    def filters(self) -> list[str]:
        if self.setup.system == "siaga":
            return TopicScheme(self.bed.prefix).subscriptions()
        telemetry = f"{self.bed.prefix}/+/+/telemetry"
        return [f"$share/{SHARE_GROUP}/{telemetry}" if self.setup.processes > 1 else telemetry]

    def prepare(self) -> None:
        """Where the backlog waits for the consumers: their sessions, or the partitions."""
        if self.share is None:
            for index in range(self.setup.processes):
                prime_session(self.bed.broker.port, self.client_id(index), self.filters())
            return
        share = self.share

        async def declare() -> None:
            async with aiormq.connect(share.rabbit.amqp_url(RABBIT_NODE)) as connection:
                channel = await connection.channel(publisher_confirms=False)
                # As the service declares them (ingest.amqp), before anything is published:
                # the MQTT plugin drops what no queue is bound for.
                await declare_partitions(channel, TopicScheme(self.bed.prefix).subscriptions(),
                                         name=self.amqp_name, partitions=share.partitions,
                                         replicas=1)

        asyncio.run(declare())
        share.postgres.create_database(self.book_database)

    def cleanup(self) -> None:
        if self.share is not None:
            with contextlib.suppress(Exception):  # best effort: the result is already taken
                self.share.postgres.drop_database(self.book_database)

    def feed_config(self) -> Path:
        """A config for the load mode: this bed's broker, or the RabbitMQ node's MQTT."""
        config = self.bed.siaga_config("siaga-load-config", 0, name="feed")
        if self.share is None:
            return config
        document = yaml.safe_load(config.read_text())
        document["mqtt"]["url"] = self.share.mqtt_url
        path = self.bed.workdir / "feed-rabbit.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def _siaga_config(self, index: int, http_port: int) -> Path:
        name = f"siaga{index}"
        path = self.bed.siaga_config(self.client_id(index), http_port, name=name)
        if self.share is None:
            return path
        document = yaml.safe_load(path.read_text())
        document["ingest"]["input"] = "amqp"
        document["amqp"] = {"urls": [self.share.rabbit.amqp_url(RABBIT_NODE)],
                            "name": self.amqp_name, "partitions": self.share.partitions,
                            "replicas": 1, "instance": index,
                            "instances": self.setup.processes}
        document["alerting"] = {"database_url": self.share.postgres.url_for(self.book_database)}
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def _command(self, index: int) -> tuple[list[str], Path | None, int | None]:
        """One process's command, working directory and HTTP port (Siaga's)."""
        bed = self.bed
        if self.setup.system in ("siaga", "siaga-amqp"):
            port = free_port()
            config = self._siaga_config(index, port)
            return [sys.executable, "-m", "siaga", "run", "-c", str(config)], None, port
        if self.setup.system == "paho-batched":
            # The script subscribes to `<prefix>/+/+/telemetry`: a prefix of
            # `$share/bench/<prefix>` makes that the shared subscription.
            prefix = self.filters()[0].removesuffix("/+/+/telemetry")
            return [sys.executable, str(PEERS_DIR / "batched.py"), "--mqtt-port",
                    str(bed.broker.port), "--prefix", prefix, "--client-id",
                    self.client_id(index), "--influx-port", str(bed.influx.port),
                    "--db", bed.database], None, None
        user_dir = bed.workdir / f"node-red-{index}"
        command = nodered.prepare(user_dir, port=free_port(), mqtt_port=bed.broker.port,
                                  client_id=self.client_id(index), topic=self.filters()[0],
                                  influx_port=bed.influx.port, database=bed.database)
        return command, user_dir, None

    @contextlib.contextmanager
    def running(self) -> Iterator[list[Running]]:
        """Every process of the setup, confined to its cores; stopped at the end."""
        confine = ["taskset", "-c", cpu_list(self.setup.cores)]  # execs in place: same pid
        with contextlib.ExitStack() as stack:
            started = []
            for index in range(self.setup.processes):
                command, cwd, port = self._command(index)
                log = self.bed.workdir / f"{self.setup.system}-{index}.log"
                process = stack.enter_context(child([*confine, *command], log, cwd=cwd))
                started.append(Running(process.pid, port))
            yield started


def affinity(runs: Sequence[Running]) -> list[str]:
    """Each process's allowed CPUs, as the kernel has them (the confinement, checked)."""
    found = []
    for run in runs:
        with contextlib.suppress(OSError):
            found.append(",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(run.pid))))
    return found


def children() -> dict[int, list[int]]:
    """Every process's children, from /proc/<pid>/stat's parent ids (this kernel has no
    /proc/<pid>/task/<tid>/children)."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2:].split()[1])  # after the command name
            found.setdefault(parent, []).append(int(entry.name))
    return found


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    """`pid` and every process under it in `tree` (children())."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += tree.get(current, [])
    return found


def group_usage(runs: Sequence[Running]) -> Usage | None:
    """The processes' summed CPU seconds, RSS and peak RSS (each one's VmHWM), or None once
    one of them has exited."""
    parts: list[Usage] = []
    tree = children()
    for run in runs:
        top = usage(run.pid)
        if top is None:
            return None
        parts.append(top)
        parts += [u for pid in descendants(run.pid, tree)[1:] if (u := usage(pid)) is not None]
    return Usage(time.monotonic(), sum(u.cpu_s for u in parts), sum(u.rss_mb for u in parts),
                 sum(u.peak_rss_mb for u in parts))


# --- the measurements -------------------------------------------------------------------------


def _identity(setup: Setup, shape: str) -> dict[str, Any]:
    return {"system": setup.system, "cores": setup.cores, "processes": setup.processes,
            "shape": shape, "cpu_count": os.cpu_count(), "cpus": cpu_list(setup.cores)}


def _shape(batch: int) -> str:
    return "single" if batch == 1 else f"batch{batch}"


def drain(root: Path, influx: Influx, catalog: Path, setup: Setup, share: Shared | None, *,
          batch: int, readings: int, devices: int, cap_s: float,
          webhook_url: str | None) -> dict[str, Any]:
    """A backlog of `readings` queued for the setup while it is away, then drained."""
    with fresh_bed(root, influx, catalog, webhook_url=webhook_url) as bed:
        group = Group(setup, bed, share)
        group.prepare()
        try:
            fed = _publish(group, devices=devices, readings=readings, batch=batch)
            wait_quiet(_server_pids(bed, share))
            with group.running() as runs:
                samples, brokers, ended = _follow(bed, share, runs, fed.readings, cap_s)
                allowed = affinity(runs)
            time.sleep(throughput.SETTLE_S if samples[-1].count < fed.readings else 0)
            landed = bed.count()
        finally:
            group.cleanup()
    # throughput's own summary: the same rate, slope and CPU for every scenario's drains.
    figures = throughput._summarise(setup.system, _shape(batch), readings, fed.readings,
                                    landed, samples, fed.rate, ended)
    return {"kind": "drain", **_identity(setup, _shape(batch)), "allowed": allowed,
            "broker": _broker_name(share),
            "broker_cpu_percent": _broker_cpu(samples, brokers), **figures.as_dict()}


def steady(root: Path, influx: Influx, catalog: Path, setup: Setup, share: Shared | None, *,
           batch: int, rate: float, duration_s: float, warm_up_s: float, devices: int,
           webhook_url: str | None) -> dict[str, Any]:
    """The setup under a live load of `rate` readings/s: its summed RSS (bench/live.py)."""
    with fresh_bed(root, influx, catalog, webhook_url=webhook_url) as bed:
        group = Group(setup, bed, share)
        group.prepare()
        try:
            with group.running() as runs:
                for run in runs:
                    if run.http_port is not None:
                        run.wait_ready()
                _probe(bed, group)
                base = bed.count()
                samples: list[tuple[float, int, Usage]] = []
                brokers: list[Usage] = []  # after the warm-up
                with feed.live(group.feed_config(), bed.workdir / "feed.log", devices=devices,
                               rate=rate, batch=batch, max_duration_s=duration_s + 60,
                               cpus=spare_cpus(setup.cores)) as load:
                    started = time.monotonic()
                    while (elapsed := time.monotonic() - started) < duration_s:
                        time.sleep(live.SAMPLE_S)  # the sampling interval
                        now = group_usage(runs)
                        if now is None:
                            raise RuntimeError(f"{setup.label} exited under the live load "
                                               f"(see the logs in {bed.workdir})")
                        samples.append((elapsed, bed.count() - base, now))
                        broker = _broker_usage(bed, share)
                        if broker is not None and elapsed >= warm_up_s:
                            brokers.append(broker)
                    fed = load.finish()
                at_stop = bed.count() - base
                landed = live.catch_up(bed, base, fed.readings)
                end = group_usage(runs)
                allowed = affinity(runs)
        finally:
            group.cleanup()
    figures = live.summarise(setup.system, rate, fed, samples, at_stop, landed, warm_up_s,
                             duration_s, end)
    return {"kind": "live", **_identity(setup, _shape(batch)), "allowed": allowed,
            "load_cpus": spare_cpus(setup.cores), "batch": batch, **figures.as_dict(),
            "broker": _broker_name(share),
            "broker_median_rss_mb": statistics.median(u.rss_mb for u in brokers)
            if brokers else None,
            "broker_cpu_percent": cpu_percent(brokers[0], brokers[-1])
            if len(brokers) > 1 else None}


def probes(root: Path, influx: Influx, catalog: Path, *, what: str, samples: int,
           drain_rate: float, batch: int, devices: int) -> dict[str, Any]:
    """bench/latency.py's probes against `siaga` on 1 core, with a background of half the
    batch-`batch` drain rate it reached, published in messages of `batch` readings (single
    readings could not reach it: the load mode publishes ~25,000 of them a second here)."""
    setup = Setup("siaga", 1)
    rate = LATENCY_SHARE * drain_rate
    with Receiver() as receiver, \
            fresh_bed(root, influx, catalog, webhook_url=receiver.url) as bed:
        group = Group(setup, bed, None)
        with group.running() as runs:
            runs[0].wait_ready()
            with feed.live(group.feed_config(), bed.workdir / "feed.log", devices=devices,
                           rate=rate, batch=batch, cpus=spare_cpus(setup.cores)) as load:
                time.sleep(latency.WARM_UP_S)
                probe = latency.Probe(bed)
                try:
                    # latency.measure's series, with this scenario's confined Siaga and
                    # batched background (latency.measure starts its own, unconfined).
                    if what == "alert":
                        measured, lost = latency._alerts(probe, receiver, samples)
                    else:
                        measured, lost = latency._storage(probe, bed, samples)
                finally:
                    probe.close()
                fed = load.finish()
    figures = latency.Latencies(what, fed.rate, measured, lost).as_dict()
    return {"kind": "latency", **_identity(setup, _shape(batch)), "drain_rate": drain_rate,
            "load_cpus": spare_cpus(setup.cores), "asked_rate": rate, "share": LATENCY_SHARE,
            **figures}


# --- helpers ------------------------------------------------------------------------------------


def _server_pids(bed: Bed, share: Shared | None) -> list[int]:
    pids = throughput.server_pids(bed)
    if share is not None and (beam := share.beam_pid()) is not None:
        pids.append(beam)
    return pids


def _broker_usage(bed: Bed, share: Shared | None) -> Usage | None:
    pid = share.beam_pid() if share is not None else bed.broker.pid
    return usage(pid) if pid is not None else None


def _publish(group: Group, *, devices: int, readings: int, batch: int) -> feed.Fed:
    """The backlog: bench/backlog.py's load run, exactly `readings` readings."""
    if group.share is None:
        return feed.publish(group.feed_config(), group.bed.workdir / "feed.log",
                            devices=devices, readings=readings, batch=batch)
    # In this process: bench.backlog's command line connects without the broker's
    # credentials, which RabbitMQ's MQTT plugin requires (only its load run is reused).
    mqtt_settings = load_settings(group.feed_config()).mqtt
    config = LoadConfig(mqtt_settings.address(), mqtt_settings.topic_prefix, rate=None,
                        batch=batch, duration_s=backlog.TIMEOUT_S, seed=feed.SEED,
                        qos=mqtt_settings.qos)
    text = asyncio.run(backlog.publish(config, synthetic_devices(devices), readings // batch))
    (group.bed.workdir / "feed.log").write_text(text + "\n")
    fed = feed.parse_summary(text)
    if fed.readings != readings:
        raise RuntimeError(f"RabbitMQ acknowledged {fed.readings:,} of the {readings:,} "
                           f"readings planned for the backlog")
    return fed


def _follow(bed: Bed, share: Shared | None, runs: Sequence[Running], expected: int,
            cap_s: float) -> tuple[list[throughput.Sample], list[Usage | None], str]:
    """As throughput's: the count every POLL_S until all, the cap, a stall or an exit; with
    the broker's usage at each sample."""
    started = time.monotonic()
    samples = [throughput.Sample(0.0, 0, group_usage(runs))]
    brokers = [_broker_usage(bed, share)]
    last_change = started
    while True:
        time.sleep(throughput.POLL_S)
        now = time.monotonic()
        count = bed.count()
        sample = throughput.Sample(now - started, count, group_usage(runs))
        brokers.append(_broker_usage(bed, share))
        if count != samples[-1].count:
            last_change = now
        samples.append(sample)
        limit = throughput.STALL_S if count else throughput.START_TIMEOUT_S
        for ended, reached in (("all", count >= expected), ("exited", sample.usage is None),
                               ("cap", now - started > cap_s),
                               ("stalled", now - last_change > limit)):
            if reached:
                return samples, brokers, ended


def _broker_cpu(samples: list[throughput.Sample], brokers: list[Usage | None]) -> float | None:
    """The broker's CPU % over the drain's span (as throughput's rate: first poll that saw
    readings to the first that saw them all)."""
    reached = samples[-1].count
    first = next((i for i, s in enumerate(samples) if s.count > 0), None)
    last = next(i for i, s in enumerate(samples) if s.count == reached)
    if first is None or last <= first:
        return None
    before, after = brokers[first], brokers[last]
    return cpu_percent(before, after) if before is not None and after is not None else None


def _broker_name(share: Shared | None) -> str:
    return "rabbitmq" if share is not None else "mosquitto"


def _probe(bed: Bed, group: Group) -> None:
    """live.probe, on whichever broker the setup reads: one reading, awaited in InfluxDB."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{bed.prefix}",
                         protocol=mqtt.MQTTv311)
    port = bed.broker.port
    if group.share is not None:
        client.username_pw_set(USER, group.share.rabbit.password)
        port = group.share.rabbit.mqtt_port(RABBIT_NODE)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        body = orjson.dumps({"ts": round(time.time(), 6), "seq": 0, "level_cm": 50.0})
        client.publish(f"{bed.prefix}/water-level/{live.PROBE_DEVICE}/telemetry", body,
                       qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    if bed.wait_count(1, live.PROBE_TIMEOUT_S) < 1:
        raise RuntimeError(f"the probe reading was not stored within {live.PROBE_TIMEOUT_S:g} s")
