"""The monitoring room's console (issue 15): what 50 open consoles cost ingestion, and how fast
a change reaches them.

Each case is Siaga (`siaga run`, default rules) with the 10,000-device synthetic catalog on a
fresh broker and database, one probe reading awaited in InfluxDB, then the load mode live at
`rate` readings/s from every device (as bench/live.py). Case `none` has no console; case
`consoles` starts bench/consoleclients.py in its own process with the load: `consoles`
clients that behave like the page (the state, then the SSE stream, every event decoded),
optionally one headless Chromium page beside them. Siaga's RSS, CPU and stored count are
sampled every second; the first `warm_up_s` are left out. Beside them, in both cases: the
time GET /healthz takes (every 0.25 s; how long a request waits for the service's event loop)
and the storage latency of bench/latency.py's probe (a reading for Manggarai, publish ->
queryable).

In the `consoles` case the client also flips a gauge (Karet) above its siaga1_cm and back
(publish -> the `devices` event in a console; and -> the row's `data-status` in the page),
and after the counted span loads the page cold `page_loads` times (until `__siagaReady`),
the load still running. The ratio the issue asks about is taken within each run: stored
readings/s with the consoles over without (>= 0.95), beside the CPU's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import feed, latency
from bench.bed import Bed, fresh_bed
from bench.consumers import NO_PROXY, SIAGA
from bench.influxdb import Influx
from bench.latency import percentile
from bench.live import catch_up, probe, summarise  # the live-rate scenario's steps, shared
from bench.procs import child, usage
from bench.provenance import REPO

MEASURE = "console"
GAUGE = "karet"  # flipped: a bundled gauge with every level and a normal range
# (bench/latency.py's probes publish for Manggarai, the storage probes here too)
SAMPLE_S = 1.0  # Siaga's RSS, CPU and the stored count this often, as in bench/live.py
HEALTH_EVERY_S = 0.25  # GET /healthz this often: the event loop's responsiveness
HEALTH_TIMEOUT_S = 5.0
CLIENT_GRACE_S = 60.0  # the clients' start (Chromium), closing, and writing their figures
PAGE_LOAD_S = 130.0  # per cold page load at most (the client's own ceiling is 120 s)
RECEIVED = "siaga_readings_received_total"  # /metrics: readings decoded from MQTT
FEED_SPARE_S = 120.0  # the load outlives the measurement; it is stopped explicitly


@dataclass(frozen=True, slots=True)
class Case:
    """One case of the comparison: how many consoles, and what the client does beside."""

    consoles: int  # 0: no console client at all
    browser: bool = False  # one headless Chromium page open through the span
    flips: int = 0
    flip_every_s: float = 0.5
    page_loads: int = 0

    @property
    def name(self) -> str:
        return "consoles" if self.consoles else "none"


def measure(root: Path, influx: Influx, case: Case, *, devices: int, rate: float,
            duration_s: float, warm_up_s: float, storage_probes: int) -> dict[str, Any]:
    catalog = feed.write_catalog(devices, root / f"catalog-{devices}.yaml")
    with fresh_bed(root, influx, catalog) as bed, SIAGA.running(bed) as running:
        running.wait_ready()
        probe(bed)
        base = bed.count()
        config = bed.siaga_config("siaga-load-config", 0, name="feed")
        samples: list[tuple[float, int, Any]] = []
        client_cpu: list[tuple[float, float]] = []
        received: list[tuple[float, float]] = []  # Siaga's own count of readings taken in
        client_time_s = case.page_loads * PAGE_LOAD_S + CLIENT_GRACE_S
        with feed.live(config, bed.workdir / "feed.log", devices=devices, rate=rate,
                       max_duration_s=warm_up_s + duration_s + client_time_s + FEED_SPARE_S
                       ) as load, Health(running.http_port or 0) as health, \
                StorageProbes(bed, warm_up_s, storage_probes) as storage, \
                _clients(bed, running.http_port or 0, case, warm_up_s, duration_s) as client:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < warm_up_s + duration_s:
                time.sleep(SAMPLE_S)  # the sampling interval, not a synchronisation
                now = usage(running.pid)
                if now is None:
                    raise RuntimeError(f"siaga exited under the console load (see its log in "
                                       f"{bed.workdir})")
                samples.append((elapsed, bed.count() - base, now))
                received.append((elapsed, running.metrics().get(RECEIVED, 0.0)))
                if client is not None:
                    client_cpu.append((elapsed, tree_cpu_s(client.pid)))
            answers = health.stop(started)
            stored_ms, stored_lost = storage.stop()
            consoles = client.result(client_time_s) if client is not None else None
            fed = load.finish()
        at_stop = bed.count() - base
        landed = catch_up(bed, base, fed.readings)
        end = usage(running.pid)
    live = summarise("siaga", rate, fed, samples, at_stop, landed, warm_up_s,
                      warm_up_s + duration_s, end)
    figures = {key: value for key, value in dataclasses.asdict(live).items()
               if key != "consumer"}
    return {"measure": MEASURE, "case": case.name, "consoles": case.consoles,
            "devices": devices, **figures, "duration_s": duration_s,
            **steady_health(answers, warm_up_s),
            **storage_figures(stored_ms, stored_lost),
            "received_rate": _steady_rate(received, warm_up_s),
            "cpu_us_per_reading": cpu_per_reading(samples, warm_up_s),
            "client_cpu_percent": _steady_rate(client_cpu, warm_up_s, 100.0),
            **console_figures(consoles)}


def steady_health(answers: list[tuple[float, float | None]], warm_up_s: float
                  ) -> dict[str, Any]:
    """Percentiles of GET /healthz after the warm-up (ms); a request that failed is counted."""
    steady = [ms for at, ms in answers if at >= warm_up_s]
    answered = sorted(ms for ms in steady if ms is not None)
    return {"healthz_p50_ms": percentile(answered, 50), "healthz_p99_ms": percentile(answered, 99),
            "healthz_max_ms": answered[-1] if answered else None,
            "healthz_failed": len(steady) - len(answered)}


def console_figures(consoles: dict[str, Any] | None) -> dict[str, Any]:
    """The client's JSON flattened to the figures the summary takes medians of (all None
    without consoles), the rest kept under `clients`."""
    if consoles is None:
        return {"bytes_per_s": None, "events_per_s": None, "streaming": None,
                "update_p50_ms": None, "update_p99_ms": None, "update_lost": None,
                "page_update_p50_ms": None, "page_update_p99_ms": None,
                "page_load_ms": None, "page_heap_mb": None, "clients": None}
    update = consoles.get("update") or {}
    page_update = consoles.get("page_update") or {}
    page_load = consoles.get("page_load") or {}
    return {"bytes_per_s": consoles.get("bytes_per_s"),
            "events_per_s": consoles.get("events_per_s"),
            "streaming": consoles.get("streaming"),
            "update_p50_ms": update.get("p50_ms"), "update_p99_ms": update.get("p99_ms"),
            "update_lost": update.get("lost"),
            "page_update_p50_ms": page_update.get("p50_ms"),
            "page_update_p99_ms": page_update.get("p99_ms"),
            "page_load_ms": page_load.get("median_ms"), "page_heap_mb": page_load.get("heap_mb"),
            "clients": consoles}


def cpu_per_reading(samples: list[tuple[float, int, Any]], warm_up_s: float) -> float | None:
    """Siaga's CPU microseconds per reading stored over the steady span: what the consoles
    cost per reading even when the load's own rate differs between the cases."""
    steady = [sample for sample in samples if sample[0] >= warm_up_s]
    if len(steady) < 2 or steady[-1][1] <= steady[0][1]:
        return None
    (_, c0, u0), (_, c1, u1) = steady[0], steady[-1]
    return float((u1.cpu_s - u0.cpu_s) / (c1 - c0) * 1e6)


def _steady_rate(samples: list[tuple[float, float]], warm_up_s: float,
                 scale: float = 1.0) -> float | None:
    """The growth per second of a sampled counter over the steady span, times `scale`."""
    steady = [sample for sample in samples if sample[0] >= warm_up_s]
    if len(steady) < 2:
        return None
    (t0, c0), (t1, c1) = steady[0], steady[-1]
    return scale * (c1 - c0) / (t1 - t0) if t1 > t0 else None


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and every process under it (the client's Chromium too)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2:].split()[1])
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(u.cpu_s for p in tree if (u := usage(p)) is not None)


def storage_figures(latencies_ms: list[float], lost: int) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    return {"storage_p50_ms": percentile(ordered, 50), "storage_p99_ms": percentile(ordered, 99),
            "storage_samples": len(ordered), "storage_lost": lost}


class StorageProbes:
    """After the warm-up, bench/latency.py's storage probes in a thread (a reading for
    Manggarai, then a query every 10 ms until it is found), until `count` or the span ends.

    Its own InfluxDB connection: the sampling loop's is not shared across threads.
    """

    def __init__(self, bed: Bed, warm_up_s: float, count: int) -> None:
        self.bed = bed
        self.influx = Influx(bed.influx.server)
        self.warm_up_s = warm_up_s
        self.count = count
        self.latencies_ms: list[float] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="storage-probes", daemon=True)

    def __enter__(self) -> StorageProbes:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(latency.PROBE_TIMEOUT_S + 1)
        self.influx.close()

    def stop(self) -> tuple[list[float], int]:
        self.__exit__()
        return self.latencies_ms, self.lost

    def _probe(self) -> None:
        if self._stop.wait(self.warm_up_s) or not self.count:
            return
        probe = latency.Probe(self.bed)
        try:
            while len(self.latencies_ms) + self.lost < self.count and not self._stop.is_set():
                took = self._one(probe)
                if took is None:
                    self.lost += 1
                else:
                    self.latencies_ms.append(took * 1000)
                self._stop.wait(random.uniform(*latency.GAP_S))
        finally:
            probe.close()

    def _one(self, probe: latency.Probe) -> float | None:
        published, ts = probe.publish(latency.QUIET_LEVEL)
        ts_ns = round(ts * 1e9)
        q = (f'SELECT count("level_cm") FROM "water_level" WHERE "device_id" = '
             f"'{latency.DEVICE}' AND time >= {ts_ns - 1000} AND time <= {ts_ns + 1000}")
        while time.monotonic() - published < latency.PROBE_TIMEOUT_S:
            if self._stop.is_set():
                return None
            result = self.influx.query(q, self.bed.database)
            if "series" in result["results"][0]:  # type: ignore[index]
                return time.monotonic() - published
            time.sleep(latency.STORAGE_POLL_S)
        return None


class Health:
    """GET /healthz every HEALTH_EVERY_S in a thread: (seconds since start, ms or None)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.answers: list[tuple[float, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="healthz", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> Health:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(HEALTH_TIMEOUT_S + 1)

    def stop(self, since: float) -> list[tuple[float, float | None]]:
        """Stop polling; the answers, timed from `since` (the sampling loop's start)."""
        self.__exit__()
        shift = self._started - since
        return [(at + shift, ms) for at, ms in self.answers]

    def _poll(self) -> None:
        while not self._stop.wait(HEALTH_EVERY_S):
            sent = time.monotonic()
            try:
                with NO_PROXY.open(self.url, timeout=HEALTH_TIMEOUT_S) as answer:
                    answer.read()
                took: float | None = (time.monotonic() - sent) * 1000
            except OSError:
                took = None
            self.answers.append((sent - self._started, took))


@dataclass(frozen=True, slots=True)
class Client:
    """The running console client (bench/consoleclients.py) and where its figures go."""

    pid: int
    process: Any
    out: Path
    log: Path

    def result(self, timeout_s: float) -> dict[str, Any]:
        """Wait for it to finish (its page loads come after the span); its JSON."""
        self.process.wait(timeout_s)
        if self.process.returncode != 0 or not self.out.exists():
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"the console client exited {self.process.returncode}:\n{tail}")
        figures: dict[str, Any] = json.loads(self.out.read_text())
        return figures


@contextlib.contextmanager
def _clients(bed: Bed, port: int, case: Case, warm_up_s: float,
             duration_s: float) -> Iterator[Client | None]:
    if not case.consoles:
        yield None
        return
    out = bed.workdir / "consoleclients.json"
    log = bed.workdir / "consoleclients.log"
    command = [sys.executable, "-m", "bench.consoleclients", "--url", f"http://127.0.0.1:{port}",
               "--clients", str(case.consoles), "--warm-up", f"{warm_up_s:g}",
               "--duration", f"{duration_s:g}", "--device", GAUGE,
               "--mqtt-port", str(bed.broker.port),
               "--topic", f"{bed.prefix}/water-level/{GAUGE}/telemetry",
               "--flips", str(case.flips), "--flip-every", f"{case.flip_every_s:g}",
               "--page-loads", str(case.page_loads), "--out", str(out)]
    if case.browser:
        command.append("--browser")
    with child(command, log, cwd=REPO) as process:
        yield Client(process.pid, process, out, log)
