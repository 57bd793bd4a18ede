"""The cores scenario's report (bench/cores.py): medians, the table, issue 18's targets, the PNG.

The PNG (`<stamp>-cores.png`, beside the results' JSON) has three panels: readings/s drained
against the cores the consumers had, one line per system, for single readings and for
messages of 100; and the summed RSS of each setup's processes at the common live rate.
"""

from __future__ import annotations

import statistics
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Result = dict[str, Any]
Section = Callable[[str, list[str], list[list[str]]], None]

SYSTEMS = ("siaga", "siaga-amqp", "node-red", "paho-batched")  # bench.cores.SYSTEMS, in order
SHAPES = ("single", "batch100")
DRAIN_FIGURES = ["rate", "rate_10_90", "cpu_percent", "peak_rss_mb", "first_landed_s",
                 "planned", "acknowledged", "landed", "broker_cpu_percent"]
LIVE_FIGURES = ["rate", "fed_rate", "stored_rate", "lag_s", "median_rss_mb", "peak_rss_mb",
                "cpu_percent", "broker_median_rss_mb", "broker_cpu_percent"]
LATENCY_FIGURES = ["p50_ms", "p99_ms", "mean_ms", "background_rate", "asked_rate",
                   "drain_rate"]
ALERT_P99_TARGET_MS = 50.0  # issue 18: reading received -> webhook delivered

MEASURE = (
    "each system's consumer processes confined to N cores (`taskset -c 0-(N-1)`, inherited by "
    "their threads and children; `allowed` records what the kernel had) for N = 1, 2 and all "
    "cores (`cpu_count`), deduplicated; Mosquitto, RabbitMQ, PostgreSQL, InfluxDB and the load "
    "mode are not confined and share the machine. siaga: one `siaga run` on Mosquitto (MQTT "
    "input), at 1 core. siaga-amqp: N `siaga run` instances, `ingest.input: amqp` on one "
    "RabbitMQ node (its MQTT plugin takes the devices' messages; 12 partitions, 1 replica, "
    "instance i of N) and `alerting.database_url` on one PostgreSQL (the shared alert book): "
    "the product's cluster mode; at N = 1 beside siaga it shows the broker's and the shared "
    "book's own cost. node-red and paho-batched: N processes on one Mosquitto, with a shared "
    "subscription ($share/bench/...) when N > 1, which deals messages round-robin and so does "
    "not keep a device's readings in order (Siaga's partitions do). drain: a backlog drain as "
    "`backlog_drain` measures it (readings/s from the first poll that saw readings to the "
    "first that saw them all), the backlog queued in the consumers' sessions (Mosquitto) or "
    "partitions (RabbitMQ) before they start; CPU % and peak RSS are summed over the "
    "processes (each one's VmHWM). live: the load mode at `rate` readings/s (common to every "
    "system, count and shape) for `duration_s`; `median_rss_mb` is the median over the span "
    "after `warm_up_s` of the summed RSS of the setup's processes (brokers not counted; "
    "`broker_median_rss_mb` and `broker_cpu_percent` are Mosquitto's or RabbitMQ's Erlang "
    "VM's over the same span, for information: the brokers share the cores with the "
    "consumers). "
    "latency: bench/latency.py's "
    "alert and storage probes against siaga on 1 core, under a background of half "
    "(`share`) the batch-100 drain rate siaga reached on 1 core in the same run, published "
    "in messages of 100 (single readings could not reach it); Siaga on 1 core, as measured")


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _medians(rows: list[Result], numbers: list[str], flags: Iterable[str] = ()) -> Result:
    summary: Result = {key: median(r.get(key) for r in rows) for key in numbers}
    summary["runs"] = len(rows)
    for flag in flags:
        summary[flag] = all(bool(r.get(flag)) for r in rows)
    return summary


def key(system: str, cores: int, shape: str) -> str:
    return f"{system}/{cores}/{shape}"


def summarise(rows: list[Result]) -> Result:
    """Medians per (system, cores, shape) of the drains and the live rate, and the latency."""
    if not rows:
        return {}
    grouped: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for row in rows:
        name = row["what"] if row["kind"] == "latency" else key(row["system"], row["cores"],
                                                                 row["shape"])
        grouped[(row["kind"], name)].append(row)
    drains, lives, latencies = {}, {}, {}
    for (kind, name), group in sorted(grouped.items()):
        first = group[0]
        identity = {"system": first["system"], "cores": first["cores"],
                    "processes": first["processes"], "shape": first["shape"]}
        if kind == "drain":
            drains[name] = identity | _medians(group, DRAIN_FIGURES, ["complete"])
        elif kind == "live":
            lives[name] = identity | _medians(group, LIVE_FIGURES, ["kept_up"]) | {
                "duration_s": first["duration_s"], "warm_up_s": first["warm_up_s"]}
        else:
            latencies[name] = identity | _medians(group, LATENCY_FIGURES) | {
                "max_ms": max((r["max_ms"] for r in group if r["max_ms"] is not None),
                              default=None),
                "lost": sum(r["lost"] for r in group), "share": first["share"]}
    return {"cpu_count": max(r["cpu_count"] or 1 for r in rows),
            "counts": sorted({r["cores"] for r in rows}),
            "drain": drains, "live": lives, "latency": latencies}


def _order(system: str) -> int:
    return SYSTEMS.index(system) if system in SYSTEMS else len(SYSTEMS)


def throughput_lines(summary: Result, shape: str) -> dict[str, list[tuple[int, float]]]:
    """Per system, (cores, readings/s drained) in order of cores: one line of the chart."""
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for figures in (summary.get("drain") or {}).values():
        if figures["shape"] == shape and figures["rate"] is not None:
            lines[figures["system"]].append((figures["cores"], figures["rate"]))
    return {system: sorted(lines[system]) for system in sorted(lines, key=_order)}


Bar = tuple[float | None, bool]  # median RSS MB at the live rate, and whether it kept up


def memory_bars(summary: Result) -> list[tuple[str, int, dict[str, Bar | None]]]:
    """Per setup (system and cores, in the systems' order then by cores), the summed median
    RSS at the live rate and whether it kept up, for each shape (None where not measured)."""
    setups: dict[tuple[str, int], dict[str, Bar | None]] = {}
    for figures in (summary.get("live") or {}).values():
        per_shape = setups.setdefault((figures["system"], figures["cores"]),
                                      dict.fromkeys(SHAPES))
        per_shape[figures["shape"]] = (figures["median_rss_mb"], bool(figures["kept_up"]))
    return [(system, cores, setups[(system, cores)])
            for system, cores in sorted(setups, key=lambda sc: (_order(sc[0]), sc[1]))]


def targets(summary: Result) -> list[Result]:
    """Issue 18: the alert p99 at half the measured maximum; the storage p99 beside it."""
    latency = (summary or {}).get("latency") or {}
    alert, storage = latency.get("alert") or {}, latency.get("storage") or {}
    rate = alert.get("background_rate")
    at = f" at {rate:,.0f} readings/s (half the max)" if rate else " at half the max rate"
    alert_p99 = alert.get("p99_ms")
    return [
        {"issue": 18, "target": f"alert p99{at} (ms)", "wanted": "<= 50",
         "measured": alert_p99,
         "met": None if alert_p99 is None else alert_p99 <= ALERT_P99_TARGET_MS},
        {"issue": 18, "target": "storage p99 at the same load (ms)", "wanted": "reported",
         "measured": storage.get("p99_ms"), "met": None},
    ]


def table_sections(section: Section, summary: Result) -> None:
    """The drains and the live memory per setup, then the latency."""
    if not summary:
        return
    drains, lives = summary["drain"], summary["live"]
    setups = sorted({(f["system"], f["cores"], f["processes"])
                     for f in [*drains.values(), *lives.values()]},
                    key=lambda s: (_order(s[0]), s[1]))
    any_live = next(iter(lives.values()), None)
    live_note = (f"; RSS at a live {_num(any_live['rate'])} readings/s, median after "
                 f"{any_live['warm_up_s']:g} s" if any_live else "")
    rows = []
    for system, cores, processes in setups:
        row = [system, str(cores), str(processes)]
        for shape in SHAPES:
            drain = drains.get(key(system, cores, shape)) or {}
            row += [_num(drain.get("rate")), _num(drain.get("cpu_percent")),
                    _num(drain.get("broker_cpu_percent"))]
        for shape in SHAPES:
            steady = lives.get(key(system, cores, shape)) or {}
            kept = steady.get("kept_up")
            row.append(_num(steady.get("median_rss_mb"))
                       + ("" if kept is None or kept else " (behind)"))
        rows.append(row)
    section(f"Cores (issue 18): consumers confined to N of {summary['cpu_count']} cores, backlog "
            f"drains (NOT a live rate) and memory{live_note} (medians; CPU and RSS summed over "
            f"the processes)",
            ["system", "cores", "processes", "single/s", "CPU %", "broker CPU %", "batch100/s",
             "CPU %", "broker CPU %", "RSS single MB", "RSS batch100 MB"], rows)
    latency = summary["latency"]
    section("Cores: Siaga on 1 core, latency at half its batch-100 drain rate (medians)",
            ["probe", "asked/s", "background/s", "p50 ms", "p99 ms", "max ms", "lost", "runs"],
            [[what, _num(v["asked_rate"]), _num(v["background_rate"]),
              _num(v["p50_ms"], ".1f"), _num(v["p99_ms"], ".1f"), _num(v["max_ms"], ".1f"),
              str(v["lost"]), str(v["runs"])] for what, v in sorted(latency.items())])


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


COLOURS = {"siaga": "#1f77b4", "siaga-amqp": "#17becf", "node-red": "#d62728",
           "paho-batched": "#2ca02c"}


def write_chart(path: Path, summary: Result, title: str) -> None:
    """Throughput against cores (single, batch100) and memory at the live rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(18, 6.2))
    figure.suptitle(textwrap.fill(title, 170), fontsize=10)
    counts = summary["counts"]
    for axis, shape, label in ((axes[0], "single", "single-reading messages"),
                               (axes[1], "batch100", "messages of 100 readings")):
        for system, points in throughput_lines(summary, shape).items():
            xs, ys = [c for c, _ in points], [r for _, r in points]
            axis.plot(xs, ys, "o-", color=COLOURS.get(system, "#9467bd"), label=system)
            for x, y in points:
                axis.annotate(f"{y:,.0f}", (x, y), xytext=(4, 4), textcoords="offset points",
                              fontsize=7)
        axis.set_xticks(counts)
        axis.set_xlabel(f"cores the consumers had (of {summary['cpu_count']})")
        axis.set_ylabel("readings/s drained into InfluxDB")
        axis.set_ylim(bottom=0)
        axis.set_title(f"Backlog drain (not a live rate): {label}", fontsize=10)
        axis.legend(fontsize=8)
    _memory_panel(axes[2], summary)
    latency = summary.get("latency") or {}
    alert = latency.get("alert") or {}
    if alert.get("p99_ms") is not None:
        storage = latency.get("storage") or {}
        figure.text(0.5, 0.01,
                    f"Latency, Siaga on 1 core at {alert['background_rate']:,.0f} readings/s "
                    f"(half its batch-100 drain rate): alert p99 {alert['p99_ms']:.1f} ms "
                    f"(target <= 50), storage p99 {_num(storage.get('p99_ms'), '.1f')} ms",
                    ha="center", fontsize=9)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _memory_panel(axis: Any, summary: Result) -> None:
    bars = memory_bars(summary)
    if not bars:
        axis.set_axis_off()
        return
    width = 0.4
    for index, (shape, colour) in enumerate((("single", "#1f77b4"), ("batch100", "#ff7f0e"))):
        xs = [position + (index - 0.5) * width for position in range(len(bars))]
        measured = [per_shape[shape] or (None, True) for _, _, per_shape in bars]
        heights = [rss or 0.0 for rss, _ in measured]
        drawn = axis.bar(xs, heights, width=width, color=colour, label=shape)
        for bar, (rss, kept_up) in zip(drawn, measured, strict=True):
            if rss:  # a setup that fell behind held less than it would have: marked
                axis.annotate(f"{rss:.0f}" + ("" if kept_up else "\nbehind"),
                              (bar.get_x() + bar.get_width() / 2, rss),
                              ha="center", va="bottom", fontsize=7)
    axis.set_xticks(list(range(len(bars))), [f"{system} x{cores}" for system, cores, _ in bars],
                    fontsize=8, rotation=30, ha="right")
    rate = next(iter(summary["live"].values()))["rate"]
    axis.set_title(f"RSS of all the setup's processes at a live {rate:,.0f} readings/s "
                   f"(median)", fontsize=10)
    axis.set_ylabel("MB")
    axis.legend(fontsize=8)
