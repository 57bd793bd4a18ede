"""The console benchmark's pure parts: reading SSE, matching flips, summarising, the table.

The measurement itself (Siaga, 50 consoles, Chromium) runs in `python -m bench --only
console`, not here.
"""

from __future__ import annotations

from typing import Any

from bench import report
from bench.console import console_figures, steady_health
from bench.consoleclients import Event, SseParser, page_latencies
from bench.plan import FULL, QUICK


def test_sse_events_are_whole_whatever_the_chunks() -> None:
    stream = (b"retry: 1000\n\n"
              b"id: e1-1\nevent: devices\ndata: [{\"id\": \"a\", \"status\": \"ok\"}]\n\n"
              b": a comment\n\n"
              b"event: hb\ndata: {}\n\n"
              b"id: e1-2\ndata: line one\ndata: line two\n\n")
    whole = SseParser().feed(stream)
    parser = SseParser()
    split = [event for i in range(0, len(stream), 7) for event in parser.feed(stream[i:i + 7])]
    assert split == whole == [
        Event("devices", '[{"id": "a", "status": "ok"}]', "e1-1"),
        Event("hb", "{}", "e1-1"),  # an id stays until another is sent, as in EventSource
        Event("message", "line one\nline two", "e1-2"),
    ]


def test_an_event_is_not_dispatched_before_its_blank_line() -> None:
    parser = SseParser()
    assert parser.feed(b"event: alert\ndata: {}\n") == []
    assert parser.feed(b"\n") == [Event("alert", "{}", None)]


def test_each_flip_takes_the_first_matching_change_after_it_even_past_the_next() -> None:
    published = [(1000.0, "siaga-1"), (1500.0, "not siaga-1"), (2000.0, "siaga-1"),
                 (2500.0, "not siaga-1")]
    stamps: list[list[Any]] = [[1100, "siaga-1"], [1400, "siaga-2"], [1700, "ok"],
                               [2600, "siaga-1"], [2700, "ok"]]
    # The third flip showed at 2600, after the fourth was published: late, not lost. The
    # fourth is matched to the change after that one.
    assert page_latencies(stamps, published) == [100.0, 200.0, 600.0, 200.0]


def test_a_flip_never_shown_has_no_latency() -> None:
    published = [(1000.0, "siaga-1"), (1500.0, "not siaga-1")]
    assert page_latencies([[1100, "siaga-1"]], published) == [100.0]


def test_healthz_percentiles_leave_out_the_warm_up_and_count_failures() -> None:
    answers = [(1.0, 900.0), (11.0, 2.0), (12.0, 4.0), (13.0, None), (14.0, 3.0)]
    figures = steady_health(answers, warm_up_s=10.0)
    assert figures["healthz_p50_ms"] == 3.0
    assert figures["healthz_max_ms"] == 4.0
    assert figures["healthz_failed"] == 1


def test_flips_fit_in_the_counted_span_of_both_plans() -> None:
    for plan in (FULL, QUICK):
        assert plan.console_flips * plan.console_flip_every_s <= plan.console_duration_s


def _row(run: int, consoles: int, stored_rate: float, cpu: float,
         update_p99_ms: float | None = None) -> dict[str, Any]:
    clients = None
    if consoles:
        clients = {"bytes_per_s": 50_000.0, "events_per_s": 250.0, "streaming": consoles,
                   "update": {"p50_ms": 120.0, "p99_ms": update_p99_ms, "lost": 1},
                   "page_update": {"p50_ms": 300.0, "p99_ms": 1800.0},
                   "page_load": {"median_ms": 2500.0, "heap_mb": 40.0},
                   "browser": {"open_page": True}}
    return {"run": run, "case": "consoles" if consoles else "none", "consoles": consoles,
            "devices": 10_000, "rate": 10_000.0, "fed_rate": 9_990.0, "stored_rate": stored_rate,
            "received_rate": stored_rate, "lag_s": 0.5, "kept_up": True,
            "cpu_percent": cpu, "median_rss_mb": 90.0,
            "peak_rss_mb": 95.0, "warm_up_s": 10.0, "duration_s": 60.0,
            "healthz_p50_ms": 2.0, "healthz_p99_ms": 9.0, "client_cpu_percent": None,
            **console_figures(clients)}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in (
        "mosquitto", "influxdb", "simulator", "backlog_drain", "live", "latency", "scale",
        "recovery", "reports_intake", "reports_stats", "reports_year")}
    return report.summarise(results | {"console": rows})


def test_the_ratio_is_taken_within_each_run_then_its_median() -> None:
    rows = [_row(1, 0, 10_000.0, 50.0), _row(1, 50, 9_000.0, 60.0, 300.0),
            _row(2, 50, 9_900.0, 70.0, 400.0), _row(2, 0, 10_000.0, 50.0),
            _row(3, 0, 8_000.0, 50.0), _row(3, 50, 8_000.0, 55.0, 350.0)]
    console = _summary(rows)["console"]
    assert console["ratios"]["stored_rate"] == 0.99  # runs: 0.90, 0.99, 1.00
    assert console["ratios"]["cpu_percent"] == 1.2  # runs: 1.2, 1.4, 1.1
    assert console["cases"]["consoles"]["update_p99_ms"] == 350.0
    assert console["cases"]["consoles"]["update_lost"] == 3
    assert console["cases"]["none"]["events_per_s"] is None


def test_the_issues_targets_judge_the_console() -> None:
    summary = _summary([_row(1, 0, 10_000.0, 50.0), _row(1, 50, 9_000.0, 60.0, 600.0)])
    goals = {g["target"]: g for g in report.targets(summary) if g["issue"] == 15}
    assert goals["console: stored readings/s with the consoles / without"]["met"] is False
    assert goals["console: update p99, publish -> SSE event (ms)"]["met"] is False
    assert goals["console: update p99, publish -> the page's row (ms)"]["met"] is True
    page = goals["console: page load with 10,000 devices, median (ms)"]
    assert (page["measured"], page["met"]) == (2500.0, None)


def test_the_table_shows_both_cases_the_ratios_and_the_updates() -> None:
    summary = _summary([_row(1, 0, 10_000.0, 50.0), _row(1, 50, 9_800.0, 55.0, 300.0)])
    text = report.table(summary, report.targets(summary), "header")
    assert "Console (issue 15): Siaga with 10,000 devices at 10,000 readings/s" in text
    assert "stored_rate consoles/none" in text and "0.980" in text
    assert "received_rate consoles/none" in text
    assert "Targets (issue 15)" in text
    assert "2,500" in text  # the page load


def test_a_run_without_the_console_scenario_has_no_console_section() -> None:
    summary = _summary([])
    assert summary["console"] == {}
    assert "Console" not in report.table(summary, report.targets(summary), "header")
