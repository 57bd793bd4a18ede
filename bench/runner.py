"""Runs the chosen scenarios `runs` times, interleaved, and collects every measurement."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench import (
    cameras,
    ceilings,
    console,
    consumers,
    cores,
    feed,
    latency,
    live,
    nodered,
    recovery,
    reports,
    scale,
    simulator,
    throughput,
    yearbook,
)
from bench.influxdb import Influx
from bench.plan import Plan
from bench.procs import load_average
from bench.receiver import Receiver
from reports.settings import ReportsSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.postgres import PostgreSQL
from siaga.sandbox.server import ServerNotInstalled
from simulators.reports import plan_year

SYSTEMS: dict[str, consumers.Consumer] = {
    "siaga": consumers.SIAGA, "node-red": consumers.NODE_RED,
    "paho-batched": consumers.BATCHED, "paho-naive": consumers.NAIVE,
}


class Measured(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


class Runner:
    """Every comparison in one invocation; a failed measurement is recorded, not fatal."""

    def __init__(self, plan: Plan, scenarios: list[str], systems: list[str], root: Path) -> None:
        self.plan = plan
        self.scenarios = scenarios
        self.systems = systems
        self.root = root
        self.results: dict[str, list[dict[str, Any]]] = {name: [] for name in (
            "mosquitto", "influxdb", "simulator", "backlog_drain", "live", "latency", "scale",
            "recovery", "reports_intake", "reports_stats", "reports_year", "console",
            "cameras", "cores", "cores_warm_up")}
        self.errors: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.load: list[dict[str, object]] = []
        self.postgres: PostgreSQL | None = None  # for the report book, when reports are measured
        self._year_rows: yearbook.Rows | None = None  # made once, loaded into each book

    def run(self) -> None:
        if "node-red" in self.systems and {"throughput", "live", "cores"} & set(self.scenarios):
            reason = nodered.why_missing()
            if reason:
                self.skipped.append({"what": "node-red", "why": reason})
                self.systems = [name for name in self.systems if name != "node-red"]
        with InfluxDB1(self.root / "influxdb") as server, Receiver() as receiver, \
                contextlib.ExitStack() as stack:
            if {"reports", "reports-year"} & set(self.scenarios):
                try:
                    self.postgres = stack.enter_context(PostgreSQL(self.root / "postgres"))
                except ServerNotInstalled as exc:
                    self.skipped.append({"what": "reports on PostgreSQL", "why": str(exc)})
            influx = Influx(server)
            catalog = feed.write_catalog(self.plan.devices,
                                         self.root / f"catalog-{self.plan.devices}.yaml")
            for number in range(1, self.plan.runs + 1):
                self._note_load(f"run {number} start")
                for scenario in self.scenarios:
                    getattr(self, f"_{scenario.replace('-', '_')}")(number, influx, catalog,
                                                                    receiver)
            self._note_load("end")
            influx.close()

    # --- scenarios ------------------------------------------------------------------------

    def _ceilings(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        plan = self.plan
        self._attempt("mosquitto", number, "ceiling: Mosquitto QoS 1, mosquitto_pub -> _sub",
                      lambda: ceilings.mosquitto(self.root / f"ceiling-mosquitto-{number}",
                                                 plan.mosquitto_messages),
                      lambda r: f"{r['rate']:,.0f} msg/s, {r['received']:,} received")
        self._attempt("influxdb", number, "ceiling: InfluxDB, batches of 5000, one connection",
                      lambda: ceilings.influxdb(influx, plan.influx_points),
                      lambda r: f"{r['rate']:,.0f} points/s, {r['stored']:,} stored")

    def _simulator(self, number: int, influx: Influx, catalog: Path,
                   receiver: Receiver) -> None:
        plan = self.plan
        self._attempt("simulator", number, "simulator: scenario generator, emissions/s",
                      lambda: simulator.generator(plan.generator_emissions),
                      lambda r: f"{r['rate']:,.0f} emissions/s (best of {len(r['rates'])})")
        for batch in (1, 100):
            self._attempt(
                "simulator", number, f"simulator: load mode flat out, batch {batch}",
                functools.partial(simulator.load_mode,
                                  self.root / f"flat-out-{number}-{batch}",
                                  devices=plan.devices, batch=batch,
                                  duration_s=plan.flat_out_s),
                lambda r: (f"{r['rate']:,.0f} readings/s acknowledged, CPU "
                           f"{r['cpu_percent']:.0f} %"))

    def _throughput(self, number: int, influx: Influx, catalog: Path,
                    receiver: Receiver) -> None:
        plan = self.plan
        for batch in (1, 100):
            backlog = plan.single_backlog if batch == 1 else plan.batch_backlog
            shift = (number - 1) % len(self.systems)  # each system goes first in some run
            for name in self.systems[shift:] + self.systems[:shift]:
                cap = plan.naive_cap_s if name == "paho-naive" else plan.drain_cap_s
                drain = functools.partial(
                    throughput.measure, self.root, influx, catalog, SYSTEMS[name], batch=batch,
                    readings=backlog, devices=plan.devices, cap_s=cap, webhook_url=receiver.url)
                self._attempt(
                    "backlog_drain", number, f"backlog drain: {name}, batch {batch}",
                    drain,
                    lambda r: (f"{r['rate']:,.0f} readings/s drained, CPU "
                               f"{r['cpu_percent']:.0f} %, peak RSS {r['peak_rss_mb']:.0f} MB, "
                               f"landed {r['landed']:,} of {r['acknowledged']:,} "
                               f"(planned {r['planned']:,})"))

    def _live(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        plan = self.plan
        shift = (number - 1) % len(self.systems)
        for name in self.systems[shift:] + self.systems[:shift]:
            steady = functools.partial(
                live.measure, self.root, influx, catalog, SYSTEMS[name], rate=plan.live_rate,
                duration_s=plan.live_duration_s, warm_up_s=plan.live_warm_up_s,
                devices=plan.devices, webhook_url=receiver.url)
            self._attempt(
                "live", number, f"live rate: {name} at {plan.live_rate:,.0f} readings/s",
                steady,
                lambda r: (f"RSS median {r['median_rss_mb']:.0f} MB, peak "
                           f"{r['peak_rss_mb']:.0f} MB, CPU {r['cpu_percent']:.0f} %; stored "
                           f"{r['stored_rate']:,.0f}/s of {r['fed_rate']:,.0f}/s published, "
                           f"{'kept up' if r['kept_up'] else 'fell behind'} (landed "
                           f"{r['landed']:,} of {r['published']:,})"))

    def _latency(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        plan = self.plan
        for what, samples, rate in (("alert", plan.alert_samples, plan.alert_rate),
                                    ("storage", plan.storage_samples, plan.storage_rate)):
            probes = functools.partial(latency.measure, self.root, influx, catalog, what=what,
                                       samples=samples, background_rate=rate,
                                       devices=plan.devices)
            self._attempt(
                "latency", number, f"latency: {what} at {rate:,.0f} readings/s",
                probes,
                lambda r: (f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, max "
                           f"{_ms(r['max_ms'])} ({r['samples']} samples, {r['lost']} lost, "
                           f"background {r['background_rate']:,.0f}/s)"))

    def _scale(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        plan = self.plan
        for devices in plan.scale_devices:
            size = functools.partial(scale.measure, self.root, influx, devices=devices,
                                     rate=plan.scale_rate, duration_s=plan.scale_duration_s)
            self._attempt(
                "scale", number, f"scale: {devices:,} devices",
                size,
                lambda r: (f"RSS ready {r['ready_rss_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} "
                           f"MB, {r['cpu_us_per_reading']:.0f} us CPU/reading"))

    def _recovery(self, number: int, influx: Influx, catalog: Path,
                  receiver: Receiver) -> None:
        plan = self.plan
        self._attempt(
            "recovery", number, f"recovery: InfluxDB down {plan.outage_s:g} s",
            lambda: recovery.measure(self.root, catalog, outage_s=plan.outage_s,
                                     rate=plan.recovery_rate, devices=plan.devices),
            lambda r: (f"{r['spooled']:,} spooled, drained in {r['drain_s']:.1f} s: "
                       f"{r['multiple']:.1f}x the live rate"))

    def _reports(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        plan = self.plan
        for photo in (None, plan.reports_photo_bytes):
            count = plan.reports_intake if photo is None else plan.reports_photo
            shape = "no photo" if photo is None else f"{photo / 1000:g} KB photo"
            for book in self._books():
                self._attempt(
                    "reports_intake", number,
                    f"reports intake: siaga on {book.backend}, {count:,} reports, {shape}",
                    functools.partial(reports.intake, self.root, influx, catalog, book,
                                      reports=count, concurrency=plan.reports_concurrency,
                                      photo_bytes=photo),
                    _describe_intake)
            self._attempt(
                "reports_intake", number,
                f"reports intake: bare aiohttp+SQLite handler (peer), {count:,} reports, {shape}",
                functools.partial(reports.peer_intake, self.root, reports=count,
                                  concurrency=plan.reports_concurrency, photo_bytes=photo),
                _describe_intake)
        for book in self._books():
            self._attempt(
                "reports_stats", number, f"reports stats: a year on {book.backend}",
                functools.partial(self._year_stats, influx, catalog, book),
                lambda r: (f"ReportBook.stats({reports.YEAR}) median {r['median_s']:.3f} s "
                           f"(first {r['first_s']:.3f} s), HTTP {r['http_s']:.3f} s; "
                           f"{r['total']:,} reports, {r['resolved_pct']}% resolved; "
                           f"loaded in {r['load_s']:.0f} s"))

    def _reports_year(self, number: int, influx: Influx, catalog: Path,
                      receiver: Receiver) -> None:
        self._attempt(
            "reports_year", number,
            f"reports: a year ({reports.YEAR}) replayed at full speed, siaga on SQLite",
            lambda: reports.year_replay(self.root, influx, catalog),
            lambda r: (f"{r['wall_s']:,.0f} s, {r['rate']:,.1f} reports/s "
                       f"({r['requests_rate']:,.1f} requests/s); stats: {r['total']:,} "
                       f"reports, {r['resolved']:,} resolved ({r['resolved_pct']}%)"))

    def _console(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        plan = self.plan
        cases = [console.Case(0),
                 console.Case(plan.console_clients, browser=plan.console_browser,
                              flips=plan.console_flips, flip_every_s=plan.console_flip_every_s,
                              page_loads=plan.console_page_loads)]
        if number % 2 == 0:  # each case goes first in some run
            cases.reverse()
        for case in cases:
            self._attempt(
                "console", number,
                f"console: {case.consoles} consoles, {plan.console_devices:,} devices at "
                f"{plan.console_rate:,.0f} readings/s",
                functools.partial(console.measure, self.root, influx, case,
                                  devices=plan.console_devices, rate=plan.console_rate,
                                  duration_s=plan.console_duration_s,
                                  warm_up_s=plan.console_warm_up_s,
                                  storage_probes=plan.storage_samples),
                _describe_console)

    def _cameras(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        plan = self.plan
        cases = [cameras.Case(0), cameras.Case(plan.cameras_count)]
        if number % 2 == 0:  # each case goes first in some run
            cases.reverse()
        for case in cases:
            self._attempt(
                "cameras", number,
                f"cameras: {case.cameras:,} cameras beside the Jakarta catalog and "
                f"{plan.devices:,} devices at {plan.cameras_rate:,.0f} readings/s",
                functools.partial(cameras.measure, self.root, influx, case,
                                  devices=plan.devices, rate=plan.cameras_rate,
                                  duration_s=plan.cameras_duration_s,
                                  warm_up_s=plan.cameras_warm_up_s,
                                  probe_every_s=plan.cameras_probe_every_s),
                _describe_cameras)

    def _cores(self, number: int, influx: Influx, catalog: Path, receiver: Receiver) -> None:
        """Each system at 1, 2 and all cores: the Mosquitto setups, Siaga's latency at half
        its batch-100 drain rate, then the RabbitMQ ones (bench/cores.py)."""
        plan = self.plan
        chosen = cores.setups(self.systems, cores.core_counts(os.cpu_count() or 1))
        shift = (number - 1) % max(len(chosen), 1)  # each setup goes first in some run
        chosen = chosen[shift:] + chosen[:shift]
        on_mosquitto = [setup for setup in chosen if not setup.amqp]
        self._cores_setups(number, influx, catalog, receiver, on_mosquitto, None)
        drained = [r for r in self.results["cores"] if r["run"] == number
                   and r["kind"] == "drain" and r["system"] == "siaga"
                   and r["shape"] == "batch100" and r["rate"]]
        for what, samples in (("alert", plan.cores_alert_samples),
                              ("storage", plan.cores_storage_samples)):
            if "siaga" not in self.systems:
                break
            if not drained:
                self.skipped.append({"what": f"cores: {what} latency, run {number}",
                                     "why": "no batch-100 drain rate of siaga at 1 core"})
                continue
            self._attempt(
                "cores", number,
                f"cores: {what} latency, siaga on 1 core at half its batch-100 drain rate",
                functools.partial(cores.probes, self.root, influx, catalog, what=what,
                                  samples=samples, drain_rate=drained[0]["rate"], batch=100,
                                  devices=plan.devices),
                lambda r: (f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, max "
                           f"{_ms(r['max_ms'])} ({r['samples']} samples, {r['lost']} lost, "
                           f"background {r['background_rate']:,.0f}/s of "
                           f"{r['asked_rate']:,.0f}/s asked)"))
        on_rabbit = [setup for setup in chosen if setup.amqp]
        if not on_rabbit:
            return
        try:
            with cores.shared(self.root / f"cores-{number}", plan.cores_partitions) as share:
                self._cores_setups(number, influx, catalog, receiver, on_rabbit, share)
        except ServerNotInstalled as exc:
            self.skipped.append({"what": "cores: siaga-amqp", "why": str(exc)})
        except Exception as exc:  # RabbitMQ or PostgreSQL did not start: the rest stands
            self.errors.append({"run": str(number), "what": "cores: RabbitMQ and PostgreSQL",
                                "error": repr(exc), "traceback": traceback.format_exc(limit=6)})
            say(f"[run {number}] cores: RabbitMQ and PostgreSQL: FAILED: {exc!r}")

    def _cores_setups(self, number: int, influx: Influx, catalog: Path, receiver: Receiver,
                      chosen: list[cores.Setup], share: cores.Shared | None) -> None:
        plan = self.plan
        if plan.cores_warm_up_readings and chosen:
            # Unrecorded: the machine's first drain after a quiet spell is slow (bench/plan.py).
            self._attempt(
                "cores_warm_up", number, f"cores: warm-up, {chosen[0].label}, batch 1",
                functools.partial(cores.drain, self.root, influx, catalog, chosen[0], share,
                                  batch=1, readings=plan.cores_warm_up_readings,
                                  devices=plan.devices, cap_s=plan.drain_cap_s,
                                  webhook_url=receiver.url),
                lambda r: f"{r['rate']:,.0f} readings/s drained (not recorded as a figure)")
        for batch in (1, 100):
            backlog = plan.cores_single_backlog if batch == 1 else plan.cores_batch_backlog
            for setup in chosen:
                self._attempt(
                    "cores", number, f"cores: {setup.label}, backlog drain, batch {batch}",
                    functools.partial(cores.drain, self.root, influx, catalog, setup, share,
                                      batch=batch, readings=backlog, devices=plan.devices,
                                      cap_s=plan.drain_cap_s, webhook_url=receiver.url),
                    lambda r: (f"{r['rate']:,.0f} readings/s drained, CPU "
                               f"{r['cpu_percent']:.0f} %, peak RSS {r['peak_rss_mb']:.0f} MB, "
                               f"landed {r['landed']:,} of {r['acknowledged']:,}; CPUs "
                               f"{'/'.join(r['allowed'])}"))
        for batch in (1, 100):
            for setup in chosen:
                self._attempt(
                    "cores", number,
                    f"cores: {setup.label}, live {plan.cores_live_rate:,.0f} readings/s, "
                    f"batch {batch}",
                    functools.partial(cores.steady, self.root, influx, catalog, setup, share,
                                      batch=batch, rate=plan.cores_live_rate,
                                      duration_s=plan.cores_live_duration_s,
                                      warm_up_s=plan.cores_live_warm_up_s,
                                      devices=plan.devices, webhook_url=receiver.url),
                    lambda r: (f"RSS median {r['median_rss_mb']:.0f} MB (all its processes), "
                               f"CPU {r['cpu_percent']:.0f} %; stored {r['stored_rate']:,.0f}/s "
                               f"of {r['fed_rate']:,.0f}/s, "
                               f"{'kept up' if r['kept_up'] else 'fell behind'}"))

    def _books(self) -> list[reports.Book]:
        books = [reports.Book("sqlite")]
        if self.postgres is not None:
            books.append(reports.Book("postgresql", self.postgres))
        return books

    def _year_stats(self, influx: Influx, catalog: Path, book: reports.Book) -> dict[str, Any]:
        if self._year_rows is None:  # made once (the plan, and intake's parsing: ~10 s)
            self._year_rows = yearbook.year_rows(plan_year(reports.YEAR), ReportsSettings())
        return reports.year_stats(self.root, influx, catalog, book, self._year_rows,
                                  repeats=self.plan.reports_stats_repeats)

    # --- bookkeeping ----------------------------------------------------------------------

    def _attempt(self, key: str, number: int, label: str,
                 measure: Callable[[], dict[str, Any] | Measured],
                 describe: Callable[[dict[str, Any]], str]) -> None:
        say(f"[run {number}] {label} ...")
        started = time.monotonic()
        try:
            measured = measure()
            result = measured if isinstance(measured, dict) else measured.as_dict()
        except Exception as exc:  # one broken measurement must not lose the others
            self.errors.append({"run": str(number), "what": label, "error": repr(exc),
                                "traceback": traceback.format_exc(limit=6)})
            say(f"[run {number}] {label}: FAILED: {exc!r}")
            return
        result = {"run": number, "label": label, **result,
                  "seconds": round(time.monotonic() - started, 1)}
        self.results[key].append(result)
        say(f"[run {number}] {label}: {describe(result)}")

    def _note_load(self, when: str) -> None:
        one, five, fifteen = load_average()
        self.load.append({"when": when, "at": time.time(), "load1": one, "load5": five,
                          "load15": fifteen})


def _describe_intake(r: dict[str, Any]) -> str:
    return (f"{r['rate']:,.1f} reports/s, p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}; "
            f"{r['created']:,} created, {r['stored']:,} stored, server CPU "
            f"{r.get('server_cpu_s', '?')} s")


def _describe_console(r: dict[str, Any]) -> str:
    text = (f"stored {r['stored_rate']:,.0f}/s of {r['fed_rate']:,.0f}/s "
            f"({'kept up' if r['kept_up'] else 'fell behind'}), CPU {r['cpu_percent']:.0f} %, "
            f"RSS median {r['median_rss_mb']:.0f} MB, /healthz p99 {_ms(r['healthz_p99_ms'])}, "
            f"storage p50 {_ms(r['storage_p50_ms'])}, p99 {_ms(r['storage_p99_ms'])}")
    if r["consoles"]:
        text += (f"; {r['streaming']} consoles streaming, {r['events_per_s'] or 0:,.1f} "
                 f"events/s, {(r['bytes_per_s'] or 0) / 1000:,.1f} kB/s to them; update p50 "
                 f"{_ms(r['update_p50_ms'])}, p99 {_ms(r['update_p99_ms'])} "
                 f"({r['update_lost']} lost); page load {_ms(r['page_load_ms'])}")
    return text


def _describe_cameras(r: dict[str, Any]) -> str:
    return (f"RSS median {r['median_rss_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB, CPU "
            f"{r['cpu_percent']:.0f} %; alert p50 {_ms(r['alert_p50_ms'])}, p99 "
            f"{_ms(r['alert_p99_ms'])} ({r['alert_samples']} probes, {r['alert_lost']} lost); "
            f"camera {r['camera_stored']:,} stored + {r['camera_dead']:,} dead of "
            f"{r['camera_acked']:,}, camera_event {r['events_stored']:,} + {r['events_dead']:,} "
            f"of {r['events_acked']:,}: {'all accounted' if r['accounted'] else 'NOT accounted'}"
            f"; background {'kept up' if r['kept_up'] else 'fell behind'}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)
