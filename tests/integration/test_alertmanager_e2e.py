"""Siaga hands its alerts to a real Prometheus Alertmanager (SPEC section 9).

Each test's flood rule carries a label of its own (`test`), so the session's Alertmanager,
which keeps every test's alerts, shows each test only its own.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from ingest.settings import InfluxSettings
from rules.alertmanager import AlertmanagerSettings
from siaga.app import Service
from siaga.sandbox.alertmanager import Alertmanager
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.ports import free_port
from siaga.settings import Settings
from tests.integration.support import Publisher, make_settings, running_service, unique_name
from tests.polling import eventually
from tests.receiver import RecordingReceiver

MINUTE = 60
SHORT_RESEND_S = 0.5  # the restart test's re-send interval: restored within a second


def rules_file(tmp_path: Path, tag: str, webhook: str | None = None) -> Path:
    receivers = ("" if webhook is None else f'receivers: [{{name: bpbd, url: "{webhook}"}}]\n'
                 "routes: [{receivers: [bpbd]}]\n")
    path = tmp_path / "rules.yaml"
    path.write_text(f"""
rules:
  - name: FloodLevel
    type: ladder
    kind: water-level
    field: level_cm
    clear_margin: 10
    labels: {{test: {tag}}}
    steps:
      - {{threshold: siaga3_cm, level: siaga-3, severity: warning}}
      - {{threshold: siaga2_cm, level: siaga-2, severity: major}}
      - {{threshold: siaga1_cm, level: siaga-1, severity: critical}}
alerting: {{page_max_age: 30d}}
{receivers}""", encoding="utf-8")
    return path


def settings_for(mosquitto: Mosquitto, influx: InfluxDB1, tmp_path: Path, tag: str,
                 alertmanager: Alertmanager | str, resend_interval_s: float = 60.0, *,
                 webhook: str | None = None, **target: Any) -> Settings:
    settings = make_settings(mosquitto.url, InfluxSettings(url=influx.url,
                             database=unique_name("am_")), tmp_path / "data",
                             rules=rules_file(tmp_path, tag, webhook))
    url = alertmanager if isinstance(alertmanager, str) else alertmanager.url
    entry = AlertmanagerSettings(url=url, timeout_s=2.0, resend_interval_s=resend_interval_s,
                                 **target)
    return settings.model_copy(update={"alertmanagers": [entry]})


class Gauge:
    """Manggarai's gauge, one reading five minutes after the other, from three hours ago."""

    def __init__(self, mosquitto: Mosquitto, settings: Settings) -> None:
        self.publisher = Publisher(mosquitto)
        self.topic = f"{settings.mqtt.topic_prefix}/water-level/manggarai/telemetry"
        self.start_s = int(time.time()) - 3 * 3600
        self.sent = 0

    def levels(self, *values: float) -> None:
        for value in values:
            self.publisher.publish(self.topic, {"ts": self.start_s + self.sent * 5 * MINUTE,
                                                "seq": self.sent, "level_cm": value})
            self.sent += 1


def alerts_in(alertmanager: Alertmanager, tag: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: alertmanager.alerts(test=tag)


def levels_in(alertmanager: Alertmanager, tag: str) -> Callable[[], list[str]]:
    return lambda: sorted(alert["labels"]["level"] for alert in alertmanager.alerts(test=tag))


def notified(receiver: RecordingReceiver, tag: str) -> list[tuple[str, str]]:
    """(status, level) of each alert in each notification Alertmanager sent about this test."""
    return [(alert["status"], alert["labels"]["level"])
            for request in receiver.requests for alert in request.json["alerts"]
            if alert["labels"].get("test") == tag]


async def scrape(service: Service) -> dict[tuple[str, str], float]:
    """The service's /metrics as {(name, labels as written): value}."""
    url = f"http://127.0.0.1:{service.http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            samples[(name, labels.rstrip("}"))] = float(value)
    return samples


def posted(receiver: RecordingReceiver) -> list[list[dict[str, Any]]]:
    """The bodies POSTed to a receiver standing in for Alertmanager: lists of alerts."""
    return [orjson.loads(request.body) for request in receiver.requests]


async def test_a_firing_alert_appears_in_alertmanager_with_its_labels(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, alertmanager: Alertmanager, tmp_path: Path,
    alertmanager_receiver: RecordingReceiver,
) -> None:
    tag = unique_name("fires")
    settings = settings_for(mosquitto, influxdb1, tmp_path, tag, alertmanager)
    async with running_service(settings) as service:
        gauge = Gauge(mosquitto, settings)
        gauge.levels(700, 780)
        await eventually(alerts_in(alertmanager, tag), within=30,
                         what="the alert in Alertmanager's API")
        [alert] = alertmanager.alerts(test=tag)
        assert service.alerting is not None
        [view] = service.alerting.book.alerts()
        # Alertmanager lists the alert before its answer reaches the forwarder, which only
        # then observes the latency.
        [forwarder] = service.alerting.forwarders
        await eventually(lambda: forwarder.latency.snapshot().count == 1, within=10,
                         what="the forwarder seeing Alertmanager's answer")
        metrics = await scrape(service)
        gauge.publisher.close()
    # Alertmanager took the alert (it is in its API), so its latency and count are shown.
    assert metrics[("siaga_notification_latency_seconds_count",
                    'channel="alertmanager"')] == 1
    assert metrics[("siaga_alertmanager_notifications_sent_total",
                    f'alertmanager="{alertmanager.url}"')] >= 1
    assert alert["labels"] == {**view.alert.labels, "test": tag}
    assert alert["labels"]["alertname"] == "FloodLevel"
    assert alert["labels"]["level"] == "siaga-3"
    assert alert["labels"]["device_id"] == "manggarai"
    assert alert["annotations"]["summary"] == view.alert.annotations["summary"]
    assert alert["generatorURL"].endswith(f"/api/alerts/{view.alert.fingerprint}")
    assert alert["status"]["state"] == "active"


async def test_alertmanager_notifies_its_own_receiver_of_siagas_alert(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, alertmanager: Alertmanager, tmp_path: Path,
    alertmanager_receiver: RecordingReceiver,
) -> None:
    tag = unique_name("routes")
    settings = settings_for(mosquitto, influxdb1, tmp_path, tag, alertmanager)
    async with running_service(settings):
        gauge = Gauge(mosquitto, settings)
        gauge.levels(700, 780)
        await eventually(lambda: notified(alertmanager_receiver, tag), within=30,
                         what="Alertmanager's webhook notification")
        gauge.publisher.close()
    assert notified(alertmanager_receiver, tag)[0] == ("firing", "siaga-3")


async def test_a_level_change_resolves_the_old_label_set_at_once(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, alertmanager: Alertmanager, tmp_path: Path,
    alertmanager_receiver: RecordingReceiver,
) -> None:
    tag = unique_name("level")
    settings = settings_for(mosquitto, influxdb1, tmp_path, tag, alertmanager)
    async with running_service(settings):
        gauge = Gauge(mosquitto, settings)
        gauge.levels(700, 780)
        await eventually(lambda: levels_in(alertmanager, tag)() == ["siaga-3"], within=30,
                         what="Siaga 3 in Alertmanager")
        gauge.levels(860)  # Siaga 2 at 850 cm
        # Long before a re-send (60 s) or the old set's endsAt (4 minutes) could do it.
        await eventually(lambda: levels_in(alertmanager, tag)() == ["siaga-2"], within=10,
                         what="only Siaga 2 left in Alertmanager")
        await eventually(lambda: ("resolved", "siaga-3") in notified(alertmanager_receiver, tag),
                         within=30, what="Alertmanager notifying Siaga 3 resolved")
        gauge.publisher.close()


async def test_a_resolution_reaches_alertmanager(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, alertmanager: Alertmanager, tmp_path: Path,
    alertmanager_receiver: RecordingReceiver,
) -> None:
    tag = unique_name("ends")
    settings = settings_for(mosquitto, influxdb1, tmp_path, tag, alertmanager)
    async with running_service(settings):
        gauge = Gauge(mosquitto, settings)
        gauge.levels(700, 780)
        await eventually(alerts_in(alertmanager, tag), within=30, what="the alert firing")
        gauge.levels(700)  # below Siaga 3 less the 10 cm margin
        await eventually(lambda: not alerts_in(alertmanager, tag)(), within=10,
                         what="the alert gone from Alertmanager's active alerts")
        await eventually(lambda: ("resolved", "siaga-3") in notified(alertmanager_receiver, tag),
                         within=30, what="Alertmanager notifying the resolution")
        gauge.publisher.close()


async def test_a_restarted_alertmanager_gets_the_firing_alerts_again(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver,
) -> None:
    tag = unique_name("restart")
    with Alertmanager(tmp_path / "alertmanager", receiver.url) as alertmanager:
        settings = settings_for(mosquitto, influxdb1, tmp_path, tag, alertmanager,
                                resend_interval_s=SHORT_RESEND_S)
        async with running_service(settings) as service:
            gauge = Gauge(mosquitto, settings)
            gauge.levels(700, 780)
            await eventually(alerts_in(alertmanager, tag), within=30, what="the alert firing")
            await asyncio.to_thread(alertmanager.stop)
            # Empty state, as a new pod or a wiped volume starts: the same port, nothing kept.
            shutil.rmtree(alertmanager.data_dir / "storage")
            await asyncio.to_thread(alertmanager.start)
            await eventually(alerts_in(alertmanager, tag), within=30,
                             what="the alert restored by a re-send")
            assert service.alerting is not None
            [forwarder] = service.alerting.forwarders
            gauge.publisher.close()
    assert forwarder.sent_total >= 2
    # Re-sends restore state; only news (here: one alert firing) is a notification's latency.
    assert forwarder.latency.snapshot().count == 1


async def test_an_alertmanager_that_is_down_holds_up_neither_webhooks_nor_readings(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver,
) -> None:
    tag = unique_name("down")
    nobody = f"http://127.0.0.1:{free_port()}"  # refused connections
    settings = settings_for(mosquitto, influxdb1, tmp_path, tag, nobody, SHORT_RESEND_S,
                            webhook=receiver.url)
    async with running_service(settings) as service:
        gauge = Gauge(mosquitto, settings)
        gauge.levels(700, 780, 860)
        await eventually(lambda: len(receiver.delivered()) == 2, within=30,
                         what="Siaga's own webhook paging Siaga 3, then Siaga 2")
        assert service.alerting is not None
        [forwarder] = service.alerting.forwarders
        await eventually(lambda: forwarder.failed_total >= 2, within=30,
                         what="failed POSTs counted, re-sends included")
        assert service.stats.readings == 3
        gauge.publisher.close()
    assert forwarder.sent_total == 0


async def test_siaga_posts_alertmanagers_v2_body_with_its_credentials(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver,
) -> None:
    tag = unique_name("body")
    settings = settings_for(mosquitto, influxdb1, tmp_path, tag, f"http://127.0.0.1:{receiver.port}/am",
                            bearer_token=SecretStr("am-token"))
    async with running_service(settings):
        gauge = Gauge(mosquitto, settings)
        gauge.levels(700, 780)
        await eventually(lambda: any(posted(receiver)), within=30, what="a POST with the alert")
        gauge.publisher.close()
    request, [alert] = next((request, body) for request, body in zip(
        receiver.requests, posted(receiver), strict=True) if body)
    assert request.headers["Authorization"] == "Bearer am-token"
    assert request.headers["Content-Type"] == "application/json"
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    ahead_s = datetime.fromisoformat(alert["endsAt"]).timestamp() - time.time()
    assert 3 * 60 < ahead_s <= 4 * 60  # four re-send intervals of 60 s
