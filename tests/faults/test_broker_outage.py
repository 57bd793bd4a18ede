"""Mosquitto restarted and down for a while under load: everyone reconnects by themselves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from tests.faults.conftest import Figures
from tests.faults.harness import LONG, fault_settings, restart, wait_all_stored
from tests.polling import wait_until

DOWN_S = 60.0 if LONG else 5.0
RATE = 500.0  # readings/s


def test_a_broker_down_for_a_while_is_rejoined_by_devices_and_service_without_loss(
    influxdb1: InfluxDB1, tmp_path: Path, rigs: Any, figures: Figures,
) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        settings, database = fault_settings(broker, influxdb1, tmp_path / "data")
        rig = rigs(broker, settings, RATE)
        service = rig.service
        wait_until(lambda: service.metric("siaga_mqtt_messages_acked_total") > 500, 20, "acks")
        broker.stop()
        wait_until(lambda: service.get("/readyz")[0] == 503, 20,
                   "readyz notices the broker is gone")
        readyz = service.get("/readyz")[1]
        time.sleep(DOWN_S)  # the fault's duration: devices keep readings, service waits
        restart(broker)
        back_at = time.monotonic()
        publisher_s = wait_until(rig.publisher.client.is_connected, 60, "publisher reconnected",
                                 0.02)
        service_s = wait_until(lambda: service.get("/readyz")[0] == 200, 60,
                               "service resubscribed", 0.02) + publisher_s
        published = rig.load.finish()
        wait_until(lambda: rig.publisher.acked >= published, 60, "broker acknowledged everything")
        count = wait_all_stored(influxdb1, database, rig.load.published, 120)
        caught_up_s = time.monotonic() - back_at
        figures.record(down_s=DOWN_S, rate=round(rig.load.achieved_rate), readyz_while_down=readyz,
                       publisher_reconnected_after_s=round(publisher_s, 2),
                       service_ready_after_s=round(service_s, 2),
                       all_stored_after_s=round(caught_up_s, 1), **count.as_dict())
        assert service.running
    assert "not subscribed to MQTT" in readyz
    assert count.lost == 0, f"lost {count.lost}, e.g. {count.lost_examples}"
    assert count.duplicates == 0
