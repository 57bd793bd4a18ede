"""The cores benchmark's parts that need no servers: core counts, setups, process trees, the report.

The measurement itself (every system confined to 1, 2 and all cores, RabbitMQ, PostgreSQL)
runs in `python -m bench --only cores`, not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from bench import cores_chart, report
from bench.cores import Setup, children, core_counts, cpu_list, descendants, setups, spare_cpus
from tests.polling import wait_until


def test_core_counts_are_one_two_and_all_without_repeats() -> None:
    assert core_counts(1) == [1]
    assert core_counts(2) == [1, 2]
    assert core_counts(3) == [1, 2, 3]
    assert core_counts(16) == [1, 2, 16]
    assert core_counts(0) == [1]  # os.cpu_count() unknown: one core at least


def test_cpu_lists_name_the_first_cores() -> None:
    assert [cpu_list(n) for n in (1, 2, 8)] == ["0", "0-1", "0-7"]


def test_the_live_load_gets_the_cores_the_setup_leaves() -> None:
    assert spare_cpus(1, total=2) == "1"
    assert spare_cpus(1, total=8) == "1-7"
    assert spare_cpus(2, total=8) == "2-7"
    assert spare_cpus(2, total=2) is None  # all of them: the load runs anywhere
    assert spare_cpus(8, total=8) is None


def test_siaga_on_mqtt_is_one_process_at_every_count_and_the_others_one_per_core() -> None:
    chosen = setups(["siaga", "node-red", "paho-batched", "paho-naive"], [1, 2])
    assert chosen == [Setup("siaga", 1), Setup("siaga", 2), Setup("siaga-amqp", 1),
                      Setup("siaga-amqp", 2), Setup("node-red", 1), Setup("node-red", 2),
                      Setup("paho-batched", 1), Setup("paho-batched", 2)]  # no naive script
    assert [s.processes for s in chosen] == [1, 1, 1, 2, 1, 2, 1, 2]
    assert [s.amqp for s in chosen] == [False, False, True, True, False, False, False, False]
    # Node-RED not installed: the others still run.
    assert setups(["siaga", "paho-batched"], [1]) == [
        Setup("siaga", 1), Setup("siaga-amqp", 1), Setup("paho-batched", 1)]


def test_descendants_are_found_through_parent_ids() -> None:
    assert descendants(1, {1: [5, 7], 5: [9], 8: [10]}) == [1, 7, 5, 9]
    # And from this machine's /proc: a child of a child of this process.
    with subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run("
                           "[sys.executable, '-c', 'import sys; sys.stdin.read()'])"],
                          stdin=subprocess.PIPE) as process:
        try:
            wait_until(lambda: len(descendants(process.pid, children())) == 2, 10,
                       "the grandchild started")
            assert os.getpid() in {pid for pid, kids in children().items()
                                   if process.pid in kids}
        finally:
            process.kill()


def _drain(system: str, cores: int, shape: str, rate: float, run: int = 1) -> dict[str, Any]:
    return {"run": run, "kind": "drain", "system": system, "cores": cores,
            "processes": 1 if system == "siaga" else cores, "shape": shape, "cpu_count": 2,
            "rate": rate, "rate_10_90": rate, "cpu_percent": 90.0, "peak_rss_mb": 100.0,
            "first_landed_s": 1.0, "planned": 1000, "acknowledged": 1000, "landed": 1000,
            "complete": True}


def _live(system: str, cores: int, shape: str, rss: float) -> dict[str, Any]:
    return {"run": 1, "kind": "live", "system": system, "cores": cores,
            "processes": cores, "shape": shape, "cpu_count": 2, "rate": 10_000.0,
            "fed_rate": 10_000.0, "stored_rate": 9_990.0, "lag_s": 0.5, "median_rss_mb": rss,
            "peak_rss_mb": rss + 5, "cpu_percent": 30.0, "broker_median_rss_mb": None,
            "kept_up": True, "duration_s": 20.0, "warm_up_s": 5.0}


def _latency(what: str, p99: float) -> dict[str, Any]:
    return {"run": 1, "kind": "latency", "what": what, "system": "siaga", "cores": 1,
            "processes": 1, "shape": "batch100", "cpu_count": 2, "p50_ms": p99 / 2,
            "p99_ms": p99, "max_ms": p99 + 1, "mean_ms": p99 / 2, "background_rate": 49_000.0,
            "asked_rate": 50_000.0, "drain_rate": 100_000.0, "share": 0.5, "lost": 0,
            "samples": 20}


ROWS = [
    _drain("siaga-amqp", 2, "batch100", 180_000.0), _drain("siaga-amqp", 1, "batch100", 90_000),
    _drain("siaga-amqp", 1, "batch100", 110_000.0, run=2),  # two runs: their median
    _drain("node-red", 1, "single", 30_000.0), _drain("node-red", 2, "single", 50_000.0),
    _drain("siaga", 1, "batch100", 100_000.0),
    _live("node-red", 2, "single", 300.0), _live("siaga", 1, "batch100", 80.0),
    _live("siaga", 1, "single", 75.0),
    _latency("alert", 40.0), _latency("storage", 900.0),
]


def test_the_chart_draws_a_line_per_system_in_order_of_cores() -> None:
    summary = cores_chart.summarise(ROWS)
    assert summary["counts"] == [1, 2]
    assert summary["drain"]["siaga-amqp/1/batch100"]["rate"] == 100_000.0
    assert summary["drain"]["siaga-amqp/1/batch100"]["runs"] == 2
    assert cores_chart.throughput_lines(summary, "batch100") == {
        "siaga": [(1, 100_000.0)], "siaga-amqp": [(1, 100_000.0), (2, 180_000.0)]}
    assert cores_chart.throughput_lines(summary, "single") == {
        "node-red": [(1, 30_000.0), (2, 50_000.0)]}


def test_the_memory_bars_hold_each_setup_with_both_shapes() -> None:
    bars = cores_chart.memory_bars(cores_chart.summarise(ROWS))
    assert bars == [("siaga", 1, {"single": (75.0, True), "batch100": (80.0, True)}),
                    ("node-red", 2, {"single": (300.0, True), "batch100": None})]


def test_issue_18_alert_target_is_checked_and_storage_reported() -> None:
    summary = {"cores": cores_chart.summarise(ROWS)}
    alert, storage = cores_chart.targets(summary["cores"])
    assert (alert["issue"], alert["measured"], alert["met"]) == (18, 40.0, True)
    assert (storage["measured"], storage["met"]) == (900.0, None)
    slow = cores_chart.summarise([*ROWS[:-2], _latency("alert", 60.0)])
    assert cores_chart.targets(slow)[0]["met"] is False
    assert [t["measured"] for t in cores_chart.targets({})] == [None, None]


def test_the_table_shows_the_setups_and_the_latency() -> None:
    summary = report.summarise({name: [] for name in (
        "mosquitto", "influxdb", "simulator", "backlog_drain", "live", "latency", "scale",
        "recovery", "reports_intake", "reports_stats", "reports_year", "console", "cameras")}
        | {"cores": ROWS})
    text = report.table(summary, report.targets(summary), "header")
    assert "Cores (issue 18)" in text
    assert "siaga-amqp  " in text and "180,000" in text
    assert "Targets (issue 18)" in text and "alert p99 at 49,000 readings/s" in text
