"""The camera benchmark's pure parts: reading the load mode's summary, accounting for every
camera message, summarising the cases, the table and issue 16's targets.

The measurement itself (Siaga, the load mode with 5,000 cameras) runs in `python -m bench
--only cameras`, not here.
"""

from __future__ import annotations

from typing import Any

from bench import report
from bench.cameras import DeadLetters, Expected, Stored, accounting, sent_by_kind
from bench.plan import FULL, QUICK, SCENARIOS
from simulators.summary import EVENT_KEY, Count, Summary


def test_the_rows_by_kind_are_read_from_the_summary_as_the_load_mode_prints_it() -> None:
    sent = {("water-level", None): Count(1_667, 1_667), ("camera", None): Count(30_000, 30_000),
            EVENT_KEY: Count(4_000, 0)}
    summary = Summary(sent=sent, acknowledged=sent, status_messages=6_033, rejected=0,
                      elapsed_s=60.0)
    assert sent_by_kind("progress...\n" + str(summary) + "\n") == {
        "water-level": (1_667, 1_667), "camera": (30_000, 30_000),
        "camera-events": (4_000, 0)}


def test_only_the_last_summary_printed_counts() -> None:
    first = Summary(sent={("camera", None): Count(5, 5)}, acknowledged={}, status_messages=0,
                    rejected=0, elapsed_s=1.0)
    last = Summary(sent={("camera", None): Count(9, 9)}, acknowledged={}, status_messages=0,
                   rejected=0, elapsed_s=2.0)
    assert sent_by_kind(f"{first}\n{last}") == {"camera": (9, 9)}


def test_every_message_stored_or_dead_lettered_is_accounted_for() -> None:
    figures = accounting(Expected(100_000, 30_000, 4_000), Stored(100_000, 29_998, 3_999),
                         DeadLetters({"invalid": 3}, camera=2, events=1, other=0),
                         unacknowledged=0)
    assert figures["accounted"] is True
    assert (figures["camera_missing"], figures["events_missing"]) == (0, 0)


def test_a_camera_point_missing_with_every_message_acknowledged_is_not_accounted_for() -> None:
    figures = accounting(Expected(100_000, 30_000, 4_000), Stored(100_000, 29_999, 4_000),
                         DeadLetters({}, 0, 0, 0), unacknowledged=0)
    assert figures["accounted"] is False
    assert figures["camera_missing"] == 1


def test_unacknowledged_messages_and_dead_letters_beyond_the_page_bound_what_may_be_missing(
        ) -> None:
    # 2 messages the broker never acknowledged, 1 dead letter the API's page did not list.
    dead = DeadLetters({"invalid": 1_001}, camera=1_000, events=0, other=0)
    assert dead.unlisted == 1
    within = accounting(Expected(0, 30_000, 4_000), Stored(0, 28_998, 3_999), dead,
                        unacknowledged=2)
    assert within["accounted"] is True
    beyond = accounting(Expected(0, 30_000, 4_000), Stored(0, 28_997, 3_999), dead,
                        unacknowledged=2)
    assert beyond["accounted"] is False


def test_more_stored_than_the_broker_took_is_not_accounted_for() -> None:
    figures = accounting(Expected(0, 30_000, 4_000), Stored(0, 30_001, 4_000),
                         DeadLetters({}, 0, 0, 0), unacknowledged=0)
    assert figures["accounted"] is False


def test_the_plans_run_five_thousand_cameras_for_ten_minutes_or_one() -> None:
    assert "cameras" in SCENARIOS
    assert (FULL.cameras_count, FULL.cameras_duration_s) == (5000, 600.0)
    assert (QUICK.cameras_count, QUICK.cameras_duration_s) == (5000, 60.0)


def _row(run: int, cameras: int, rss: float, alert_p99_ms: float, *,
         missing: int = 0) -> dict[str, Any]:
    counts = accounting(Expected(300_000, 30_000 if cameras else 0, 4_000 if cameras else 0),
                        Stored(300_000, (30_000 - missing) if cameras else 0,
                               4_000 if cameras else 0),
                        DeadLetters({}, 0, 0, 0), unacknowledged=0)
    return {"run": run, "case": "cameras" if cameras else "none", "cameras": cameras,
            "devices": 1000, "rate": 5000.0, "duration_s": 600.0, "warm_up_s": 10.0,
            "fed_rate": 4_990.0, "stored_rate": 4_990.0, "lag_s": 0.1, "kept_up": True,
            "camera_rate": 500.0 if cameras else 0.0, "event_rate": 66.7 if cameras else 0.0,
            "median_rss_mb": rss, "peak_rss_mb": rss + 5, "cpu_percent": 25.0,
            "alert_p50_ms": 10.0, "alert_p99_ms": alert_p99_ms, "alert_max_ms": alert_p99_ms,
            "alert_samples": 590, "alert_lost": 0, "webhooks": 600, **counts}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in (
        "mosquitto", "influxdb", "simulator", "backlog_drain", "live", "latency", "scale",
        "recovery", "reports_intake", "reports_stats", "reports_year")}
    return report.summarise(results | {"cameras": rows})


def test_the_ratios_are_taken_within_each_run_then_their_median() -> None:
    rows = [_row(1, 0, 70.0, 30.0), _row(1, 5000, 105.0, 60.0),
            _row(2, 5000, 100.0, 40.0), _row(2, 0, 80.0, 20.0),
            _row(3, 0, 50.0, 30.0), _row(3, 5000, 100.0, 30.0)]
    cameras = _summary(rows)["cameras"]
    assert cameras["ratios"]["median_rss_mb"] == 1.5  # runs: 1.5, 1.25, 2.0
    assert cameras["ratios"]["alert_p99_ms"] == 2.0  # runs: 2.0, 2.0, 1.0
    assert cameras["ratios"]["median_rss_mb added"] == 35.0  # runs: 35, 20, 50
    assert cameras["cases"]["cameras"]["alert_p99_ms"] == 40.0
    assert cameras["accounted"] is True


def test_a_run_missing_a_camera_point_fails_issue_16s_target() -> None:
    summary = _summary([_row(1, 0, 70.0, 30.0), _row(1, 5000, 100.0, 60.0, missing=3)])
    goals = {g["target"]: g for g in report.targets(summary) if g["issue"] == 16}
    stored = goals["cameras: every message of 5,000 cameras stored or dead-lettered (missing)"]
    assert (stored["measured"], stored["met"]) == (3.0, False)
    p99 = goals["cameras: alert p99 with 5,000 cameras (ms)"]
    assert (p99["measured"], p99["met"]) == (60.0, None)


def test_the_table_shows_both_cases_the_ratios_and_each_runs_accounting() -> None:
    summary = _summary([_row(1, 0, 70.0, 30.0), _row(1, 5000, 105.0, 60.0)])
    text = report.table(summary, report.targets(summary), "header")
    assert ("Cameras (issue 16): the Jakarta catalog and 1,000 devices at 5,000 readings/s "
            "for 600 s") in text
    assert "median_rss_mb cameras/none" in text and "1.500" in text
    assert "1 / cameras" in text and "30,000" in text
    assert "Targets (issue 16)" in text


def test_a_run_without_the_cameras_scenario_has_no_cameras_section() -> None:
    summary = _summary([])
    assert summary["cameras"] == {}
    text = report.table(summary, report.targets(summary), "header")
    assert "Cameras" not in text and "issue 16" not in text
