"""InfluxDB down under load: the spool absorbs the stream within its budget, then drains."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.faults.conftest import Figures
from tests.faults.harness import (
    LONG,
    ThreadedReceiver,
    fault_settings,
    restart,
    rules_file,
    wait_all_stored,
)
from tests.polling import wait_until

OUTAGE_S = 180.0 if LONG else 10.0
RATE = 500.0  # readings/s
FULL_RATE = 1000.0  # readings/s: fills the smallest spool (1 MiB) in seconds
FULL_HELD_S = 20.0 if LONG else 4.0  # how long the full spool withholds acks
SMALLEST_SPOOL = 1 << 20  # spool.max_bytes may not be lower


def test_an_influxdb_outage_is_absorbed_by_the_spool_and_drained_without_loss(
    mosquitto: Mosquitto, tmp_path: Path, rigs: Any, figures: Figures,
) -> None:
    with InfluxDB1(tmp_path / "influx") as influx:
        settings, database = fault_settings(mosquitto, influx, tmp_path / "data",
                                            spool_bytes=256 << 20)
        rig = rigs(mosquitto, settings, RATE)
        service = rig.service
        wait_until(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
        influx.stop()
        down_at, sent_at_down = time.monotonic(), rig.load.sent
        time.sleep(OUTAGE_S)  # the fault's duration: the spool must take the stream meanwhile
        sent_in_outage = rig.load.sent - sent_at_down
        spooled = service.metric("siaga_readings_spooled_total")
        spool_bytes = service.metric("siaga_spool_bytes")
        restart(influx)
        back_at = time.monotonic()
        written_at_back = service.metric("siaga_readings_written_total")
        recovery_s = wait_until(lambda: service.metric("siaga_readings_written_total")
                                > written_at_back, 60, "first write after the outage")
        progress_at = time.monotonic()
        written_at_progress = service.metric("siaga_readings_written_total")
        wait_until(lambda: service.metric("siaga_spool_segments") == 0, 600, "spool drained", 0.05)
        drained_at = time.monotonic()
        drain_written = service.metric("siaga_readings_written_total") - written_at_progress
        published = rig.load.finish()
        wait_until(lambda: rig.publisher.acked >= published, 60, "broker acknowledged everything")
        count = wait_all_stored(influx, database, rig.load.published, 120)
        drain_s = drained_at - progress_at
        drain_rate = drain_written / max(drain_s, 1e-9)
        figures.record(outage_s=round(back_at - down_at, 1), rate=round(rig.load.achieved_rate),
                       spooled_readings=int(spooled), spool_bytes_at_peak=int(spool_bytes),
                       first_write_after_s=round(recovery_s, 1),
                       drain_s=round(drain_s, 1), drain_rate=round(drain_rate),
                       drain_multiple_of_live=round(drain_rate / rig.load.achieved_rate, 1),
                       **count.as_dict())
    # The drain's speed (drain_rate, drain_multiple_of_live) is a figure for the benchmark,
    # not an assertion: on a busy machine it says nothing about correctness.
    assert sent_in_outage > 0 and spooled > 0 and spool_bytes > 0  # the spool took the stream
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    assert count.duplicates == 0


def storage_pages(webhook: ThreadedReceiver) -> list[str]:
    """The status of each StorageUnavailable notification the receiver took, in order."""
    seen: set[str] = set()
    pages = []
    for request in webhook.delivered():
        alert = request.json["alerts"][0]
        if alert["labels"]["alertname"] == "StorageUnavailable" and request.delivery not in seen:
            seen.add(request.delivery)
            pages.append(alert["status"])
    return pages


def test_a_full_spool_withholds_acks_says_why_and_loses_nothing_once_influxdb_returns(
    mosquitto: Mosquitto, tmp_path: Path, rigs: Any, webhook: ThreadedReceiver,
    figures: Figures,
) -> None:
    rules = rules_file(tmp_path / "rules.yaml", webhook.url)
    with InfluxDB1(tmp_path / "influx") as influx:
        settings, database = fault_settings(mosquitto, influx, tmp_path / "data", rules=rules,
                                            spool_bytes=SMALLEST_SPOOL)
        rig = rigs(mosquitto, settings, FULL_RATE)
        service = rig.service
        wait_until(lambda: service.metric("siaga_readings_written_total") > 0, 20, "first write")
        influx.stop()
        down_at = time.monotonic()
        full_s = wait_until(lambda: service.get("/readyz")[0] == 503, 60, "readyz says not ready")
        readyz = service.get("/readyz")[1]
        wait_until(lambda: "cannot make readings durable" in service.log_text(), 30,
                   "the service says it cannot store")
        wait_until(lambda: "cannot make readings durable" in service.get("/readyz")[1], 10,
                   "readyz says readings cannot be made durable")
        readyz_refusing = service.get("/readyz")[1]
        wait_until(lambda: storage_pages(webhook) == ["firing"], 30, "StorageUnavailable paged")
        acked_when_full = service.metric("siaga_mqtt_messages_acked_total")
        time.sleep(FULL_HELD_S)  # the fault's duration: acks must stay withheld throughout
        acked_after = service.metric("siaga_mqtt_messages_acked_total")
        refused = service.metric("siaga_storage_unavailable_total", cause="spool-full")
        unavailable = service.metric("siaga_storage_unavailable")
        withheld = rig.load.sent - acked_after
        refusals = service.log_text().count("cannot make readings durable")
        restart(influx)
        back_at = time.monotonic()
        recovery_s = wait_until(lambda: service.get("/readyz")[0] == 200, 120, "ready again")
        wait_until(lambda: storage_pages(webhook) == ["firing", "resolved"], 60,
                   "StorageUnavailable resolved")
        published = rig.load.finish()
        wait_until(lambda: rig.publisher.acked >= published, 60, "broker acknowledged everything")
        count = wait_all_stored(influx, database, rig.load.published, 180)
        unavailable_after = service.metric("siaga_storage_unavailable")
        figures.record(rate=round(rig.load.achieved_rate), spool_budget=SMALLEST_SPOOL,
                       spool_full_after_s=round(full_s, 1), readyz=readyz,
                       readyz_refusing=readyz_refusing,
                       acks_withheld_at_peak=withheld, storage_refusals_logged=refusals,
                       storage_refusals_counted=int(refused),
                       outage_s=round(back_at - down_at, 1),
                       ready_again_after_s=round(recovery_s, 1),
                       **count.as_dict())
    assert "spool nearly full" in readyz
    assert "spool full" in readyz_refusing
    assert refused > 0 and unavailable == 1 and unavailable_after == 0
    assert acked_after == acked_when_full  # nothing acknowledged while nothing is durable
    assert withheld > 0
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    assert count.duplicates == 0
