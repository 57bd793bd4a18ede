"""A soak run at a steady rate (long mode only): memory and spool stay flat."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.faults.conftest import Figures
from tests.faults.harness import LONG, fault_settings, wait_all_stored
from tests.polling import wait_until

SOAK_MIN = float(os.environ.get("SIAGA_SOAK_MINUTES", "30"))
RATE = 500.0  # readings/s, steady
SAMPLE_EVERY_S = 10.0
RSS_GROWTH_MAX = 1.25  # the last third's median RSS may exceed the second third's by 25 %
SPOOL_SEGMENTS_MAX = 2  # a healthy InfluxDB leaves the spool empty but for a blip


@pytest.mark.skipif(not LONG, reason="a soak takes 30 minutes or more: SIAGA_FAULTS=long")
def test_a_long_steady_run_keeps_memory_and_spool_flat(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, rigs: Any, figures: Figures,
) -> None:
    settings, database = fault_settings(mosquitto, influxdb1, tmp_path / "data")
    rig = rigs(mosquitto, settings, RATE)
    service = rig.service
    samples: list[tuple[int, float, int, int]] = []  # (s, RSS MiB, spool segments, bytes)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < SOAK_MIN * 60:
        samples.append((round(elapsed), round(service.rss_mib(), 1),
                        int(service.metric("siaga_spool_segments")),
                        int(service.metric("siaga_spool_bytes"))))
        time.sleep(SAMPLE_EVERY_S)  # the sampling period of the soak, not a wait for a result
    published = rig.load.finish()
    wait_until(lambda: rig.publisher.acked >= published, 60, "broker acknowledged everything")
    count = wait_all_stored(influxdb1, database, rig.load.published, 300)
    third = len(samples) // 3
    rss = [sample[1] for sample in samples]
    middle, last = statistics.median(rss[third:2 * third]), statistics.median(rss[2 * third:])
    figures.record(minutes=SOAK_MIN, rate=round(rig.load.achieved_rate), rss_mib_middle=middle,
                   rss_mib_last=last, spool_segments_max=max(s[2] for s in samples),
                   series=samples, **count.as_dict())
    assert last <= middle * RSS_GROWTH_MAX
    assert max(sample[2] for sample in samples) <= SPOOL_SEGMENTS_MAX
    assert count.lost == 0
