"""Alerts end to end: real Mosquitto, real InfluxDB, the service, and a real webhook receiver.

Why one module of some 470 lines: the tests share one running service per test and the
helpers that publish a gauge's story and read the receiver; each is a user-visible journey
(a flood paged and resolved, silenced, acknowledged, restarted), read best side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ingest.settings import InfluxSettings
from rules.alerting import Alerting
from siaga.app import Service
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.settings import HttpSettings, Settings
from tests.integration.support import Publisher, make_settings, running_service
from tests.integration.support import unique_name as unique
from tests.polling import eventually
from tests.receiver import Answer, Received, RecordingReceiver

SECRET = "s3cret-for-tests"
TOKEN = "operator-token"
NOW_S = int(time.time())
MINUTE = 60
SECOND_NS = 1_000_000_000


def rules_file(tmp_path: Path, receiver: RecordingReceiver, *, page_max_age: str = "30d",
               repeat_interval: str = "4h", offline: str = "") -> Path:
    """The bundled rule shapes with a receiver; page_max_age widened so test time is 'now'."""
    path = tmp_path / "rules.yaml"
    path.write_text(f"""
rules:
  - name: FloodLevel
    type: ladder
    kind: water-level
    field: level_cm
    clear_margin: 10
    steps:
      - {{threshold: siaga3_cm, level: siaga-3, severity: warning}}
      - {{threshold: siaga2_cm, level: siaga-2, severity: major}}
      - {{threshold: siaga1_cm, level: siaga-1, severity: critical}}
  - name: FloodWaveExpected
    type: flood_wave
    upstream: katulampa
    at_level: siaga-2
    downstream:
      - {{device: depok, travel: 3h}}
      - {{device: manggarai, travel: 9h}}
  - name: AirQuality
    type: ispu
    kind: air-quality
    window: 1h
    min_category: tidak-sehat
alerting: {{page_max_age: {page_max_age}, repeat_interval: {repeat_interval}}}
{offline}
receivers:
  - {{name: bpbd, url: "{receiver.url}", secret: {SECRET}}}
routes:
  - {{receivers: [bpbd]}}
""", encoding="utf-8")
    return path


def settings_for(mosquitto: Mosquitto, influx: InfluxDB1, tmp_path: Path, rules: Path,
                 catalog: Path | None = None) -> Settings:
    settings = make_settings(mosquitto.url, InfluxSettings(url=influx.url,
                             database=unique("alerts_")), tmp_path / "data", rules=rules,
                             catalog=catalog)
    return settings.model_copy(update={"http": HttpSettings(port=0, token=SecretStr(TOKEN))})


def levels(publisher: Publisher, prefix: str, device: str, values: Sequence[float],
           start_s: int, step_s: int = 5 * MINUTE) -> None:
    for index, value in enumerate(values):
        publisher.publish(f"{prefix}/water-level/{device}/telemetry",
                          {"ts": start_s + index * step_s, "seq": index, "level_cm": value})


def alerting_of(service: Service) -> Alerting:
    assert service.alerting is not None
    return service.alerting


def settled(service: Service, readings: int) -> Callable[[], bool]:
    """Every reading observed and every notification it caused finished in the outbox.

    The pipeline runs the rules as it counts each reading, and the alert book puts a page
    in the outbox in the same step: once both hold, what the receiver has is all there is.
    """
    alerting = alerting_of(service)
    return lambda: (service.stats.readings >= readings
                    and alerting.outbox.pending_count() == 0)


class Calls:
    """A spy on one method of a live object: how often it was called, its last arguments."""

    def __init__(self, owner: object, name: str) -> None:
        self.count = 0
        self.last_args: tuple[Any, ...] = ()
        method = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.last_args = args
            return method(*args, **kwargs)

        setattr(owner, name, spy)


def alerts_of(received: list[Received]) -> list[dict[str, Any]]:
    return [request.json["alerts"][0] for request in received]


def verify_signature(request: Received) -> None:
    timestamp = request.headers["X-Siaga-Timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body,
                        hashlib.sha256).hexdigest()
    assert request.headers["X-Siaga-Signature"] == f"sha256={expected}"


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


async def api(service: Service, method: str, path: str, body: object = None,
              token: str | None = TOKEN) -> tuple[int, Any]:
    """Call the service's HTTP API from a thread: the service runs in this event loop."""
    return await asyncio.to_thread(_call, service, method, path, body, token)


def _call(service: Service, method: str, path: str, body: object,
          token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.http_port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_manggarai_rising_and_falling_notifies_each_siaga_change_once(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    rise = [700, 740, 780, 820, 860, 900, 940, 960, 980]
    fall = [960, 930, 900, 870, 840, 800, 760, 720, 700]
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        levels(publisher, settings.mqtt.topic_prefix, "manggarai", rise + fall,
               NOW_S - 3 * 3600)
        await eventually(settled(service, len(rise + fall)), what="every page delivered")
        publisher.close()
    received = receiver.delivered()
    alerts = alerts_of(received)
    assert [(a["status"], a["labels"].get("level")) for a in alerts] == [
        ("firing", "siaga-3"), ("firing", "siaga-2"), ("firing", "siaga-1"),
        ("firing", "siaga-2"), ("firing", "siaga-3"), ("resolved", "siaga-3")]
    assert [a["labels"]["severity"] for a in alerts[:5]] == [
        "warning", "major", "critical", "major", "warning"]
    assert len({a["fingerprint"] for a in alerts}) == 1
    assert len({r.delivery for r in received}) == 6
    for request in received:
        verify_signature(request)
        assert request.json["version"] == "4" and request.json["receiver"] == "bpbd"
    assert alerts[0]["labels"]["device_id"] == "manggarai"
    first_over_751 = NOW_S - 3 * 3600 + 2 * 5 * MINUTE  # the third reading, 780 cm
    assert _epoch(alerts[0]["startsAt"]) == first_over_751
    assert alerts[-1]["endsAt"] != "0001-01-01T00:00:00Z"


async def test_a_level_hovering_around_a_boundary_does_not_flap(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    hovering = [800, 848, 853, 849, 852, 847, 855, 846, 851, 849]
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        levels(publisher, settings.mqtt.topic_prefix, "manggarai", hovering, NOW_S - 3600)
        await eventually(settled(service, len(hovering)), what="every page delivered")
        publisher.close()
    assert [a["labels"]["level"] for a in alerts_of(receiver.delivered())] == [
        "siaga-3", "siaga-2"]


async def test_last_nights_backlog_is_recorded_in_history_without_paging(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path,
                            rules_file(tmp_path, receiver, page_max_age="15m"))
    night = NOW_S - 10 * 3600
    backlog = [{"ts": night + i * 5 * MINUTE, "seq": i, "level_cm": level}
               for i, level in enumerate([700, 760, 800, 790, 720, 700])]
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        publisher.publish(f"{settings.mqtt.topic_prefix}/water-level/manggarai/telemetry",
                          backlog)  # one store-and-forward batch
        await eventually(lambda: service.stats.readings == len(backlog),
                         what="the backlog observed")
        # The rules ran as the readings were counted: the alert is recorded, and any page
        # would be in the outbox by now.
        outbox = alerting_of(service).outbox
        enqueued = outbox.pending_count() + sum(outbox.counts_by_outcome().values())
        alerts = (await api(service, "GET", "/api/alerts?status=resolved"))[1]["alerts"]
        assert len(alerts) == 1
        status, alert = await api(service, "GET", f"/api/alerts/{alerts[0]['fingerprint']}")
        publisher.close()
    assert enqueued == 0
    assert status == 200
    assert alert["rule"] == "FloodLevel"
    assert [entry["paged"] for entry in alert["history"]] == [False, False]
    assert {entry["reason"] for entry in alert["history"]} == {"stale", "never-paged"}
    assert receiver.requests == []


async def test_notifications_survive_a_receiver_outage_and_a_restart_in_order(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    receiver.default = Answer(503)
    publisher = Publisher(mosquitto)
    prefix = settings.mqtt.topic_prefix
    async with running_service(settings) as service:
        levels(publisher, prefix, "manggarai", [700, 760, 860, 960], NOW_S - 3600)
        await eventually(lambda: len(receiver.requests) >= 1, what="a refused attempt")
        outbox = alerting_of(service).outbox
        await eventually(lambda: outbox.pending_count() == 3, what="three pages pending")
    # Restarted while the receiver still refuses; then the receiver comes back.
    async with running_service(settings):
        receiver.default = Answer(200)
        await eventually(lambda: len(receiver.delivered()) >= 3, 60, "three pages delivered")
    publisher.close()
    delivered = receiver.delivered()
    assert [a["labels"]["level"] for a in alerts_of(delivered)] == [
        "siaga-3", "siaga-2", "siaga-1"]
    ids = [r.delivery for r in delivered]
    assert len(set(ids)) == 3  # each notification once
    refused = {r.delivery for r in receiver.requests if r.status == 503}
    assert ids[0] in refused  # the same delivery id was retried after the outage


async def test_katulampa_at_siaga_2_warns_depok_and_manggarai_of_the_wave(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    at = NOW_S - 600
    async with running_service(settings):
        publisher = Publisher(mosquitto)
        levels(publisher, settings.mqtt.topic_prefix, "katulampa", [40, 120, 170], at - 600,
               step_s=300)
        await eventually(lambda: sum(a["labels"]["alertname"] == "FloodWaveExpected"
                                     for a in alerts_of(receiver.delivered())) == 2,
                         what="two FloodWaveExpected pages")
        publisher.close()
    waves = {a["labels"]["device_id"]: a for a in alerts_of(receiver.delivered())
             if a["labels"]["alertname"] == "FloodWaveExpected"}
    assert set(waves) == {"depok", "manggarai"}
    arrival = {device: alert["annotations"]["expected_arrival"] for device, alert in waves.items()}
    expected = {"depok": at + 3 * 3600, "manggarai": at + 9 * 3600}
    for device, text in arrival.items():
        assert datetime.fromisoformat(text).timestamp() == expected[device]


async def test_acknowledging_needs_the_token(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    async with running_service(settings) as service:
        publisher = Publisher(mosquitto)
        levels(publisher, settings.mqtt.topic_prefix, "manggarai", [960], NOW_S - 60)
        await eventually(lambda: len(receiver.delivered()) == 1, what="the siaga-1 page")
        fingerprint = alerts_of(receiver.delivered())[0]["fingerprint"]
        path = f"/api/alerts/{fingerprint}/ack"
        assert (await api(service, "POST", path, {"by": "ops"}, token=None))[0] == 401
        assert (await api(service, "POST", path, {"by": "ops"}, token="wrong"))[0] == 401
        status, body = await api(service, "POST", path, {"by": "ops", "comment": "on it"})
        publisher.close()
    assert status == 200
    assert body["acknowledged"]["by"] == "ops"
    assert body["acknowledged"]["comment"] == "on it"


def small_river_catalog(tmp_path: Path, count: int) -> Path:
    lines = ["devices:"]
    for index in range(count):
        lines += [f"  - id: pos-{index}", "    kind: water-level", f"    name: Pos {index}",
                  "    lat: -6.3", "    lon: 106.8",
                  "    labels: {river: Kali Uji, kota: Jakarta Timur}",
                  "    thresholds: {siaga3_cm: 100, siaga2_cm: 200, siaga1_cm: 300}",
                  "    expected_interval_s: 1"]
    path = tmp_path / "catalog.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def reporting(report: Callable[[list[str]], None],
                    devices: list[str]) -> AsyncIterator[None]:
    """`devices` report in the background every half second, as their interval asks."""
    stop = asyncio.Event()

    async def keep_reporting() -> None:
        while not stop.is_set():
            report(devices)
            with contextlib.suppress(TimeoutError):
                # Pacing the devices at their interval, not a wait for a result.
                await asyncio.wait_for(stop.wait(), 0.5)

    async with asyncio.TaskGroup() as group:
        group.create_task(keep_reporting())
        try:
            yield
        finally:
            stop.set()


def offline_rules(tmp_path: Path, receiver: RecordingReceiver) -> Path:
    path = tmp_path / "offline-rules.yaml"
    path.write_text(f"""
rules: []
offline: {{grace_factor: 2, check_every: 1s, area_labels: [river], area_min_devices: 3,
          area_fraction: 0.6}}
receivers:
  - {{name: bpbd, url: "{receiver.url}", secret: {SECRET}}}
routes:
  - {{receivers: [bpbd]}}
""", encoding="utf-8")
    return path


async def test_a_silent_device_raises_device_offline_and_resolves_when_it_returns(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, offline_rules(tmp_path, receiver),
                            catalog=small_river_catalog(tmp_path, 3))
    prefix = settings.mqtt.topic_prefix
    publisher = Publisher(mosquitto)

    def report(devices: list[str]) -> None:
        for device in devices:
            publisher.publish(f"{prefix}/water-level/{device}/telemetry", {"level_cm": 5})

    async with running_service(settings), reporting(report, ["pos-1", "pos-2"]):
        # pos-1 and pos-2 keep reporting; pos-0 falls silent after its first reading.
        report(["pos-0"])
        await eventually(lambda: len(receiver.delivered()) >= 1, 30, "pos-0 paged offline")
        report(["pos-0"])
        await eventually(lambda: len(receiver.delivered()) >= 2, 30, "pos-0 paged back")
    publisher.close()
    alerts = alerts_of(receiver.delivered())
    assert [(a["labels"]["alertname"], a["labels"]["device_id"], a["status"])
            for a in alerts[:2]] == [("DeviceOffline", "pos-0", "firing"),
                                     ("DeviceOffline", "pos-0", "resolved")]


async def test_a_dark_river_is_one_area_offline_alert_not_one_per_gauge(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, offline_rules(tmp_path, receiver),
                            catalog=small_river_catalog(tmp_path, 10))
    async with running_service(settings) as service:
        alerting = alerting_of(service)
        checks = Calls(alerting.checker, "check")
        publisher = Publisher(mosquitto)
        for index in range(10):
            publisher.publish(f"{settings.mqtt.topic_prefix}/water-level/pos-{index}/telemetry",
                              {"level_cm": 5})
        await eventually(lambda: len(receiver.delivered()) >= 1, 30, "the first page")
        # Three more offline checks, each of which could page a gauge of its own; what they
        # put in the outbox is delivered before the test looks.
        after = checks.count + 3
        await eventually(lambda: checks.count >= after and alerting.outbox.pending_count() == 0,
                         30, "three more offline checks")
        publisher.close()
    alerts = alerts_of(receiver.delivered())
    assert [a["labels"]["alertname"] for a in alerts] == ["AreaOffline"]
    named = alerts[0]["annotations"]["devices"]
    assert all(f"pos-{index}" in named for index in range(10))


async def test_an_unhealthy_ispu_alerts_with_its_category_and_index(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    topic = f"{settings.mqtt.topic_prefix}/air-quality/dki1-bundaran-hi/telemetry"
    start = NOW_S - 2 * 3600
    async with running_service(settings):
        publisher = Publisher(mosquitto)
        for index in range(13):  # every 10 minutes for two hours: the 1 h window is covered
            publisher.publish(topic, {"ts": start + index * 600, "pm25": 100.0, "pm10": 60.0})
        await eventually(lambda: len(receiver.delivered()) >= 1)
        publisher.close()
    [alert] = alerts_of(receiver.delivered())
    assert alert["labels"]["alertname"] == "AirQuality"
    assert alert["labels"]["level"] == "tidak-sehat"
    # PM2.5 100 ug/m3 lies in the 55.4-150.4 band: ISPU 100 + (100-55.4)/(150.4-55.4)*100
    assert "147" in json.dumps(alert["annotations"])


async def test_a_silence_suppresses_and_its_expiry_restores(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path, rules_file(tmp_path, receiver))
    async with running_service(settings) as service:
        status, silence = await api(service, "POST", "/api/silences", {
            "matchers": ["alertname=FloodLevel", "device_id=manggarai"], "duration": "2h",
            "created_by": "ops", "comment": "gate maintenance"})
        assert status == 201
        publisher = Publisher(mosquitto)
        levels(publisher, settings.mqtt.topic_prefix, "manggarai", [700, 800], NOW_S - 600)
        await eventually(lambda: service.stats.readings == 2, what="both readings observed")
        # The rules ran as the readings were counted: a page would be in the outbox now.
        outbox = alerting_of(service).outbox
        assert outbox.pending_count() + sum(outbox.counts_by_outcome().values()) == 0
        assert receiver.requests == []
        status, _ = await api(service, "DELETE", f"/api/silences/{silence['id']}")
        assert status == 200
        await eventually(lambda: len(receiver.delivered()) == 1, 30, "the page once unsilenced")
        publisher.close()
    [alert] = alerts_of(receiver.delivered())
    assert (alert["status"], alert["labels"]["level"]) == ("firing", "siaga-3")


async def test_an_acknowledgement_stops_the_repeats(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    settings = settings_for(mosquitto, influxdb1, tmp_path,
                            rules_file(tmp_path, receiver, repeat_interval="1s"))
    async with running_service(settings) as service:
        alerting = alerting_of(service)
        repeats = Calls(alerting.book, "due_repeats")
        publisher = Publisher(mosquitto)
        levels(publisher, settings.mqtt.topic_prefix, "manggarai", [800], NOW_S - 60)
        await eventually(lambda: len(receiver.delivered()) >= 3, 30,
                         "the page and two repeats")
        fingerprint = alerts_of(receiver.delivered())[0]["fingerprint"]
        status, _ = await api(service, "POST", f"/api/alerts/{fingerprint}/ack", {"by": "ops"})
        assert status == 200
        acked_ns = time.time_ns()
        # A repeat put in the outbox before the acknowledgement may still land.
        await eventually(lambda: alerting.outbox.pending_count() == 0, what="the outbox empty")
        after_ack = len(receiver.delivered())
        # Two repeat intervals on a repeat would be due: wait for the check that would send
        # it (it puts it in the outbox at once) and for the outbox to finish.
        await eventually(lambda: repeats.last_args and repeats.last_args[0] >= acked_ns
                         + 2 * SECOND_NS and alerting.outbox.pending_count() == 0, 30,
                         "a repeat check two intervals after the acknowledgement")
        publisher.close()
    assert len(receiver.delivered()) == after_ack
    reasons = [r.json["alerts"][0]["status"] for r in receiver.delivered()]
    assert set(reasons) == {"firing"}
