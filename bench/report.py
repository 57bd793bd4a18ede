"""Medians, same-run ratios and the issue's targets; the table, the JSON and the PNG chart."""

from __future__ import annotations

import json
import statistics
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import cores_chart

Result = dict[str, Any]

# What each figure is, written into every results file beside the figures.
MEASURES = {
    "ceilings": "Mosquitto's and InfluxDB's own rates on this machine, without Siaga",
    "simulator": "the simulators' own speed: the scenario generator's emissions/s in-process, "
                 "and the load mode (`siaga simulate --rate max`) publishing flat out into a "
                 "broker nobody reads (readings/s the broker acknowledged)",
    "backlog_drain": "a backlog drain, not a live rate: exactly `planned` readings are queued "
                     "in Mosquitto for the system's persistent session while it is away, then "
                     "it starts and empties the queue into InfluxDB; readings/s from the first "
                     "poll that saw readings to the first that saw them all; peak RSS is the "
                     "memory of that drain (a system acking on receipt buffers the backlog)",
    "live": "a steady live rate: the load mode publishes at `rate` readings/s to the running, "
            "subscribed system for `duration_s`; RSS sampled every second, median and peak "
            "after `warm_up_s`; kept up = behind by at most 3 s of load when it stopped, and "
            "everything landed",
    "latency": "Siaga under a live background load: publish -> webhook received (alert), "
               "publish -> queryable in InfluxDB (storage)",
    "scale": "Siaga's memory and CPU per reading with N devices at a live 5,000 readings/s",
    "recovery": "InfluxDB stopped under a live load, then back: the rate Siaga writes while "
                "its spool drains, over the live rate (`multiple`)",
    "reports_intake": "residents' reports POSTed to /open311/v2/requests.json by a load client "
                      "in its own process (`concurrency` kept-alive connections, bodies built "
                      "beforehand, 20 warm-up reports not counted): reports/s from the first "
                      "request sent to the last 201 received; p50/p99 of the 201s' latency; "
                      "Siaga (`siaga run`, per-key rate limit raised out of the way) on SQLite "
                      "or PostgreSQL, and a bare aiohttp+SQLite handler with no checks at all "
                      "(bench/peers/reports_sqlite.py) under the same client and reports",
    "reports_stats": "ReportBook.stats(2020) over a year of 137,776 reports (bulk-loaded rows "
                     "the book itself would hold, bench/yearbook.py), median of `repeats` "
                     "calls in-process; then GET /api/reports/stats?year=2020 once through "
                     "the running service",
    "reports_year": "`siaga simulate reports --year 2020 --speedup 0` (137,776 reports and "
                    "their officers' updates through the HTTP API) into a running Siaga on "
                    "SQLite, wall time; then `siaga reports stats --year 2020` from storage",
    "console": "Siaga with the 10,000-device synthetic catalog at a live `rate`, in case `none` "
               "without a console and in case `consoles` with `consoles` aiohttp clients acting "
               "as the page (GET /console/api/state, then the SSE stream, each event decoded) "
               "in a process of their own, plus one headless Chromium page; stored readings/s, "
               "Siaga's CPU and RSS, GET /healthz times and storage latency (bench/latency.py's "
               "probe) after the warm-up, and bytes/s and "
               "events/s received by all the consoles together; ratios taken within each run. "
               "received/s is Siaga's own count of readings decoded over the same span: on 2 "
               "cores the consoles' client takes CPU from the load mode too, so where it "
               "drops the stored ratio follows the load, not Siaga (see `kept up`). "
               "Update: a gauge published above siaga1_cm and back every 0.5 s, publish -> the "
               "`devices` event with the new status in a console (and -> the row's data-status "
               "in the page). Page load: a cold browser context, goto('/') -> "
               "window.__siagaReady, under the load, after the counted span",
    "cameras": "Siaga with the Jakarta catalog and `devices` synthetic devices at a live `rate` "
               "(the background), in case `none` alone and in case `cameras` with `cameras` "
               "synthetic cameras beside them from the same load-mode process (`siaga simulate "
               "--devices N --cameras M --rate R`: counts every 10 s each, detections new and "
               "end at 24 an hour each, plates made up, a few on the service's watch list); "
               "cases in turns, ratios within each run. Siaga's RSS (median, peak) and CPU "
               "after the warm-up; alert latency: bench/latency.py's gauge probe through the "
               "span (publish -> the FloodLevel webhook); accounted: points in `camera` plus "
               "camera telemetry dead-lettered equal the camera readings the broker "
               "acknowledged, and points in `camera_event` plus events dead-lettered equal the "
               "events acknowledged (dead letters from /api/deadletters/counts)",
    "cores": cores_chart.MEASURE,
}


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(results: dict[str, list[Result]]) -> dict[str, Any]:
    """Medians per measurement, and ratios taken within each run before their median."""
    return {
        "ceilings": {name: _medians(results[name], ["rate"], ["verified"])
                     for name in ("mosquitto", "influxdb") if results[name]},
        "simulator": {f"{r0['what']}/{r0.get('shape', 'emissions')}":
                      _medians(rows, ["rate", "cpu_percent"])
                      for rows in _group(results["simulator"], "label").values()
                      for r0 in rows[:1]},
        "backlog_drain": {f"{name}/{shape}": {"measure": "backlog drain"}
                          | _medians(rows, ["rate", "rate_10_90", "cpu_percent", "peak_rss_mb",
                                            "first_landed_s", "planned", "acknowledged",
                                            "landed"], ["complete"])
                          | {"ended": sorted({r["ended"] for r in rows})}
                          for (name, shape), rows in _group(results["backlog_drain"],
                                                            "consumer", "shape").items()},
        "live": {name: {"measure": "live rate"}
                 | _medians(rows, ["rate", "fed_rate", "stored_rate", "lag_s", "median_rss_mb",
                                   "peak_rss_mb", "hwm_rss_mb", "cpu_percent", "published",
                                   "landed"], ["kept_up"])
                 | {"warm_up_s": rows[0]["warm_up_s"], "duration_s": rows[0]["duration_s"]}
                 for (name,), rows in _group(results["live"], "consumer").items()},
        "ratios": _ratios(results["backlog_drain"], results["live"]),
        "latency": {what: _medians(rows, ["p50_ms", "p99_ms", "mean_ms", "background_rate"])
                    | {"max_ms": max((r["max_ms"] for r in rows if r["max_ms"] is not None),
                                     default=None),
                       "lost": sum(r["lost"] for r in rows)}
                    for (what,), rows in _group(results["latency"], "what").items()},
        "scale": {str(devices): _medians(rows, ["ready_rss_mb", "peak_rss_mb", "end_rss_mb",
                                                "cpu_us_per_reading", "rate", "ready_s"])
                  | {"verified": all(r["landed"] >= r["expected"] for r in rows)}
                  for (devices,), rows in _group(results["scale"], "devices").items()},
        "recovery": (_medians(results["recovery"], ["drain_s", "multiple", "spooled",
                                                    "live_rate", "catch_up_rate", "outage_s"])
                     | {"verified": all(r["landed"] >= r["expected"]
                                        for r in results["recovery"])}
                     if results["recovery"] else {}),
        "reports_intake": {
            f"{system}/{backend}/{shape}": _medians(rows, [
                "rate", "p50_ms", "p99_ms", "max_ms", "server_cpu_s", "planned", "created",
                "stored", "concurrency", "mean_body_bytes"], ["verified"])
            for (system, backend, shape), rows in _group(
                results.get("reports_intake", []), "system", "backend", "shape").items()},
        "reports_stats": {
            backend: _medians(rows, ["median_s", "first_s", "http_s", "load_s", "reports",
                                     "resolved", "resolved_pct"], ["verified"])
            | {"top5": rows[-1]["top5"]}
            for (backend,), rows in _group(results.get("reports_stats", []),
                                           "backend").items()},
        "reports_year": (_medians(results["reports_year"], [
            "wall_s", "rate", "requests_rate", "updates", "total", "resolved", "resolved_pct",
            "server_cpu_percent", "server_peak_rss_mb"], ["verified"])
            | {"top5": results["reports_year"][-1]["top5"],
               "stats_table": results["reports_year"][-1]["stats_table"]}
            if results.get("reports_year") else {}),
        "console": _console(results.get("console", [])),
        "cameras": _cameras(results.get("cameras", [])),
        "cores": cores_chart.summarise(results.get("cores", [])),
    }


CONSOLE_FIGURES = [
    "rate", "fed_rate", "received_rate", "stored_rate", "lag_s", "cpu_percent", "median_rss_mb",
    "peak_rss_mb", "cpu_us_per_reading", "healthz_p50_ms", "healthz_p99_ms", "storage_p50_ms",
    "storage_p99_ms", "client_cpu_percent", "bytes_per_s", "events_per_s", "streaming",
    "update_p50_ms", "update_p99_ms", "page_update_p50_ms", "page_update_p99_ms", "page_load_ms",
    "page_heap_mb"]
# With consoles over without. `received_rate` (Siaga's own count, over the same span) is what
# the load mode managed to publish: on 2 cores the consoles' client takes CPU from it too,
# and where it drops the stored ratio follows it, not Siaga (compare `kept up`).
CONSOLE_RATIOS = ("stored_rate", "received_rate", "cpu_percent", "cpu_us_per_reading",
                  "median_rss_mb")


def _console(rows: list[Result]) -> Result:
    """Medians per case (`none`, `consoles`), and the cases' ratios within each run."""
    if not rows:
        return {}
    cases = {case: {"consoles": group[0]["consoles"]}
             | _medians(group, CONSOLE_FIGURES, ["kept_up"])
             | {"update_lost": sum(r.get("update_lost") or 0 for r in group)}
             for (case,), group in _group(rows, "case").items()}
    ratios: dict[str, list[float]] = defaultdict(list)
    for (_,), runs in _group(rows, "run").items():
        named = {r["case"]: r for r in runs}
        if "none" not in named or "consoles" not in named:
            continue
        for key in CONSOLE_RATIOS:
            with_consoles, without = named["consoles"].get(key), named["none"].get(key)
            if with_consoles is not None and without:
                ratios[key].append(with_consoles / without)
    skipped = sorted({r["clients"]["browser"]["skipped"] for r in rows
                      if (r.get("clients") or {}).get("browser", {}).get("skipped")})
    return {"devices": rows[0]["devices"], "duration_s": rows[0]["duration_s"],
            "warm_up_s": rows[0]["warm_up_s"], "cases": cases,
            "ratios": {key: median(ratios[key]) for key in CONSOLE_RATIOS},
            "browser_skipped": skipped[0] if skipped else None}


CAMERA_FIGURES = [
    "fed_rate", "stored_rate", "lag_s", "camera_rate", "event_rate", "median_rss_mb",
    "peak_rss_mb", "cpu_percent", "alert_p50_ms", "alert_p99_ms", "alert_samples", "webhooks"]
CAMERA_RATIOS = ("median_rss_mb", "peak_rss_mb", "cpu_percent", "alert_p50_ms", "alert_p99_ms")
CAMERA_COUNTS = ("camera_acked", "camera_stored", "camera_dead", "camera_missing",
                 "events_acked", "events_stored", "events_dead", "events_missing",
                 "dead_letters", "unacknowledged", "accounted")


def _cameras(rows: list[Result]) -> Result:
    """Medians per case (`none`, `cameras`), the cases' ratios within each run (and the RSS
    they differ by), and each run's accounting of the camera messages."""
    if not rows:
        return {}
    cases = {case: {"cameras": group[0]["cameras"]}
             | _medians(group, CAMERA_FIGURES, ["kept_up", "accounted"])
             | {"alert_max_ms": max((r["alert_max_ms"] for r in group
                                     if r["alert_max_ms"] is not None), default=None),
                "alert_lost": sum(r["alert_lost"] for r in group)}
             for (case,), group in _group(rows, "case").items()}
    ratios: dict[str, list[float]] = defaultdict(list)
    for (_,), runs in _group(rows, "run").items():
        named = {r["case"]: r for r in runs}
        if "none" not in named or "cameras" not in named:
            continue
        for key in CAMERA_RATIOS:
            with_cameras, without = named["cameras"].get(key), named["none"].get(key)
            if with_cameras is not None and without:
                ratios[key].append(with_cameras / without)
        ratios["median_rss_mb added"].append(named["cameras"]["median_rss_mb"]
                                             - named["none"]["median_rss_mb"])
    first = rows[0]
    return {"devices": first["devices"], "rate": first["rate"], "duration_s": first["duration_s"],
            "warm_up_s": first["warm_up_s"],
            "cameras": max(r["cameras"] for r in rows), "cases": cases,
            "ratios": {key: median(values) for key, values in ratios.items()},
            "accounting": [{"run": r["run"], "case": r["case"]}
                           | {key: r[key] for key in CAMERA_COUNTS} for r in rows],
            "accounted": all(r["accounted"] for r in rows)}


def _group(rows: list[Result], *keys: str) -> dict[tuple[Any, ...], list[Result]]:
    grouped: dict[tuple[Any, ...], list[Result]] = defaultdict(list)
    for row in rows:
        grouped[tuple(row[key] for key in keys)].append(row)
    return dict(grouped)


def _medians(rows: list[Result], numbers: list[str], flags: Iterable[str] = ()) -> Result:
    summary: Result = {key: median(r.get(key) for r in rows) for key in numbers}
    summary["runs"] = len(rows)
    for flag in flags:
        summary[flag] = all(bool(r.get(flag)) for r in rows)
    return summary


def _ratios(drains: list[Result], lives: list[Result]) -> Result:
    """Siaga over each peer within each run, then medians: drain rates, drain peak RSS over
    Node-RED's, and RSS at the live rate (median of the steady span) over each peer's."""
    ratios: dict[str, list[float]] = defaultdict(list)
    for (_, shape), runs in _group(drains, "run", "shape").items():
        named = {r["consumer"]: r for r in runs}
        siaga = named.get("siaga")
        if siaga is None:
            continue
        for peer, row in named.items():
            if peer != "siaga" and row["rate"]:
                ratios[f"siaga/{peer} backlog drain rate, {shape}"].append(
                    siaga["rate"] / row["rate"])
        if "node-red" in named and named["node-red"]["peak_rss_mb"]:
            ratios[f"siaga/node-red peak RSS in a backlog drain, {shape}"].append(
                siaga["peak_rss_mb"] / named["node-red"]["peak_rss_mb"])
    for (_,), runs in _group(lives, "run").items():
        named = {r["consumer"]: r for r in runs}
        siaga = named.get("siaga")
        if siaga is None:
            continue
        for peer, row in named.items():
            if peer != "siaga" and row["median_rss_mb"]:
                ratios[f"siaga/{peer} median RSS at the live rate"].append(
                    siaga["median_rss_mb"] / row["median_rss_mb"])
    return {name: median(values) for name, values in sorted(ratios.items())}


def targets(summary: dict[str, Any]) -> list[Result]:
    """The issue's targets, each with the measured median and whether it is met."""
    ratios, latency = summary["ratios"], summary["latency"]
    drains, scale = summary["backlog_drain"], summary["scale"]

    def get(mapping: dict[str, Any], *path: str) -> float | None:
        for key in path:
            if not isinstance(mapping, dict) or key not in mapping:
                return None
            mapping = mapping[key]
        return mapping  # type: ignore[return-value]

    intake, year_stats = summary["reports_intake"], summary["reports_stats"]
    rows: list[tuple[str, str, float | None, Callable[[float], bool] | None]] = [
        ("backlog drain, single readings: Siaga / Node-RED rate", ">= 1.0",
         ratios.get("siaga/node-red backlog drain rate, single"), lambda v: v >= 1.0),
        ("backlog drain, single readings: Siaga / Node-RED peak RSS", "<= 0.25",
         ratios.get("siaga/node-red peak RSS in a backlog drain, single"), lambda v: v <= 0.25),
        ("live rate: Siaga / Node-RED median RSS", "<= 0.25",
         ratios.get("siaga/node-red median RSS at the live rate"), lambda v: v <= 0.25),
        ("backlog drain, single readings: Siaga / batched paho rate", ">= 0.9",
         ratios.get("siaga/paho-batched backlog drain rate, single"), lambda v: v >= 0.9),
        ("backlog drain, batches of 100: Siaga readings/s", ">= 100,000",
         get(drains, "siaga/batch100", "rate"), lambda v: v >= 100_000),
        ("alert latency p99 at 5,000 readings/s (ms)", "<= 50",
         get(latency, "alert", "p99_ms"), lambda v: v <= 50),
        ("storage latency p99 at 10,000 readings/s (ms)", "<= 250",
         get(latency, "storage", "p99_ms"), lambda v: v <= 250),
        ("peak RSS with 10,000 devices (MB)", "<= 100",
         get(scale, "10000", "peak_rss_mb"), lambda v: v <= 100),
        ("spool drain speed / live rate", ">= 5",
         get(summary["recovery"], "multiple"), lambda v: v >= 5),
    ]
    issue14: list[tuple[str, str, float | None, Callable[[float], bool] | None]] = []
    for backend, name in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        issue14 += [
            (f"reports intake, no photo, {name} (reports/s)", ">= 500",
             get(intake, f"siaga/{backend}/form", "rate"), lambda v: v >= 500),
            (f"reports intake, 200 KB photo, {name} (reports/s)", ">= 50",
             get(intake, f"siaga/{backend}/photo", "rate"), lambda v: v >= 50),
            (f"stats of a year (137,776 reports), {name} (s)", "< 1",
             get(year_stats, backend, "median_s"), lambda v: v < 1),
        ]
    issue14.append(("a year replayed at full speed, SQLite (s)", "its time",
                    get(summary["reports_year"], "wall_s"), None))
    console = summary.get("console") or {}
    with_consoles = (console.get("cases") or {}).get("consoles") or {}
    issue15: list[tuple[str, str, float | None, Callable[[float], bool] | None]] = [
        ("console: stored readings/s with the consoles / without", ">= 0.95",
         get(console, "ratios", "stored_rate"), lambda v: v >= 0.95),
        # The issue's own figure: a change reaches the page within 2 s.
        ("console: update p99, publish -> the page's row (ms)", "<= 2000",
         with_consoles.get("page_update_p99_ms"), lambda v: v <= 2000),
        # The plan's budget for the service's part (a 200 ms tick, then one write).
        ("console: update p99, publish -> SSE event (ms)", "< 500",
         with_consoles.get("update_p99_ms"), lambda v: v < 500),
        ("console: page load with 10,000 devices, median (ms)", "its time",
         with_consoles.get("page_load_ms"), None),
    ]
    return ([{"issue": 6, "target": name, "wanted": wanted, "measured": value,
              "met": None if value is None or check is None else bool(check(value))}
             for name, wanted, value, check in rows]
            + [{"issue": 14, "target": name, "wanted": wanted, "measured": value,
                "met": None if value is None or check is None else bool(check(value))}
               for name, wanted, value, check in issue14]
            + [{"issue": 15, "target": name, "wanted": wanted, "measured": value,
                "met": None if value is None or check is None else bool(check(value))}
               for name, wanted, value, check in issue15]
            + _camera_targets(summary.get("cameras") or {})
            + cores_chart.targets(summary.get("cores") or {}))


def _camera_targets(cameras: Result) -> list[Result]:
    """Issue 16: every camera message stored or dead-lettered; the alert p99 and the memory
    with the cameras, reported beside the run without them (no figure is asked of them)."""
    if not cameras:
        return []
    cases, ratios = cameras["cases"], cameras["ratios"]
    with_cameras, without = cases.get("cameras") or {}, cases.get("none") or {}
    missing = sum(abs(row["camera_missing"]) + abs(row["events_missing"])
                  for row in cameras["accounting"])
    count = f"{cameras['cameras']:,}"
    rows: list[tuple[str, str, float | None, bool | None]] = [
        (f"cameras: every message of {count} cameras stored or dead-lettered (missing)",
         "0", float(missing), bool(cameras["accounted"])),
        (f"cameras: alert p99 with {count} cameras (ms)", "reported",
         with_cameras.get("alert_p99_ms"), None),
        ("cameras: alert p99 without cameras (ms)", "reported", without.get("alert_p99_ms"),
         None),
        (f"cameras: median RSS with {count} cameras (MB)", "reported",
         with_cameras.get("median_rss_mb"), None),
        ("cameras: median RSS without cameras (MB)", "reported", without.get("median_rss_mb"),
         None),
        ("cameras: alert p99 with / without, within a run", "reported",
         ratios.get("alert_p99_ms"), None),
    ]
    return [{"issue": 16, "target": name, "wanted": wanted, "measured": value, "met": met}
            for name, wanted, value, met in rows]


# --- the table --------------------------------------------------------------------------


def table(summary: dict[str, Any], goals: list[Result], header: str) -> str:
    out = [header, ""]

    def section(title: str, columns: list[str], rows: list[list[str]]) -> None:
        if not rows:
            return
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        out.append(title)
        out.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                    for i, (c, w) in enumerate(zip(columns, widths, strict=True))))
        for row in rows:
            out.append("  " + "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                                        for i, (v, w) in enumerate(zip(row, widths, strict=True))))
        out.append("")

    ceilings = summary["ceilings"]
    section("Ceilings (medians)", ["what", "rate", "verified", "runs"], [
        [label, f"{c['rate']:,.0f} {unit}", _yes(c["verified"]), str(c["runs"])]
        for key, label, unit in (("mosquitto", "Mosquitto QoS 1, mosquitto_pub -> mosquitto_sub",
                                  "msg/s"),
                                 ("influxdb", "InfluxDB 1.6.7, batches of 5000, one connection",
                                  "points/s"))
        if (c := ceilings.get(key))])
    simulated = summary["simulator"]
    section("Simulators' own speed (medians): what the load comes from",
            ["what", "rate", "CPU %", "runs"],
            [[{"generator/emissions": "scenario generator, in-process (emissions/s)",
               "load mode/single": "load mode flat out, single readings (readings/s acked)",
               "load mode/batch100": "load mode flat out, batches of 100 (readings/s acked)",
               }.get(key, key), _num(v["rate"]), _num(v["cpu_percent"]), str(v["runs"])]
             for key, v in sorted(simulated.items())])
    drains = summary["backlog_drain"]
    section("Backlog drain (NOT a live rate): a pre-loaded backlog drained from Mosquitto into "
            "InfluxDB (medians)",
            ["system / message shape", "backlog", "readings/s", "10-90% slope", "CPU %",
             "peak RSS MB", "start s", "all landed", "runs"],
            [[key, _num(t["planned"]), _num(t["rate"]), _num(t["rate_10_90"]),
              _num(t["cpu_percent"]), _num(t["peak_rss_mb"]), _num(t["first_landed_s"], ".1f"),
              "yes" if t["complete"] else "/".join(t["ended"]), str(t["runs"])]
             for key, t in sorted(drains.items(),
                                  key=lambda kv: (kv[0].split("/")[1], -(kv[1]["rate"] or 0)))])
    lives = summary["live"]
    if lives:
        any_live = next(iter(lives.values()))
        section(f"Live rate: {any_live['rate']:,.0f} readings/s published for "
                f"{any_live['duration_s']:g} s, memory after a {any_live['warm_up_s']:g} s "
                f"warm-up (medians), beside the backlog drain's peak",
                ["system", "published/s", "stored/s", "behind s", "kept up", "RSS median MB",
                 "RSS peak MB", "CPU %", "drain peak RSS MB", "runs"],
                [[name, _num(v["fed_rate"]), _num(v["stored_rate"]), _num(v["lag_s"], ".1f"),
                  _yes(v["kept_up"]), _num(v["median_rss_mb"]), _num(v["peak_rss_mb"]),
                  _num(v["cpu_percent"]),
                  _num((drains.get(f"{name}/single") or {}).get("peak_rss_mb")), str(v["runs"])]
                 for name, v in sorted(lives.items(),
                                       key=lambda kv: kv[1]["median_rss_mb"] or 0)])
    section("Same-run ratios (median over runs)", ["ratio", "value"],
            [[name, _num(value, ".2f")] for name, value in summary["ratios"].items()])
    section("Latency (medians of runs; max over all)",
            ["probe", "background/s", "p50 ms", "p99 ms", "max ms", "lost", "runs"],
            [[what, _num(v["background_rate"]), _num(v["p50_ms"], ".1f"),
              _num(v["p99_ms"], ".1f"), _num(v["max_ms"], ".1f"), str(v["lost"]), str(v["runs"])]
             for what, v in summary["latency"].items()])
    section("Scale of devices: Siaga (medians)",
            ["devices", "RSS ready MB", "peak RSS MB", "CPU us/reading", "load/s", "ready s",
             "all landed"],
            [[f"{int(devices):,}", _num(v["ready_rss_mb"]), _num(v["peak_rss_mb"]),
              _num(v["cpu_us_per_reading"], ".1f"), _num(v["rate"]), _num(v["ready_s"], ".1f"),
              _yes(v["verified"])]
             for devices, v in sorted(summary["scale"].items(), key=lambda kv: int(kv[0]))])
    recovery = summary["recovery"]
    if recovery:
        section("Recovery: InfluxDB stopped under a steady live load; the spool's drain "
                "(medians)",
                ["outage s", "live/s", "spooled", "drain s", "catch-up/s", "x live", "all landed"],
                [[_num(recovery["outage_s"]), _num(recovery["live_rate"]),
                  _num(recovery["spooled"]), _num(recovery["drain_s"], ".1f"),
                  _num(recovery["catch_up_rate"]), _num(recovery["multiple"], ".1f"),
                  _yes(recovery["verified"])]])
    _reports_sections(section, summary)
    _console_sections(section, summary.get("console") or {})
    _camera_sections(section, summary.get("cameras") or {})
    cores_chart.table_sections(section, summary.get("cores") or {})
    for issue in (6, 14, 15, 16, 18):
        chosen = [g for g in goals if g.get("issue", 6) == issue]
        if all(g["measured"] is None for g in chosen):
            continue  # none of this issue's scenarios ran in this invocation
        section(f"Targets (issue {issue})", ["target", "wanted", "measured", "met"],
                [[g["target"], g["wanted"], _measured(g["measured"]),
                  "-" if g["met"] is None else _yes(g["met"])] for g in chosen])
    return "\n".join(out)


def _reports_sections(section: Callable[[str, list[str], list[list[str]]], None],
                      summary: dict[str, Any]) -> None:
    """Residents' reports: intake beside the bare peer, the yearly stats, the year replayed."""
    intake = summary["reports_intake"]
    section("Residents' reports: intake through POST /open311/v2/requests.json (medians); "
            "the peer stores the form and nothing else (no key, validation, photo "
            "re-encoding, duplicate search or correlation)",
            ["system / book / body", "reports", "conns", "reports/s", "p50 ms", "p99 ms",
             "server CPU s", "all stored", "runs"],
            [[key.replace("bare-sqlite-handler", "peer: bare aiohttp+SQLite handler"),
              _num(v["planned"]), _num(v["concurrency"]), _num(v["rate"], ",.1f"),
              _num(v["p50_ms"], ".1f"), _num(v["p99_ms"], ".1f"),
              _num(v["server_cpu_s"], ".1f"), _yes(v["verified"]), str(v["runs"])]
             for key, v in sorted(intake.items(),
                                  key=lambda kv: (kv[0].split("/")[2], kv[0]))])
    section("Residents' reports: statistics of a year (medians)",
            ["book", "reports", "stats() s", "first call s", "HTTP s", "resolved %",
             "top category", "counts right", "runs"],
            [[backend, _num(v["reports"]), _num(v["median_s"], ".3f"),
              _num(v["first_s"], ".3f"), _num(v["http_s"], ".3f"),
              _num(v["resolved_pct"], ".2f"),
              f"{v['top5'][0][0]} {v['top5'][0][1]:,}" if v["top5"] else "-",
              _yes(v["verified"]), str(v["runs"])]
             for backend, v in summary["reports_stats"].items()])
    year = summary["reports_year"]
    if year:
        section("Residents' reports: a year replayed at full speed (siaga simulate reports "
                "--speedup 0, SQLite), then `siaga reports stats` from storage",
                ["wall s", "reports/s", "requests/s", "total", "resolved", "resolved %",
                 "top five", "counts right"],
                [[_num(year["wall_s"]), _num(year["rate"], ",.1f"),
                  _num(year["requests_rate"], ",.1f"), _num(year["total"]),
                  _num(year["resolved"]), _num(year["resolved_pct"], ".2f"),
                  ", ".join(f"{code} {count:,}" for code, count in year["top5"]),
                  _yes(year["verified"])]])


def _console_sections(section: Callable[[str, list[str], list[list[str]]], None],
                      console: Result) -> None:
    """The console: each case, the ratios within runs, the updates and the page."""
    cases = console.get("cases") or {}
    if not cases:
        return
    ordered = sorted(cases.items(), key=lambda kv: kv[1]["consoles"])
    rate = next(iter(cases.values()))["rate"]
    section(f"Console (issue 15): Siaga with {console['devices']:,} devices at "
            f"{_num(rate)} readings/s for {console['duration_s']:g} s after a "
            f"{console['warm_up_s']:g} s warm-up, without consoles and with them (medians)",
            ["consoles", "received/s", "stored/s", "behind s", "kept up", "CPU %",
             "CPU us/reading", "RSS median MB", "/healthz p99 ms", "storage p50/p99 ms",
             "streaming",
             "events/s (all)", "kB/s (all)", "client CPU %", "runs"],
            [[str(v["consoles"]), _num(v["received_rate"]), _num(v["stored_rate"]),
              _num(v["lag_s"], ".1f"), _yes(v["kept_up"]), _num(v["cpu_percent"]),
              _num(v["cpu_us_per_reading"], ".1f"), _num(v["median_rss_mb"]),
              _num(v["healthz_p99_ms"], ".1f"),
              f"{_num(v['storage_p50_ms'])}/{_num(v['storage_p99_ms'])}", _num(v["streaming"]),
              _num(v["events_per_s"], ",.1f"),
              _num(None if v["bytes_per_s"] is None else v["bytes_per_s"] / 1000, ",.1f"),
              _num(v["client_cpu_percent"]), str(v["runs"])] for _, v in ordered])
    section("Console: with the consoles / without, within each run (median over runs)",
            ["ratio", "value"],
            [[f"{key} consoles/none", _num(value, ".3f")]
             for key, value in console["ratios"].items()])
    shown = cases.get("consoles")
    if shown:
        page = ("skipped: " + console["browser_skipped"] if console.get("browser_skipped")
                else _num(shown["page_load_ms"]))
        section("Console: a gauge above siaga1_cm and back every 0.5 s (publish -> SSE event "
                "in a console; -> the row's data-status in the page), and the page's cold load",
                ["update p50 ms", "update p99 ms", "lost", "page p50 ms", "page p99 ms",
                 "page load ms", "JS heap MB"],
                [[_num(shown["update_p50_ms"], ".1f"), _num(shown["update_p99_ms"], ".1f"),
                  str(shown["update_lost"]), _num(shown["page_update_p50_ms"], ".1f"),
                  _num(shown["page_update_p99_ms"], ".1f"), page,
                  _num(shown["page_heap_mb"], ".1f")]])


def _camera_sections(section: Callable[[str, list[str], list[list[str]]], None],
                     cameras: Result) -> None:
    """Cameras: each case, the ratios within runs, each run's accounting."""
    cases = cameras.get("cases") or {}
    if not cases:
        return
    ordered = sorted(cases.items(), key=lambda kv: kv[1]["cameras"])
    section(f"Cameras (issue 16): the Jakarta catalog and {cameras['devices']:,} devices at "
            f"{_num(cameras['rate'])} readings/s for {cameras['duration_s']:g} s after a "
            f"{cameras['warm_up_s']:g} s warm-up, without cameras and with them (medians)",
            ["cameras", "camera msg/s", "events/s", "background/s", "kept up", "RSS median MB",
             "RSS peak MB", "CPU %", "alert p50 ms", "alert p99 ms", "alert max ms", "probes",
             "lost", "all accounted", "runs"],
            [[f"{v['cameras']:,}", _num(v["camera_rate"]), _num(v["event_rate"], ",.1f"),
              _num(v["fed_rate"]), _yes(v["kept_up"]), _num(v["median_rss_mb"]),
              _num(v["peak_rss_mb"]), _num(v["cpu_percent"]), _num(v["alert_p50_ms"], ".1f"),
              _num(v["alert_p99_ms"], ".1f"), _num(v["alert_max_ms"], ".1f"),
              _num(v["alert_samples"]), str(v["alert_lost"]), _yes(v["accounted"]),
              str(v["runs"])] for _, v in ordered])
    section("Cameras: with the cameras / without, within each run (median over runs)",
            ["ratio", "value"],
            [[f"{key} cameras/none" if key in CAMERA_RATIOS else f"{key} (MB, cameras - none)",
              _num(value, ".3f" if key in CAMERA_RATIOS else ",.1f")]
             for key, value in cameras["ratios"].items()])
    section("Cameras: every message stored or dead-lettered (each run; acked = what the broker "
            "acknowledged to the load mode)",
            ["run / case", "camera acked", "stored", "dead", "missing", "camera_event acked",
             "stored", "dead", "missing", "dead letters", "unacked", "accounted"],
            [[f"{row['run']} / {row['case']}", _num(row["camera_acked"]),
              _num(row["camera_stored"]), _num(row["camera_dead"]),
              _num(row["camera_missing"]), _num(row["events_acked"]),
              _num(row["events_stored"]), _num(row["events_dead"]),
              _num(row["events_missing"]), _num(row["dead_letters"]),
              _num(row["unacknowledged"]), _yes(row["accounted"])]
             for row in cameras["accounting"]])


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _measured(value: float | None) -> str:
    """Ratios with two decimals, rates and sizes whole."""
    return _num(value, ",.0f" if value is not None and abs(value) >= 100 else ".2f")


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


# --- files ------------------------------------------------------------------------------


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, sort_keys=False, default=str) + "\n")


def write_chart(path: Path, summary: dict[str, Any], title: str) -> None:
    """Six panels: backlog drains (two shapes), memory, latency, scale, recovery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    figure.suptitle(textwrap.fill(title, 170), fontsize=10)
    ceilings = summary["ceilings"]
    _throughput_panel(axes[0][0], summary, "single",
                      "Backlog drain (not a live rate): single-reading messages, QoS 1",
                      ceilings.get("mosquitto"), "Mosquitto C->C msg/s")
    _throughput_panel(axes[0][1], summary, "batch100",
                      "Backlog drain (not a live rate): messages of 100 readings",
                      ceilings.get("influxdb"), "InfluxDB points/s")
    _memory_panel(axes[0][2], summary)
    _latency_panel(axes[1][0], summary)
    _scale_panel(axes[1][1], summary)
    _recovery_panel(axes[1][2], summary)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


COLOURS = {"siaga": "#1f77b4", "node-red": "#d62728", "paho-batched": "#2ca02c",
           "paho-naive": "#7f7f7f"}


def _bars(axis: Any, names: list[str], values: list[float], fmt: Callable[[float], str]) -> None:
    bars = axis.bar(names, values, color=[COLOURS.get(n, "#9467bd") for n in names])
    for bar, value in zip(bars, values, strict=True):
        axis.annotate(fmt(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8)


def _throughput_panel(axis: Any, summary: dict[str, Any], shape: str, title: str,
                      ceiling: Result | None, ceiling_label: str) -> None:
    rows = {key.split("/")[0]: v for key, v in summary["backlog_drain"].items()
            if key.endswith("/" + shape) and v["rate"] is not None}
    names = sorted(rows, key=lambda n: -rows[n]["rate"])
    if not names:
        axis.set_axis_off()
        return
    _bars(axis, names, [rows[n]["rate"] for n in names], lambda v: f"{v:,.0f}")
    slopes = [rows[n]["rate_10_90"] for n in names]
    axis.scatter(names, slopes, marker="_", s=900, color="black", zorder=3,
                 label="10-90 % slope")
    top = max([*slopes, *(rows[n]["rate"] for n in names), (ceiling or {}).get("rate") or 0])
    axis.set_ylim(top=top * 1.2)
    axis.legend(fontsize=7, loc="upper right")
    if ceiling and ceiling.get("rate"):
        axis.axhline(ceiling["rate"], color="black", linestyle="--", linewidth=1)
        axis.annotate(f"{ceiling_label} {ceiling['rate']:,.0f}", (0, ceiling["rate"]),
                      xytext=(2, 2), textcoords="offset points", fontsize=8)
    axis.set_title(title, fontsize=10)
    backlog = next(iter(rows.values()))["planned"]
    axis.set_xlabel(f"a backlog of {backlog:,.0f} readings queued in Mosquitto, then drained",
                    fontsize=8)
    axis.set_ylabel("readings/s drained into InfluxDB")


def _memory_panel(axis: Any, summary: dict[str, Any]) -> None:
    """Per system: RSS at the live rate (median, peak) beside the backlog drain's peak."""
    lives = {name: v for name, v in summary["live"].items() if v["median_rss_mb"] is not None}
    drains = {key.split("/")[0]: v for key, v in summary["backlog_drain"].items()
              if key.endswith("/single") and v["peak_rss_mb"] is not None}
    names = sorted(set(lives) | set(drains))
    if not names:
        axis.set_axis_off()
        return
    series: list[tuple[str, str, dict[str, Result], str]] = [
        ("live: median RSS", "#1f77b4", lives, "median_rss_mb"),
        ("live: peak RSS", "#aec7e8", lives, "peak_rss_mb"),
        ("backlog drain: peak RSS", "#d62728", drains, "peak_rss_mb")]
    width = 0.8 / len(series)
    for index, (label, colour, rows, key) in enumerate(series):
        xs = [position + (index - 1) * width for position in range(len(names))]
        heights = [float((rows.get(name) or {}).get(key) or 0.0) for name in names]
        bars = axis.bar(xs, heights, width=width, color=colour, label=label)
        for bar, height in zip(bars, heights, strict=True):
            if height:
                axis.annotate(f"{height:.0f}", (bar.get_x() + bar.get_width() / 2, height),
                              ha="center", va="bottom", fontsize=7)
    behind = [name for name in names if name in lives and not lives[name]["kept_up"]]
    axis.set_xticks(list(range(len(names))),
                    [f"{name}\n(fell behind)" if name in behind else name for name in names],
                    fontsize=8)
    rate = next(iter(lives.values()))["rate"] if lives else None
    axis.set_title("RSS at a live rate" + (f" of {rate:,.0f} readings/s" if rate else "")
                   + "\nvs peak RSS in a backlog drain (single readings)", fontsize=10)
    axis.set_ylabel("MB")
    axis.legend(fontsize=7)


def _latency_panel(axis: Any, summary: dict[str, Any]) -> None:
    latency = summary["latency"]
    labels, p50, p99 = [], [], []
    for what, target in (("alert", 50), ("storage", 250)):
        if what in latency and latency[what]["p99_ms"] is not None:
            labels.append(f"{what}\n@{latency[what]['background_rate']:,.0f}/s "
                          f"(target p99 {target})")
            p50.append(latency[what]["p50_ms"])
            p99.append(latency[what]["p99_ms"])
    if not labels:
        axis.set_axis_off()
        return
    positions = range(len(labels))
    axis.bar([p - 0.2 for p in positions], p50, width=0.4, label="p50")
    axis.bar([p + 0.2 for p in positions], p99, width=0.4, label="p99")
    axis.set_xticks(list(positions), labels, fontsize=8)
    axis.set_ylabel("ms, publish -> webhook / queryable")
    axis.set_title("Siaga latency under background load", fontsize=10)
    axis.legend(fontsize=8)


def _scale_panel(axis: Any, summary: dict[str, Any]) -> None:
    scale = sorted(summary["scale"].items(), key=lambda kv: int(kv[0]))
    if not scale:
        axis.set_axis_off()
        return
    devices = [int(k) for k, _ in scale]
    axis.plot(devices, [v["peak_rss_mb"] for _, v in scale], "o-", color="#1f77b4",
              label="peak RSS MB")
    axis.plot(devices, [v["ready_rss_mb"] for _, v in scale], "s--", color="#17becf",
              label="RSS when ready MB")
    axis.axhline(100, color="black", linestyle=":", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlabel("devices")
    axis.set_ylabel("MB")
    twin = axis.twinx()
    twin.plot(devices, [v["cpu_us_per_reading"] for _, v in scale], "^-", color="#ff7f0e",
              label="CPU us/reading")
    twin.set_ylabel("CPU us per reading")
    axis.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    axis.set_title("Siaga: memory and CPU per reading vs devices", fontsize=10)


def _recovery_panel(axis: Any, summary: dict[str, Any]) -> None:
    recovery = summary["recovery"]
    if not recovery:
        axis.set_axis_off()
        return
    _bars(axis, ["live rate", "catch-up rate"],
          [recovery["live_rate"], recovery["catch_up_rate"]], lambda v: f"{v:,.0f}/s")
    axis.set_title(f"InfluxDB down {recovery['outage_s']:g} s: spool drained in "
                   f"{recovery['drain_s']:.1f} s, {recovery['multiple']:.1f}x live", fontsize=10)
    axis.set_ylabel("readings/s")
