"""SIGKILL of the service at random moments, repeatedly, under load and a gauge in flood."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.faults.conftest import Figures
from tests.faults.harness import (
    CYCLE_NEWS,
    LONG,
    MANGGARAI_CYCLE,
    Gauge,
    ThreadedReceiver,
    fault_settings,
    rules_file,
    wait_all_stored,
)
from tests.polling import wait_until

KILLS = 20 if LONG else 3
RATE = 500.0  # readings/s from the load devices
GAUGE_EVERY_S = 0.3  # the flooding gauge reports about three times a second
KILL_AFTER_S = (0.5, 4.0)  # a kill comes this long (uniform) after the service is ready


def test_repeated_sigkills_lose_no_reading_and_page_each_alert_change_exactly_once_as_news(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, rigs: Any,
    webhook: ThreadedReceiver, figures: Figures,
) -> None:
    seed = int(os.environ.get("SIAGA_FAULTS_SEED", time.time()))
    rng = random.Random(seed)
    settings, database = fault_settings(mosquitto, influxdb1, tmp_path / "data",
                                        rules=rules_file(tmp_path / "rules.yaml", webhook.url),
                                        batch_size=200)
    rig = rigs(mosquitto, settings, RATE)
    gauge = Gauge(rig.publisher, settings.mqtt.topic_prefix, "manggarai", MANGGARAI_CYCLE,
                  GAUGE_EVERY_S)
    gauge.start()
    restarts = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(*KILL_AFTER_S))  # the random moment of the next kill
        rig.service.kill()
        restarts.append(rig.service.start())
    cycles = gauge.finish()
    published = rig.load.finish()
    wait_until(lambda: rig.publisher.acked >= published + cycles * len(MANGGARAI_CYCLE), 60,
               "broker acknowledged every reading")
    count = wait_all_stored(influxdb1, database, rig.load.published, 120)
    expected_news = list(CYCLE_NEWS) * cycles
    wait_until(lambda: len(webhook.news()) >= len(expected_news), 90, "every alert change paged")
    exit_code = rig.service.terminate()
    news = webhook.news()
    attempts = Counter(request.delivery for request in webhook.delivered())
    figures.record(seed=seed, kills=KILLS, rate=round(rig.load.achieved_rate),
                   **count.as_dict(), restart_to_ready_s=[round(s, 2) for s in restarts],
                   gauge_cycles=cycles, alert_changes_expected=len(expected_news),
                   deliveries=len(news), delivered_more_than_once=sum(
                       1 for n in attempts.values() if n > 1))
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    assert count.duplicates == 0
    assert [(status, level) for _, status, level in news] == expected_news
    assert len({fingerprint for fingerprint, _, _ in news}) == 1
    assert exit_code == 0
