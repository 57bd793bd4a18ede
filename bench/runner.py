"""Runs the chosen scenarios `runs` times, interleaved, and collects every measurement."""

from __future__ import annotations

import functools
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench import (
    ceilings,
    consumers,
    feed,
    latency,
    live,
    nodered,
    recovery,
    scale,
    simulator,
    throughput,
)
from bench.influxdb import Influx
from bench.plan import Plan
from bench.procs import load_average
from bench.receiver import Receiver
from siaga.sandbox.influxdb import InfluxDB1

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
            "recovery")}
        self.errors: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.load: list[dict[str, object]] = []

    def run(self) -> None:
        if "node-red" in self.systems and {"throughput", "live"} & set(self.scenarios):
            reason = nodered.why_missing()
            if reason:
                self.skipped.append({"what": "node-red", "why": reason})
                self.systems = [name for name in self.systems if name != "node-red"]
        with InfluxDB1(self.root / "influxdb") as server, Receiver() as receiver:
            influx = Influx(server)
            catalog = feed.write_catalog(self.plan.devices,
                                         self.root / f"catalog-{self.plan.devices}.yaml")
            for number in range(1, self.plan.runs + 1):
                self._note_load(f"run {number} start")
                for scenario in self.scenarios:
                    getattr(self, f"_{scenario}")(number, influx, catalog, receiver)
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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)
