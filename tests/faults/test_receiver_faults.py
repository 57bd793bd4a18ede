"""The webhook receiver down, slow, answering 500 and 429: each notification once, in order."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from rules.delivery import DeliveryPolicy
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.faults.conftest import Figures
from tests.faults.harness import (
    CYCLE_NEWS,
    KARET_CYCLE,
    LONG,
    MANGGARAI_CYCLE,
    Gauge,
    ThreadedReceiver,
    fault_settings,
    rules_file,
    wait_all_stored,
)
from tests.polling import wait_until
from tests.receiver import Answer

RATE = 300.0  # readings/s of background load
GAUGE_EVERY_S = 0.2
DOWN_S = 30.0 if LONG else 2.0
TIMEOUT_S = 0.5  # the receiver's timeout_s in the rules file
SLOW = Answer(503, delay_s=2.0)  # answered long after the service gave up (recorded as 503)
# What the receiver does once back, attempt by attempt; then it answers 200.
TROUBLE = [SLOW, Answer(500), SLOW, Answer(429, {"Retry-After": "1"}), Answer(500),
           Answer(429, {"Retry-After": "1"})]
# After a long outage each failed attempt may wait out a whole (jittered) backoff cap.
TROUBLE_WITHIN_S = len(TROUBLE) * DeliveryPolicy().backoff_max_s


def test_a_receiver_down_slow_and_refusing_gets_every_notification_once_in_order(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, rigs: Any,
    webhook: ThreadedReceiver, figures: Figures,
) -> None:
    webhook.stop()  # down from the start: connection refused
    rules = rules_file(tmp_path / "rules.yaml", webhook.url, timeout_s=TIMEOUT_S)
    settings, database = fault_settings(mosquitto, influxdb1, tmp_path / "data", rules=rules)
    rig = rigs(mosquitto, settings, RATE)
    prefix = settings.mqtt.topic_prefix
    gauges = [Gauge(rig.publisher, prefix, device, cycle, GAUGE_EVERY_S)
              for device, cycle in (("manggarai", MANGGARAI_CYCLE), ("karet", KARET_CYCLE))]
    for gauge in gauges:
        gauge.start()
    time.sleep(DOWN_S)  # the fault's duration: the receiver refuses connections meanwhile
    webhook.receiver.script.extend(TROUBLE)
    webhook.start()
    cycles = [gauge.finish() for gauge in gauges]
    troubled_at = time.monotonic()
    wait_until(lambda: not webhook.receiver.script, TROUBLE_WITHIN_S,
               "the receiver's trouble played out")
    healthy_at = time.monotonic()
    expected = sum(cycles) * len(CYCLE_NEWS)
    wait_until(lambda: len(webhook.news()) >= expected, 120, "every notification delivered", 0.05)
    caught_up_s = time.monotonic() - healthy_at
    published = rig.load.finish()
    wait_until(lambda: rig.publisher.acked >= published, 60, "broker acknowledged everything")
    count = wait_all_stored(influxdb1, database, rig.load.published, 60)
    requests = webhook.receiver.requests
    delivered = Counter(request.delivery for request in webhook.delivered())
    by_alert: dict[str, list[tuple[str, str]]] = {}
    for fingerprint, status, level in webhook.news():
        by_alert.setdefault(fingerprint, []).append((status, level))
    figures.record(gauge_cycles=cycles, notifications=expected, attempts=len(requests),
                   refused_or_slow=sum(1 for r in requests if r.status >= 300),
                   trouble_s=round(healthy_at - troubled_at, 1),
                   all_delivered_after_healthy_s=round(caught_up_s, 1),
                   delivered_twice=sum(1 for n in delivered.values() if n > 1),
                   **count.as_dict())
    assert len(by_alert) == 2
    for news in by_alert.values():
        assert news == list(CYCLE_NEWS) * (len(news) // len(CYCLE_NEWS))
    assert sorted(len(news) // len(CYCLE_NEWS) for news in by_alert.values()) == sorted(cycles)
    assert set(delivered.values()) == {1}  # each delivery id answered 2xx once
    assert {r.delivery for r in requests} == set(delivered)  # none abandoned for a new id
    assert count.lost == 0
