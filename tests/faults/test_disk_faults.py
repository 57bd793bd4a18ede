"""The service's disk full, or its SQLite files locked: a clear error, no loss, no corruption."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from ingest.localservers import InfluxDB1, Mosquitto
from tests.faults.conftest import Figures
from tests.faults.harness import (
    LONG,
    MANGGARAI_CYCLE,
    Gauge,
    ServiceProcess,
    ThreadedReceiver,
    fault_settings,
    poll,
    restart,
    rules_file,
    wait_all_stored,
)

RATE = 1000.0  # readings/s
ROOM_LEFT = 256 << 10  # the free space left on the small disk: ~2 s of spooled readings
FULL_HELD_S = 30.0 if LONG else 4.0  # how long the disk stays full
LOCK_HELD_S = 30.0 if LONG else 8.0  # longer than SQLite's 5 s busy timeout in the service
SQLITE_FILES = ("deadletters.sqlite", "alerts.sqlite", "outbox.sqlite")


def integrity(data_dir: Path) -> dict[str, str]:
    results = {}
    for name in SQLITE_FILES:
        with sqlite3.connect(data_dir / name) as db:
            results[name] = db.execute("PRAGMA integrity_check").fetchone()[0]
    return results


def fill_leaving(disk: Path, room: int) -> None:
    """A filler file taking all but `room` bytes of the disk."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with (disk / "filler").open("wb") as filler:
        filler.write(b"\0" * max(0, free - room))


def restart_if_exited(service: ServiceProcess) -> int | None:
    """Like systemd's Restart=on-failure: the exit status, if the service had died."""
    if service.running:
        return None
    assert service.process is not None
    code = service.process.returncode
    service.start()
    return code


def garbage(rig: Any, prefix: str, count: int) -> None:
    """Messages that become dead letters: each needs a SQLite commit before its ack."""
    for index in range(count):
        rig.publisher.publish(f"{prefix}/water-level/manggarai/telemetry", b"{not json %d" % index)


def test_a_full_disk_withholds_acks_with_a_clear_error_and_loses_nothing_once_space_returns(
    small_disk: Path, mosquitto: Mosquitto, tmp_path: Path, rigs: Any, figures: Figures,
) -> None:
    with InfluxDB1(tmp_path / "influx") as influx:
        # A spool budget far above the disk: the disk, not the budget, runs out.
        settings, database = fault_settings(mosquitto, influx, small_disk, spool_bytes=256 << 20)
        rig = rigs(mosquitto, settings, RATE)
        service, prefix = rig.service, settings.mqtt.topic_prefix
        poll(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
        fill_leaving(small_disk, ROOM_LEFT)
        influx.stop()
        full_s = poll(lambda: "No space left on device" in service.log_text(), 60,
                      "the service says the disk is full")
        garbage(rig, prefix, 20)
        acked_when_full = service.metric("siaga_mqtt_messages_acked_total")
        time.sleep(FULL_HELD_S)  # the fault's duration: acks must stay withheld throughout
        acked_after = service.metric("siaga_mqtt_messages_acked_total")
        readyz = service.get("/readyz") if service.running else (0, "(exited)")
        disk_errors = service.metric("siaga_storage_unavailable_total", cause="disk-error")
        unavailable = service.metric("siaga_storage_unavailable")
        restart(influx)  # the spool drains, and the disk has room again
        back_at = time.monotonic()
        exit_code = restart_if_exited(service)
        poll(lambda: service.get("/readyz")[0] == 200, 120, "ready again")
        ready_again_s = time.monotonic() - back_at
        unavailable_after = service.metric("siaga_storage_unavailable")
        published = rig.load.finish()
        poll(lambda: rig.publisher.acked >= published + 20, 60, "broker acknowledged everything")
        count = wait_all_stored(influx, database, rig.load.published, 180)
        poll(lambda: service.metric("siaga_dead_letters_total") >= 20, 60, "dead letters kept")
        assert service.terminate() == 0
        log = service.log_text()
        errors = [line for line in log.splitlines() if "No space left on device" in line]
        checks = integrity(small_disk)
        figures.record(rate=round(rig.load.achieved_rate), disk_mib=4,
                       disk_full_after_s=round(full_s, 1), readyz_while_full=readyz,
                       disk_errors_counted=int(disk_errors),
                       ready_again_after_s=round(ready_again_s, 1),
                       alert_not_recorded=log.count("could not record the StorageUnavailable"),
                       exited_while_full=exit_code, first_error=errors[0][:300],
                       integrity=checks, **count.as_dict())
    assert readyz[0] == 503, readyz
    assert "cannot make readings durable" in readyz[1]
    assert "No space left on device" in readyz[1]
    assert disk_errors > 0 and unavailable == 1 and unavailable_after == 0
    assert exit_code is None  # a full disk is waited out, not a reason to exit
    assert acked_after == acked_when_full  # nothing acknowledged while nothing is durable
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    assert set(checks.values()) == {"ok"}


def hold_exclusive_lock(path: Path, seconds: float) -> None:
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)  # the fault's duration: the file stays locked meanwhile
        db.execute("ROLLBACK")


def test_a_locked_dead_letter_file_is_reported_and_costs_no_message_and_no_corruption(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, rigs: Any, figures: Figures,
) -> None:
    settings, database = fault_settings(mosquitto, influxdb1, tmp_path / "data")
    rig = rigs(mosquitto, settings, RATE / 2)
    service, prefix = rig.service, settings.mqtt.topic_prefix
    poll(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
    garbage(rig, prefix, 5)
    poll(lambda: service.metric("siaga_dead_letters_total") >= 5, 20, "first dead letters")
    locked_at = time.monotonic()
    garbage(rig, prefix, 10)
    hold_exclusive_lock(tmp_path / "data" / "deadletters.sqlite", LOCK_HELD_S)
    exit_code = restart_if_exited(service)
    published = rig.load.finish()
    poll(lambda: rig.publisher.acked >= published + 15, 60, "broker acknowledged everything")
    count = wait_all_stored(influxdb1, database, rig.load.published, 15)
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    dead_letters = poll(lambda: service.metric("siaga_dead_letters_total") >= 10, 20,
                        "dead letters kept after the lock")
    assert service.terminate() == 0
    log = service.log_text()
    checks = integrity(tmp_path / "data")
    figures.record(locked_s=LOCK_HELD_S, exited_while_locked=exit_code,
                   locked_errors_logged=log.count("database is locked"),
                   recovered_after_s=round(time.monotonic() - locked_at - dead_letters, 1),
                   integrity=checks, **count.as_dict())
    assert "database is locked" in log
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    assert set(checks.values()) == {"ok"}


def test_a_locked_alert_book_is_reported_and_the_alert_is_still_paged_once_without_corruption(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, rigs: Any,
    webhook: ThreadedReceiver, figures: Figures,
) -> None:
    rules = rules_file(tmp_path / "rules.yaml", webhook.url)
    settings, database = fault_settings(mosquitto, influxdb1, tmp_path / "data", rules=rules)
    rig = rigs(mosquitto, settings, RATE / 2)
    service = rig.service
    poll(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
    gauge = Gauge(rig.publisher, settings.mqtt.topic_prefix, "manggarai", MANGGARAI_CYCLE, 0.5)
    gauge.start()
    hold_exclusive_lock(tmp_path / "data" / "alerts.sqlite", LOCK_HELD_S)
    exit_code = restart_if_exited(service)
    cycles = gauge.finish()
    published = rig.load.finish()
    poll(lambda: rig.publisher.acked >= published, 60, "broker acknowledged everything")
    count = wait_all_stored(influxdb1, database, rig.load.published, 120)
    poll(lambda: len(webhook.news()) >= 6 * cycles, 60, "every alert change paged")
    assert service.terminate() == 0
    log = service.log_text()
    checks = integrity(tmp_path / "data")
    news = [(status, level) for _, status, level in webhook.news()]
    figures.record(locked_s=LOCK_HELD_S, exited_while_locked=exit_code,
                   locked_errors_logged=log.count("database is locked"), gauge_cycles=cycles,
                   alert_changes=len(news), integrity=checks, **count.as_dict())
    assert "database is locked" in log
    assert count.lost == 0
    assert len(news) == 6 * cycles
    assert set(checks.values()) == {"ok"}
