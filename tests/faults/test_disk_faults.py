"""The service's disk full, or its SQLite files locked: a clear error, no loss, no corruption.

"Disk full" is the service's own file size limit (RLIMIT_FSIZE), lowered and lifted while it
runs (`prlimit`, which needs no root for a process of the same user): its writes then fail
with EFBIG through the real OS call path, as they fail with ENOSPC on a full disk, and the
service takes both for what they are, a disk that cannot take the spool. A full tmpfs would
need root to mount; the limit runs anywhere, CI included.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import Settings
from tests.faults.conftest import Figures
from tests.faults.harness import (
    LONG,
    MANGGARAI_CYCLE,
    Gauge,
    Rig,
    ServiceProcess,
    ThreadedReceiver,
    fault_settings,
    restart,
    rules_file,
    started_rig,
    wait_all_stored,
)
from tests.polling import wait_until

RATE = 1000.0  # readings/s
# The file size limit while the "disk" is full: a spooled batch of more than about eight
# readings is larger (a line is 120 bytes or more), and the load sends hundreds a second.
FILE_LIMIT = 1024
FULL_HELD_S = 30.0 if LONG else 4.0  # how long the disk stays full
LOCK_HELD_S = 30.0 if LONG else 8.0  # longer than SQLite's 5 s busy timeout in the service
SQLITE_FILES = ("deadletters.sqlite", "alerts.sqlite", "outbox.sqlite")
TOO_LARGE = os.strerror(27)  # EFBIG: "File too large"


def integrity(data_dir: Path) -> dict[str, str]:
    results = {}
    for name in SQLITE_FILES:
        with sqlite3.connect(data_dir / name) as db:
            results[name] = db.execute("PRAGMA integrity_check").fetchone()[0]
    return results


class LimitedService(ServiceProcess):
    """The service process, whose file size limit the test lowers and lifts while it runs.

    Its output goes through a pipe that a thread of the test copies to the log: the limit
    holds for every file the service writes, and a log file would be one of them, silencing
    the very error the test waits for. It is started with SIGXFSZ ignored (inherited from
    the test's own Python, which ignores it: `restore_signals=False`), so a write past the
    limit fails with EFBIG instead of killing the process.
    """

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "siaga", "run", "-c", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, restore_signals=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert process.stdout is not None
        threading.Thread(target=self._copy_output, args=(process.stdout,), daemon=True,
                         name="service-log").start()
        return process

    def _copy_output(self, output: IO[bytes]) -> None:
        with self.log.open("ab") as log:
            for line in output:
                log.write(line)
                log.flush()

    def limit_file_size(self, limit: int | None) -> None:
        """Lower the soft limit to `limit` bytes, or lift it (None); the hard one stays."""
        assert self.process is not None
        _, hard = resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE)
        soft = resource.RLIM_INFINITY if limit is None else limit
        resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE, (soft, hard))

    def ignores(self, signum: int) -> bool:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
        return bool(int(mask, 16) & (1 << (signum - 1)))


@pytest.fixture
def limited_rigs(tmp_path: Path) -> Iterator[Callable[[Mosquitto, Settings, float], Rig]]:
    """Like the `rigs` fixture, with a `LimitedService`; all stopped at the end."""
    made: list[Rig] = []

    def start(broker: Mosquitto, settings: Settings, rate: float) -> Rig:
        workdir = tmp_path / f"rig{len(made)}"
        workdir.mkdir()
        made.append(started_rig(broker, LimitedService(settings, workdir), rate))
        return made[-1]

    yield start
    for rig in made:
        rig.close()


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
    mosquitto: Mosquitto, tmp_path: Path, limited_rigs: Any, figures: Figures,
) -> None:
    with InfluxDB1(tmp_path / "influx") as influx:
        # A spool budget far above the limit: the disk, not the budget, runs out.
        settings, database = fault_settings(mosquitto, influx, tmp_path / "data",
                                            spool_bytes=256 << 20)
        rig = limited_rigs(mosquitto, settings, RATE)
        service, prefix = rig.service, settings.mqtt.topic_prefix
        assert isinstance(service, LimitedService)
        assert service.ignores(signal.SIGXFSZ)  # else the limit kills it: not what is tested
        wait_until(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
        service.limit_file_size(FILE_LIMIT)
        influx.stop()
        full_s = wait_until(lambda: TOO_LARGE in service.log_text(), 60,
                            "the service says the disk is full")
        garbage(rig, prefix, 20)
        acked_when_full = service.metric("siaga_mqtt_messages_acked_total")
        time.sleep(FULL_HELD_S)  # the fault's duration: acks must stay withheld throughout
        acked_after = service.metric("siaga_mqtt_messages_acked_total")
        readyz = service.get("/readyz") if service.running else (0, "(exited)")
        disk_errors = service.metric("siaga_storage_unavailable_total", cause="disk-error")
        unavailable = service.metric("siaga_storage_unavailable")
        exit_code = restart_if_exited(service)
        # Space returns while InfluxDB is still down: the spool must take the readings, the
        # service become ready and acknowledge again, in the same process.
        service.limit_file_size(None)
        back_at = time.monotonic()
        wait_until(lambda: service.get("/readyz")[0] == 200, 120, "ready again")
        ready_again_s = time.monotonic() - back_at
        wait_until(lambda: service.metric("siaga_mqtt_messages_acked_total") > acked_after, 60,
                   "acks again, into the spool")
        unavailable_after = service.metric("siaga_storage_unavailable")
        restart(influx)  # the spool drains
        published = rig.load.finish()
        wait_until(lambda: rig.publisher.acked >= published + 20, 60,
                   "broker acknowledged everything")
        count = wait_all_stored(influx, database, rig.load.published, 180)
        wait_until(lambda: service.metric("siaga_dead_letters_total") >= 20, 60,
                   "dead letters kept")
        assert service.terminate() == 0
        log = service.log_text()
        errors = [line for line in log.splitlines() if TOO_LARGE in line]
        checks = integrity(tmp_path / "data")
        figures.record(rate=round(rig.load.achieved_rate), file_limit=FILE_LIMIT,
                       disk_full_after_s=round(full_s, 1), readyz_while_full=readyz,
                       disk_errors_counted=int(disk_errors),
                       ready_again_after_s=round(ready_again_s, 1),
                       alert_not_recorded=log.count("could not record the StorageUnavailable"),
                       exited_while_full=exit_code, first_error=errors[0][:300],
                       integrity=checks, **count.as_dict())
    assert readyz[0] == 503, readyz
    assert "cannot make readings durable" in readyz[1]
    assert f"spool disk error: [Errno 27] {TOO_LARGE}" in readyz[1]
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
    wait_until(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
    garbage(rig, prefix, 5)
    wait_until(lambda: service.metric("siaga_dead_letters_total") >= 5, 20, "first dead letters")
    locked_at = time.monotonic()
    garbage(rig, prefix, 10)
    hold_exclusive_lock(tmp_path / "data" / "deadletters.sqlite", LOCK_HELD_S)
    exit_code = restart_if_exited(service)
    published = rig.load.finish()
    wait_until(lambda: rig.publisher.acked >= published + 15, 60, "broker acknowledged everything")
    # A ceiling, not a timing: the restarted service first replays the broker's backlog.
    count = wait_all_stored(influxdb1, database, rig.load.published, 120)
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    dead_letters = wait_until(lambda: service.metric("siaga_dead_letters_total") >= 10, 20,
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
    wait_until(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
    gauge = Gauge(rig.publisher, settings.mqtt.topic_prefix, "manggarai", MANGGARAI_CYCLE, 0.5)
    gauge.start()
    hold_exclusive_lock(tmp_path / "data" / "alerts.sqlite", LOCK_HELD_S)
    exit_code = restart_if_exited(service)
    cycles = gauge.finish()
    published = rig.load.finish()
    wait_until(lambda: rig.publisher.acked >= published, 60, "broker acknowledged everything")
    count = wait_all_stored(influxdb1, database, rig.load.published, 120)
    wait_until(lambda: len(webhook.news()) >= 6 * cycles, 60, "every alert change paged")
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
