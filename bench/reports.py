"""Residents' reports (issue 14): intake rates, the yearly statistics, a year replayed.

Each measurement runs a real `siaga run` (its own Mosquitto and InfluxDB database, from
bench/bed.py) whose report book is SQLite in its data directory or a fresh database on the
invocation's PostgreSQL (siaga/sandbox/postgres.py). Before it starts, `siaga reports keys
add bench` creates the API key in that same book, and the configuration raises
`reports.rate_limit_per_minute` far above any rate here: the per-key limiter (60 a minute by
default) is not what is measured. The load is bench/reportload.py in its own process; the
peer is bench/peers/reports_sqlite.py, measured with the same client and the same reports.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from bench import yearbook
from bench.bed import Bed, fresh_bed
from bench.consumers import NO_PROXY, PEERS_DIR, Running
from bench.influxdb import Influx
from bench.procs import child, usage
from bench.provenance import REPO
from bench.reportload import WARM_UP
from reports.book import ReportBook
from reports.settings import ReportsSettings
from siaga.sandbox.ports import free_port
from siaga.sandbox.postgres import PostgreSQL

RATE_LIMIT_PER_MINUTE = 100_000_000  # far above any rate here: the limiter is not measured
TOKEN = "bench-officers-token"  # the operator API's bearer token (officers' updates)
YEAR = 2020
YEAR_TOTAL, YEAR_RESOLVED = 137_776, 137_574  # what the plan holds, and storage must count
CLIENT_TIMEOUT_S = 900.0  # the slowest intake here takes about a minute
REPLAY_TIMEOUT_S = 5400.0  # a year of reports and updates at full speed: tens of minutes
PEER_READY_S = 30.0
COMMAND_TIMEOUT_S = 120.0
_databases = iter(range(1, 1_000_000))


@dataclass(frozen=True, slots=True)
class Book:
    """Where a measurement's report book is: SQLite, or a database on the PostgreSQL."""

    backend: str  # "sqlite" or "postgresql"
    postgres: PostgreSQL | None = None

    @contextlib.contextmanager
    def database_url(self) -> Iterator[str | None]:
        """None for SQLite; a fresh PostgreSQL database, dropped afterwards."""
        if self.backend == "sqlite":
            yield None
            return
        if self.postgres is None:
            raise RuntimeError("PostgreSQL is not running: the postgresql book cannot be measured")
        name = f"bench_reports_{next(_databases)}"
        url = self.postgres.create_database(name)
        try:
            yield url
        finally:
            self.postgres.drop_database(name)


@dataclass(frozen=True, slots=True)
class Service:
    running: Running
    config: Path
    api_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.http_port}"


def service_config(bed: Bed, port: int, database_url: str | None) -> Path:
    """The bed's `siaga run` file, plus the officers' token and the reports' settings."""
    path = bed.siaga_config(f"siaga-reports-{bed.prefix}", port, name="siaga-reports")
    document = yaml.safe_load(path.read_text())
    document["http"]["token"] = TOKEN
    document["reports"] = {"rate_limit_per_minute": RATE_LIMIT_PER_MINUTE}
    if database_url is not None:
        document["reports"]["database_url"] = database_url
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def siaga_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "siaga", *args]


def add_key(config: Path) -> str:
    """`siaga reports keys add bench`: the key is alone on stdout's last line."""
    done = subprocess.run(siaga_command("reports", "keys", "add", "bench", "-c", str(config)),
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"siaga reports keys add failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def siaga_service(bed: Bed, database_url: str | None, *, with_key: bool = True
                  ) -> Iterator[Service]:
    port = free_port()
    config = service_config(bed, port, database_url)
    key = add_key(config) if with_key else ""
    with child(siaga_command("run", "-c", str(config)), bed.workdir / "siaga-run.log",
               cwd=REPO) as process:
        running = Running(process.pid, port)
        running.wait_ready()
        yield Service(running, config, key)


def get_json(url: str, token: str | None = None, timeout_s: float = 60.0) -> Any:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with NO_PROXY.open(request, timeout=timeout_s) as answer:
        return json.loads(answer.read())


def stored_reports(service: Service) -> int:
    """The book's count of reports, through the officers' API."""
    return int(get_json(f"{service.url}/api/reports?page_size=1", TOKEN)["total"])


def run_client(url: str, api_key: str, reports: int, concurrency: int,
               photo_bytes: int | None, log: Path) -> dict[str, Any]:
    # `--api-key=KEY`: a key may begin with "-", which argparse takes for an option.
    command = [sys.executable, "-m", "bench.reportload", "--url", url, f"--api-key={api_key}",
               "--reports", str(reports), "--concurrency", str(concurrency)]
    if photo_bytes is not None:
        command += ["--photo-bytes", str(photo_bytes)]
    with log.open("ab") as errors:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=errors, cwd=REPO,
                              timeout=CLIENT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load client failed ({done.returncode}); see {log}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def _measured_load(pid: int, url: str, api_key: str, reports: int, concurrency: int,
                   photo_bytes: int | None, log: Path) -> dict[str, Any]:
    """The client's figures, with the server's CPU over the same span (100 % = one core)."""
    before = usage(pid)
    started = time.monotonic()
    result = run_client(url, api_key, reports, concurrency, photo_bytes, log)
    after = usage(pid)
    if before is not None and after is not None:
        # Over the client's whole life (its bodies are built first): a lower bound of the
        # server's CPU while the load ran.
        result["server_cpu_s"] = round(after.cpu_s - before.cpu_s, 2)
        result["server_peak_rss_mb"] = after.peak_rss_mb
    result["client_wall_s"] = round(time.monotonic() - started, 1)
    if result["created"] < reports:
        raise RuntimeError(f"{result['created']:,} of {reports:,} reports created "
                           f"({result['statuses']}; {result['example_refusal']})")
    return result


def intake(root: Path, influx: Influx, catalog: Path, book: Book, *, reports: int,
           concurrency: int, photo_bytes: int | None) -> dict[str, Any]:
    """N reports through Siaga's Open311 POST; checked against the book's count."""
    with fresh_bed(root, influx, catalog) as bed, book.database_url() as database_url, \
            siaga_service(bed, database_url) as service:
        before = stored_reports(service)
        result = _measured_load(service.running.pid, f"{service.url}/open311/v2/requests.json",
                                service.api_key, reports, concurrency, photo_bytes,
                                bed.workdir / "reportload.log")
        stored = stored_reports(service) - before
    return {"system": "siaga", "backend": book.backend,
            "shape": "photo" if photo_bytes else "form", "photo_bytes": photo_bytes,
            "stored": stored, "verified": stored == result["created"] + WARM_UP, **result}


def peer_intake(root: Path, *, reports: int, concurrency: int,
                photo_bytes: int | None) -> dict[str, Any]:
    """The same client against the bare handler of bench/peers/reports_sqlite.py."""
    workdir = root / f"peer-reports-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    port = free_port()
    command = [sys.executable, str(PEERS_DIR / "reports_sqlite.py"), "--port", str(port),
               "--db", str(workdir / "reports.sqlite")]
    with child(command, workdir / "peer.log", cwd=REPO) as process:
        count_url = f"http://127.0.0.1:{port}/count"
        deadline = time.monotonic() + PEER_READY_S
        while True:
            with contextlib.suppress(OSError):
                before = int(get_json(count_url, timeout_s=2)["reports"])
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the peer did not answer within {PEER_READY_S:g} s")
            time.sleep(0.1)
        result = _measured_load(process.pid, f"http://127.0.0.1:{port}/open311/v2/requests.json",
                                "no-key-checked", reports, concurrency, photo_bytes,
                                workdir / "reportload.log")
        stored = int(get_json(count_url)["reports"]) - before
    return {"system": "bare-sqlite-handler", "backend": "sqlite",
            "shape": "photo" if photo_bytes else "form", "photo_bytes": photo_bytes,
            "stored": stored, "verified": stored == result["created"] + WARM_UP, **result}


def year_stats(root: Path, influx: Influx, catalog: Path, book: Book, rows: yearbook.Rows, *,
               repeats: int) -> dict[str, Any]:
    """A year's rows bulk-loaded into the book; `ReportBook.stats` timed `repeats` times,
    then `GET /api/reports/stats` once through the running service."""
    with fresh_bed(root, influx, catalog) as bed, book.database_url() as database_url:
        data_dir = bed.workdir / "siaga-reports-data"  # where service_config puts it
        settings = ReportsSettings(
            database_url=None if database_url is None else SecretStr(database_url))
        started = time.monotonic()
        yearbook.load(rows, settings, data_dir)
        load_s = time.monotonic() - started
        timings = []
        with ReportBook.open(settings, data_dir) as opened:
            for _ in range(repeats):
                started = time.perf_counter()
                counted = opened.stats(YEAR)
                timings.append(time.perf_counter() - started)
        with siaga_service(bed, database_url, with_key=False) as service:
            started = time.perf_counter()
            answered = get_json(f"{service.url}/api/reports/stats?year={YEAR}")
            http_s = time.perf_counter() - started
    top = [(c.code, c.count) for c in counted.by_category[:5]]
    return {"backend": book.backend, "reports": len(rows.reports), "updates": len(rows.updates),
            "load_s": round(load_s, 1), "load": "bulk insert of the book's own rows "
            "(bench/yearbook.py)", "timings_s": [round(t, 4) for t in timings],
            "median_s": statistics.median(timings), "first_s": timings[0],
            "http_s": http_s, "total": counted.total, "resolved": counted.resolved,
            "resolved_pct": counted.resolved_pct, "top5": top,
            "verified": (counted.total == YEAR_TOTAL and counted.resolved == YEAR_RESOLVED
                         and answered["total"] == YEAR_TOTAL)}


def year_replay(root: Path, influx: Influx, catalog: Path) -> dict[str, Any]:
    """`siaga simulate reports --year 2020 --speedup 0` into a running Siaga (SQLite), then
    `siaga reports stats --year 2020` from the same book."""
    with fresh_bed(root, influx, catalog) as bed, siaga_service(bed, None) as service:
        command = siaga_command("simulate", "reports", "--year", str(YEAR), "--speedup", "0",
                                "--url", service.url, f"--api-key={service.api_key}",
                                f"--token={TOKEN}")
        before = usage(service.running.pid)
        started = time.monotonic()
        with (bed.workdir / "simulate-reports.log").open("ab") as progress:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=progress, cwd=REPO,
                                  timeout=REPLAY_TIMEOUT_S, check=False)
        wall_s = time.monotonic() - started
        after = usage(service.running.pid)
        if done.returncode != 0:
            raise RuntimeError(f"siaga simulate reports failed ({done.returncode}); see "
                               f"{bed.workdir / 'simulate-reports.log'}")
        stats_command = siaga_command("reports", "stats", "--year", str(YEAR), "-c",
                                      str(service.config))
        as_json = json.loads(_output([*stats_command, "--json"]))
        table = _output(stats_command)
    cpu = None if before is None or after is None else after.cpu_s - before.cpu_s
    top = [(c["code"], c["count"]) for c in as_json["by_category"][:5]]
    summary = done.stdout.decode().strip()
    sent = re.search(r"^updates: ([0-9,]+) sent", summary, re.MULTILINE)
    updates = int(sent.group(1).replace(",", "")) if sent else 0
    return {"wall_s": wall_s, "rate": as_json["total"] / wall_s, "updates": updates,
            "requests_rate": (as_json["total"] + updates) / wall_s,
            "simulator_summary": summary,
            "server_cpu_percent": None if cpu is None else 100 * cpu / wall_s,
            "server_peak_rss_mb": None if after is None else after.peak_rss_mb,
            "total": as_json["total"], "resolved": as_json["resolved"],
            "resolved_pct": as_json["resolved_pct"], "top5": top, "stats_table": table,
            "verified": as_json["total"] == YEAR_TOTAL and as_json["resolved"] == YEAR_RESOLVED}


def _output(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:4])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout
