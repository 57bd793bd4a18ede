"""Three Siaga instances on a 3-node RabbitMQ cluster, one of each SIGKILLed during a flood
(issue 18): no reading lost, each device's readings judged in order, every alert raised
once, and notifications neither lost nor doubled as new.

Real parts throughout: the session's RabbitMQ cluster (its MQTT plugin takes the devices'
messages, quorum partition queues, single-active-consumer), three `siaga run` processes
(`ingest.input: amqp`, instance 0, 1 and 2 of 3) sharing one PostgreSQL (the alert book,
the outbox, the board of devices heard and the leader's lock), the session's InfluxDB, and
a webhook receiver in this test.

The flood: 12 gauges go up and down through Siaga 3, 2 and 1 five times, one reading a
round, so that every reading changes its gauge's FloodLevel alert (new, changed to each
level, resolved); 12 other gauges send batches of 50 quiet readings a round, the load. After
round 8 the instance that reads the first instance's partitions is SIGKILLed (its partitions
move to the standbys, which take the devices' alerts from the shared book); after round 16
a RabbitMQ node is SIGKILLed (an instance connected to it reconnects to another).

Residents report a flood meanwhile, one report to each instance's API: the leader, which
reads the reports every instance stores in the shared report book, raises one
CitizenFloodReports for the three, paged once.

The oracle: the same readings through one in-process `RuleEngine`, in order. Any reading
judged out of order, twice against a newer state, or lost, changes a gauge's sequence of
alert changes (the book's history) or of notifications (the receiver's, deduplicated by
the delivery id, which a redelivery keeps: receivers deduplicate by it, SPEC section 3).
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

import rules
from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import load_catalog
from ingest.settings import AmqpSettings, InfluxSettings
from reports.book import ReportBook
from reports.settings import ReportsSettings
from rules.citizens import CITIZEN_FLOOD_REPORTS
from rules.config import load_rules
from rules.engine import RuleEngine
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.postgres import PostgreSQL
from siaga.sandbox.rabbitmq import USER, RabbitCluster
from tests.integration.support import (
    ServiceProcess,
    influx_rows,
    make_settings,
    unique_name,
    write_config,
)
from tests.polling import wait_until
from tests.receiver import RecordingReceiver

INSTANCES = 3
PARTITIONS = 12
GAUGES = [f"clg-{n}" for n in range(12)]  # the flood: every reading an alert change
LOAD = [f"cll-{n}" for n in range(12)]  # quiet readings in batches, the load
BATCH = 50
THRESHOLDS = {"siaga3_cm": 100, "siaga2_cm": 200, "siaga1_cm": 300}
# With FloodLevel's clear margin of 10 cm each level is a change from the one before:
# none, new at Siaga 3, Siaga 2, Siaga 1, back to 2, back to 3, resolved.
CYCLE = (50.0, 120.0, 220.0, 320.0, 250.0, 150.0)
CYCLES = 5
ROUNDS = len(CYCLE) * CYCLES + 1  # the last one, 50 cm, resolves the fifth episode
KILL_SIAGA_AFTER = 8
KILL_NODE_AFTER = 16
PUBLISHER_NODE = 2  # devices publish to node 2 and it stays up
VICTIM_NODE = 3
WITHIN_S = 180  # elections, a takeover and a lease's expiry on a loaded 2-core machine
REPORTS_AFTER = 2  # the residents' reports come after this round, before any kill
# Three flood reports within 500 m of each other, near the first gauge.
REPORT_PLACES = ((-6.2002, 106.8003), (-6.2006, 106.8008), (-6.1998, 106.8009))


def level(round_: int) -> float:
    return CYCLE[round_ % len(CYCLE)] if round_ < ROUNDS - 1 else 50.0


def write_catalog(path: Path) -> Path:
    def gauge(device_id: str, n: int) -> dict[str, Any]:
        # An hour between readings: nobody is judged silent within the test.
        return {"id": device_id, "kind": "water-level", "name": f"Cluster gauge {device_id}",
                "lat": -6.2 + n / 1000, "lon": 106.8, "expected_interval_s": 3600,
                "labels": {"kota": f"Kota {device_id}", "river": f"Kali {device_id}"},
                "thresholds": THRESHOLDS}
    devices = [gauge(d, n) for n, d in enumerate(GAUGES + LOAD)]
    path.write_text(yaml.safe_dump({"devices": devices}), encoding="utf-8")
    return path


Story = dict[str, list[tuple[int, str, str]]]  # gauge -> (round, what, level) in order


def oracle(catalog: Path, rules_path: Path, t0: int) -> tuple[Story, Story]:
    """Per gauge: the alert changes one engine makes of the readings in order, and the
    notifications they page, each with the round of the reading that made it."""
    registry = load_catalog(catalog)
    engine = RuleEngine(load_rules(rules_path, registry), registry)
    changes: Story = {g: [] for g in GAUGES}
    pages: Story = {g: [] for g in GAUGES}
    for round_ in range(ROUNDS):
        for gauge in GAUGES:
            reading = Reading(Kind.WATER_LEVEL, gauge, (t0 + round_) * 10**9,
                              {"level_cm": level(round_)}, round_)
            for transition in engine.evaluate(reading):
                lvl = transition.alert.labels.get("level", "")
                changes[gauge].append((round_, transition.change, lvl))
                status = "resolved" if transition.change == "resolved" else "firing"
                pages[gauge].append((round_, status, lvl))
    return changes, pages


def until(story: Story, last_round: int) -> dict[str, list[tuple[str, str]]]:
    """What the story says up to and including `last_round`, without the rounds."""
    return {gauge: [(what, lvl) for round_, what, lvl in events if round_ <= last_round]
            for gauge, events in story.items()}


class Devices:
    """One paho connection to one node, publishing QoS 1 for every device."""

    def __init__(self, cluster: RabbitCluster, node: int, prefix: str, t0: int) -> None:
        self.prefix, self.t0 = prefix, t0
        self._lock = threading.Lock()
        self.acked = 0
        self.sent = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("cl-"),
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(USER, cluster.password)
        self.client.max_inflight_messages_set(200)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", cluster.mqtt_port(node))
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self.acked += 1

    def _send(self, device: str, payload: object) -> None:
        info = self.client.publish(f"{self.prefix}/water-level/{device}/telemetry",
                                   orjson.dumps(payload), qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        self.sent += 1

    def round(self, round_: int) -> None:
        """One reading per flood gauge and a batch per load gauge; back once all are
        acknowledged (queued by RabbitMQ)."""
        ts = self.t0 + round_
        for gauge in GAUGES:
            self._send(gauge, {"ts": ts, "seq": round_, "level_cm": level(round_)})
        for device in LOAD:
            self._send(device, [{"ts": ts + i / 100, "seq": round_ * BATCH + i,
                                 "level_cm": 20.0} for i in range(BATCH)])
        wait_until(lambda: self.acked == self.sent, WITHIN_S, f"PUBACKs of round {round_}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def instances(configs: list[Path], logs: list[Path]) -> Iterator[list[ServiceProcess]]:
    with ExitStack() as stack:
        processes = []
        for config, log in zip(configs, logs, strict=True):
            process = ServiceProcess(config, log)
            stack.callback(process.stop)
            process.start()
            processes.append(process)
        yield processes


def metric(process: ServiceProcess, name: str) -> float:
    with urllib.request.urlopen(f"{process.base}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def book_history(url: str) -> dict[str, list[tuple[str, str]]]:
    """Per subject, the changes the shared book recorded, in order (refreshes left out)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.subject, h.change, h.labels FROM history h JOIN alerts a USING"
            " (fingerprint) WHERE a.rule = 'FloodLevel' AND h.change <> 'refresh'"
            " ORDER BY h.id").fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for subject, change, labels in rows:
        found.setdefault(subject, []).append((change, orjson.loads(labels).get("level", "")))
    return found


def told(receiver: RecordingReceiver, rule: str) -> list[dict[str, Any]]:
    """The alerts of `rule` the receiver was told of, each delivery once (by its id)."""
    seen: set[str] = set()
    found = []
    for request in receiver.delivered():
        alert = orjson.loads(request.body)["alerts"][0]
        if request.delivery not in seen and alert["labels"]["alertname"] == rule:
            seen.add(request.delivery)
            found.append(alert)
    return found


def notified(receiver: RecordingReceiver) -> dict[str, list[tuple[str, str]]]:
    """Per gauge, what the receiver was told of FloodLevel, in order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for alert in told(receiver, "FloodLevel"):
        found.setdefault(alert["labels"]["device_id"], []).append(
            (alert["status"], alert["labels"].get("level", "")))
    return found


def report_flood(process: ServiceProcess, key: str, place: tuple[float, float]) -> str:
    """A resident's banjir report to one instance's Open311 API: its id."""
    form = urllib.parse.urlencode({
        "api_key": key, "service_code": "banjir", "lat": str(place[0]),
        "long": str(place[1]), "description": "Air setinggi lutut di jalan"}).encode()
    request = urllib.request.Request(f"{process.base}/open311/v2/requests.json", data=form)
    with urllib.request.urlopen(request, timeout=20) as answer:
        return str(orjson.loads(answer.read())[0]["service_request_id"])


def stored_counts(influx: InfluxDB1, database: str) -> dict[str, int]:
    rows = influx_rows(influx, database, 'SELECT COUNT(level_cm) FROM water_level'
                                         ' GROUP BY "device_id"')
    return {row["device_id"]: int(row["count"]) for row in rows}


async def test_a_siaga_and_a_rabbitmq_node_killed_during_a_flood_lose_nothing_and_page_once(
        rabbit_cluster: RabbitCluster, influxdb1: InfluxDB1, postgres: PostgreSQL,
        receiver: RecordingReceiver, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.yaml")
    # The bundled rules: on a catalog of gauges only FloodLevel applies (the offline checks
    # are built in; an hour's expected interval keeps them quiet).
    rules_path = Path(rules.__file__).with_name("default.yaml")
    database = unique_name("cluster_")
    book_url = postgres.create_database(database)
    # Instances sharing the alert book share the report book, in the same database.
    with ReportBook.open(ReportsSettings(database_url=SecretStr(book_url)), tmp_path) as book:
        key = book.add_key("qlue")
    name = unique_name("siaga-cl")
    influx = InfluxSettings(url=influxdb1.url, database=unique_name("cluster_"))
    configs, logs = [], []
    for i in range(INSTANCES):
        # The first instance, the one killed, stores (and so acknowledges) nothing before
        # its death: every reading it judged and paged comes again to the instance taking
        # its partitions over, which must not page them again.
        slow = i == 0
        base = make_settings("mqtt://127.0.0.1:1", influx, tmp_path / f"data-{i}",
                             catalog=catalog, prefix=name.replace("-", ""),
                             batch_size=20_000 if slow else 500,
                             flush_interval_s=60.0 if slow else 0.2,
                             linger_s=60.0 if slow else 0.05)
        # Instance i reaches node i + 1 first: each instance's channel on its own node.
        urls = [rabbit_cluster.amqp_url(1 + (i + k) % 3) for k in range(3)]
        settings = base.model_copy(update={
            "ingest": base.ingest.model_copy(update={"input": "amqp"}),
            "amqp": AmqpSettings(urls=urls, name=name, partitions=PARTITIONS, replicas=3,
                                 instance=i, instances=INSTANCES, reconnect_max_s=2),
            "webhook_url": receiver.url,
        })
        configs.append(write_config(settings, tmp_path / f"siaga-{i}.yaml",
                                    alerting={"database_url": book_url}))
        logs.append(tmp_path / f"siaga-{i}.log")
    prefix = name.replace("-", "")
    t0 = int(time.time()) - 120  # fresh news: well within page_max_age (15 min)
    changes, pages = oracle(catalog, rules_path, t0)
    expected_changes, expected_pages = until(changes, ROUNDS), until(pages, ROUNDS)
    # New, Siaga 2, Siaga 1, back to 2, back to 3, resolved: six pages an episode.
    assert all(len(told) == CYCLES * 6 for told in expected_pages.values())

    reports: list[str] = []  # the residents' reports' ids

    def scenario() -> None:
        with instances(configs, logs) as processes:
            devices = Devices(rabbit_cluster, PUBLISHER_NODE, prefix, t0)
            try:
                for round_ in range(ROUNDS):
                    devices.round(round_)
                    if round_ == REPORTS_AFTER:
                        reports.extend(report_flood(process, key, place)
                                       for process, place in zip(processes, REPORT_PLACES,
                                                                 strict=True))
                        wait_until(lambda: told(receiver, CITIZEN_FLOOD_REPORTS), WITHIN_S,
                                   "the flood reports' cluster paged", 0.2)
                    if round_ == KILL_SIAGA_AFTER:
                        # Every gauge paged up to this round, the victim's included ...
                        wait_until(lambda: notified(receiver) == until(pages, KILL_SIAGA_AFTER),
                                   WITHIN_S, f"the pages of rounds up to {round_}", 0.2)
                        victim = processes[0]
                        # ... and it was reading its partitions, acknowledging none.
                        assert metric(victim, "siaga_readings_received_total") > 0
                        assert metric(victim, "siaga_mqtt_messages_acked_total") == 0
                        victim.kill()
                    if round_ == KILL_NODE_AFTER:
                        rabbit_cluster.kill_node(VICTIM_NODE)
            finally:
                devices.close()
            wait_until(lambda: stored_counts(influxdb1, influx.database) == {
                **{g: ROUNDS for g in GAUGES}, **{d: ROUNDS * BATCH for d in LOAD}},
                WITHIN_S, "every reading stored", 1.0)
            wait_until(lambda: notified(receiver) == expected_pages, WITHIN_S,
                       "every notification delivered", 1.0)

    try:
        await asyncio.to_thread(scenario)
    finally:
        await asyncio.to_thread(rabbit_cluster.start_node, VICTIM_NODE)
    # Each gauge's alert changes as one engine judging its readings in order makes them:
    # raised once per episode, nothing judged twice or out of order.
    assert book_history(book_url) == expected_changes
    assert notified(receiver) == expected_pages  # nothing lost, nothing doubled as new
    # Three reports to three instances: one cluster, raised and paged once, naming them all.
    clusters = told(receiver, CITIZEN_FLOOD_REPORTS)
    assert [alert["status"] for alert in clusters] == ["firing"]
    assert sorted(clusters[0]["annotations"]["report_ids"].split(",")) == sorted(reports)
    # Redeliveries keep their id: a repeated id is the same notification, never a new one.
    assert len({r.delivery for r in receiver.delivered()}) == sum(
        len(pages) for pages in expected_pages.values()) + len(clusters)


@pytest.fixture(autouse=True)
def _no_stray_nodes(rabbit_cluster: RabbitCluster) -> Iterator[None]:
    yield
    # The cluster is the session's: every node must be up again for the next test.
    assert len(rabbit_cluster.running_nodes()) == len(rabbit_cluster.nodes)
