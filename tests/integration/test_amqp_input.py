"""The service reads RabbitMQ's partitions (`ingest.input: amqp`): nothing lost, per-device
order kept, also across a RabbitMQ node's SIGKILL.

Devices publish MQTT (paho, QoS 1) to the cluster's MQTT plugin; the service consumes the
partition queues over AMQP and stores into InfluxDB. Each test has its own topic prefix,
partitions (`amqp.name`) and database. What the pipeline saw, and in which order, is read
off the rules' side: the pipeline hands every decoded reading to its observer (the service's
`Alerting`) in the order it decoded them; `Seen` wraps that one method of the running
service's instance, records, and passes every call on unchanged.

The service runs in the test's event loop, so everything that blocks (a node's kill, an
InfluxDB query) runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.readings import Reading, StatusUpdate
from ingest.amqp import AmqpSubscriber
from ingest.settings import AmqpSettings, InfluxSettings
from rules.alerting import Alerting
from siaga.app import Service
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.rabbitmq import USER, RabbitCluster
from siaga.settings import Settings
from tests.integration.support import influx_rows, make_settings, running_service, unique_name
from tests.polling import eventually, wait_until

TS = 1_700_000_000  # event time of seq 0; one second per seq
WITHIN_S = 120  # a ceiling for a 3-node broker on a loaded 2-core machine (elections)
DEVICES = [f"amqp-wl-{n}" for n in range(8)]


class MqttDevices:
    """One paho MQTT 3.1.1 connection to one node, publishing for every device at QoS 1."""

    def __init__(self, cluster: RabbitCluster, node: int) -> None:
        self._lock = threading.Lock()
        self.acked = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("devs-"),
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(USER, cluster.password)
        self.client.max_inflight_messages_set(100)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", cluster.mqtt_port(node))
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, prefix: str, count: int, start: int = 0) -> int:
        """Readings `start`..`start+count-1` of every device, interleaved; queued in paho,
        which sends them as the broker acknowledges earlier ones."""
        for seq in range(start, start + count):
            for device in DEVICES:
                payload = {"ts": TS + seq, "seq": seq, "level_cm": 500 + seq % 200}
                info = self.client.publish(f"{prefix}/water-level/{device}/telemetry",
                                           orjson.dumps(payload), qos=1)
                assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        return count * len(DEVICES)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def mqtt_devices(cluster: RabbitCluster, node: int) -> Iterator[MqttDevices]:
    devices = MqttDevices(cluster, node)
    try:
        yield devices
    finally:
        devices.close()


class Seen:
    """Each device's seqs in the order the running service's pipeline decoded them."""

    def __init__(self, alerting: Alerting) -> None:
        self.seqs: dict[str, list[int]] = {}
        observe = alerting.observe

        def recording(readings: Sequence[Reading], statuses: Sequence[StatusUpdate],
                      received_ns: int) -> None:
            for reading in readings:
                assert reading.seq is not None
                self.seqs.setdefault(reading.device_id, []).append(reading.seq)
            observe(readings, statuses, received_ns)

        alerting.observe = recording  # type: ignore[method-assign]  # see the module docstring

    def complete(self, count: int) -> bool:
        return all(max(self.seqs.get(device, [-1])) == count - 1 for device in DEVICES)


def in_order(seqs: list[int]) -> bool:
    """Whether `seqs` went forward one at a time, allowing replays: a redelivery after a
    lost channel starts again at the oldest unacknowledged one and goes forward from
    there, so each seq is the one after the last, or a step back to start a replay."""
    previous = -1
    for seq in seqs:
        if seq > previous + 1:
            return False  # one skipped, or a stale one in the middle of newer ones
        previous = seq
    return True


def amqp_settings(cluster: RabbitCluster, influx: InfluxDB1, data_dir: Path,
                  nodes: Sequence[int], reader: Literal["aiormq", "wire"] = "wire") -> Settings:
    """Settings reading partitions of their own through `nodes`, in that order."""
    settings = make_settings("mqtt://127.0.0.1:1", InfluxSettings(
        url=influx.url, database=unique_name("amqp_")), data_dir, batch_size=500,
        unknown_devices="accept")
    return settings.model_copy(update={
        "ingest": settings.ingest.model_copy(update={"input": "amqp"}),
        "amqp": AmqpSettings(urls=[cluster.amqp_url(i) for i in nodes],
                             name=unique_name("siaga-t"), partitions=4,
                             replicas=len(cluster.nodes), reconnect_max_s=2,
                             reader=reader),
    })


def stored_seqs(influx: InfluxDB1, settings: Settings) -> dict[str, list[int]]:
    rows = influx_rows(influx, settings.influx.database,
                       'SELECT seq FROM water_level GROUP BY "device_id"')
    stored: dict[str, list[int]] = {}
    for row in rows:
        stored.setdefault(row["device_id"], []).append(int(row["seq"]))
    return stored


async def wait_stored(influx: InfluxDB1, settings: Settings, count: int) -> dict[str, list[int]]:
    """Poll InfluxDB (in a thread) until every device has `count` points; what it holds."""
    stored: dict[str, list[int]] = {}

    def complete() -> bool:
        nonlocal stored
        stored = stored_seqs(influx, settings)
        return all(len(stored.get(device, [])) >= count for device in DEVICES)

    await asyncio.to_thread(wait_until, complete, WITHIN_S,
                            f"{count} readings per device stored", 0.25)
    return stored


def consumer_node(cluster: RabbitCluster, service: Service) -> int:
    subscriber = service._subscriber
    assert isinstance(subscriber, AmqpSubscriber) and subscriber.url is not None
    return next(i for i in (1, 2, 3) if f":{cluster.node(i).port}/" in subscriber.url)


def prefix_of(settings: Settings) -> str:
    return settings.mqtt.topic_prefix


# The default reader (wire) and aiormq's, kept as the reference `amqp.reader: aiormq`.
@pytest.mark.parametrize("reader", ["wire", "aiormq"])
async def test_readings_published_to_any_node_are_stored_once_and_seen_in_order(
        rabbit_cluster: RabbitCluster, influxdb1: InfluxDB1, tmp_path: Path,
        reader: Literal["aiormq", "wire"]) -> None:
    settings = amqp_settings(rabbit_cluster, influxdb1, tmp_path / "data", (1, 2, 3), reader)
    count = 150
    async with running_service(settings) as service:
        assert service.alerting is not None
        seen = Seen(service.alerting)
        with mqtt_devices(rabbit_cluster, 2) as near, mqtt_devices(rabbit_cluster, 3) as far:
            published = near.publish(prefix_of(settings), count // 2)
            await eventually(lambda: near.acked == published, WITHIN_S, "PUBACKs from node 2")
            # The rest through another node: the same devices, the same partitions.
            published = far.publish(prefix_of(settings), count - count // 2, count // 2)
            await eventually(lambda: far.acked == published, WITHIN_S, "PUBACKs from node 3")
        await eventually(lambda: seen.complete(count), WITHIN_S, "every reading decoded")
        stored = await wait_stored(influxdb1, settings, count)
    assert seen.seqs == {device: list(range(count)) for device in DEVICES}  # once, in order
    assert {device: sorted(seqs) for device, seqs in stored.items()} == {
        device: list(range(count)) for device in DEVICES}


@pytest.mark.parametrize("victim", ["another node", "the consumer's node"])
async def test_a_rabbitmq_node_killed_under_load_loses_nothing_and_keeps_order(
        rabbit_cluster: RabbitCluster, influxdb1: InfluxDB1, tmp_path: Path,
        victim: str) -> None:
    # Devices on node 1; the service first on node 2. The victim is node 3 (it leads some
    # partitions: the leaders are balanced) or node 2 (the service moves on to node 3).
    settings = amqp_settings(rabbit_cluster, influxdb1, tmp_path / "data", (2, 3, 1))
    count = 400
    async with running_service(settings) as service:
        assert service.alerting is not None
        seen = Seen(service.alerting)
        assert consumer_node(rabbit_cluster, service) == 2
        killed = 2 if victim == "the consumer's node" else 3
        with mqtt_devices(rabbit_cluster, 1) as devices:
            published = devices.publish(prefix_of(settings), count)
            await eventually(lambda: devices.acked >= published // 3, WITHIN_S,
                             "a third of the readings acknowledged")
            acked_at_kill = devices.acked
            await asyncio.to_thread(rabbit_cluster.kill_node, killed)
            try:
                await eventually(lambda: devices.acked == published, WITHIN_S,
                                 "every reading acknowledged by the broker")
                await eventually(lambda: seen.complete(count), WITHIN_S,
                                 "every reading decoded")
                stored = await wait_stored(influxdb1, settings, count)
                now_on = consumer_node(rabbit_cluster, service)
            finally:
                await asyncio.to_thread(rabbit_cluster.start_node, killed)
    assert acked_at_kill < published  # killed under load, not after the publishing ended
    assert now_on != killed
    # Every reading stored (a redelivery overwrites its own point, so InfluxDB cannot show
    # a duplicate: the decoded order below shows replays).
    assert {device: sorted(seqs) for device, seqs in stored.items()} == {
        device: list(range(count)) for device in DEVICES}
    disorder = {device: seqs for device, seqs in seen.seqs.items() if not in_order(seqs)}
    assert disorder == {}
    assert set(seen.seqs) == set(DEVICES)


async def test_topics_come_back_as_the_devices_published_them(
        rabbit_cluster: RabbitCluster) -> None:
    """RabbitMQ's MQTT plugin turns a topic's `/` into `.`; the subscriber turns them back.
    A `.` in a topic is kept by RabbitMQ 3.10 and so comes back as a `/` (the settings
    refuse dotted topics for the AMQP input)."""
    prefix = unique_name("tm")
    topics = [f"{prefix}/water-level/pa-01/telemetry", f"{prefix}/water-level/pa_02/status",
              f"{prefix}/camera/odd*id/events", f"{prefix}/water-level/pa.03/telemetry"]
    expected = [*topics[:3], f"{prefix}/water-level/pa/03/telemetry"]
    settings = AmqpSettings(urls=[rabbit_cluster.amqp_url(1)], name=unique_name("tm"),
                            partitions=2, replicas=len(rabbit_cluster.nodes))
    async with AmqpSubscriber(settings, [f"{prefix}/#"], time.time_ns) as subscriber:
        await asyncio.wait_for(subscriber.subscribed.wait(), WITHIN_S)
        with mqtt_devices(rabbit_cluster, 3) as devices:
            for topic in topics:
                devices.client.publish(topic, b"{}", qos=1)
            await eventually(lambda: devices.acked == len(topics), WITHIN_S, "PUBACKs")
        await eventually(lambda: subscriber.backlog == len(topics), WITHIN_S, "deliveries")
        messages = subscriber.take(10)
        assert sorted(message.topic for message in messages) == sorted(expected)
        assert subscriber.ack(messages) == len(topics)


def test_in_order_allows_replays_and_refuses_skips() -> None:
    assert in_order([0, 1, 2, 1, 2, 3])  # 1 and 2 redelivered, then on
    assert not in_order([0, 2, 1])
    assert not in_order([1])
    assert not in_order([0, 1, 2, 3, 1, 4, 5])  # a stale 1 among newer ones, then a skip



# --- several instances share the partitions ----------------------------------------------

SHARED_DEVICES = [f"sh-{n}" for n in range(90)]  # every one of 6 partitions gets some


class Reader:
    """One instance's pipeline, reduced to what the partitions need: it takes what its
    subscriber delivers and acknowledges it at once (as the pipeline does once durable), or,
    while `holding`, keeps it unacknowledged (as a batch not yet written)."""

    def __init__(self, settings: AmqpSettings, topics: list[str]) -> None:
        self.subscriber = AmqpSubscriber(settings, topics, time.time_ns,
                                         on_takeover=self._took_over)
        self.acked: list[tuple[str, int]] = []
        self.held: list[tuple[str, int]] = []
        self.holding = False
        self.takeovers: list[int] = []  # how many partitions delivered to it at each call

    def _took_over(self) -> None:
        self.takeovers.append(len(self.subscriber.reading))

    async def run(self) -> None:
        subscriber = self.subscriber
        while True:
            await subscriber.wait(0.1)
            messages = subscriber.take(1000)
            keys = [(message.topic.split("/")[-2], orjson.loads(message.payload)["seq"])
                    for message in messages]
            if self.holding:
                self.held.extend(keys)
            else:
                assert subscriber.ack(messages) == len(messages)
                self.acked.extend(keys)


def active_consumers(cluster: RabbitCluster, name: str) -> dict[str, list[str]]:
    """Each of `name`'s partitions: its consumers' tags, the active one first."""
    rows = json.loads(cluster.rabbitmqctl(1, "list_consumers", "queue_name", "consumer_tag",
                                          "active", "--formatter", "json"))
    consumers: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda row: not row["active"]):
        if row["queue_name"].startswith(f"{name}.p"):
            consumers.setdefault(row["queue_name"], []).append(row["consumer_tag"])
    return consumers


def publish_shared(devices: MqttDevices, prefix: str, seqs: range) -> int:
    for seq in seqs:
        for device in SHARED_DEVICES:
            devices.client.publish(f"{prefix}/water-level/{device}/telemetry",
                                   orjson.dumps({"seq": seq}), qos=1)
    return len(seqs) * len(SHARED_DEVICES)


async def test_three_instances_read_their_home_partitions_and_take_over_a_stopped_ones(
        rabbit_cluster: RabbitCluster) -> None:
    prefix, name, partitions = unique_name("sh"), unique_name("siaga-sh"), 6
    readers = [Reader(AmqpSettings(
        urls=[rabbit_cluster.amqp_url(1 + n)], name=name, partitions=partitions,
        replicas=len(rabbit_cluster.nodes), instance=n, instances=3, standby_after_s=1.0),
        [f"{prefix}/#"]) for n in range(3)]
    home = {n: {f"{name}.p{p}" for p in range(partitions) if p % 3 == n} for n in range(3)}
    stacks = [AsyncExitStack() for _ in readers]
    try:
        async with asyncio.TaskGroup() as group:
            for stack, reader in zip(stacks, readers, strict=True):
                await stack.enter_async_context(reader.subscriber)
                stack.callback(group.create_task(reader.run()).cancel)
            for reader in readers:
                await asyncio.wait_for(reader.subscriber.standing_by.wait(), WITHIN_S)
            # Every partition: its home instance reads, the other two wait behind it.
            consumers = await asyncio.to_thread(active_consumers, rabbit_cluster, name)
            assert {queue: tags[0] for queue, tags in consumers.items()} == {
                queue: f"{queue}.i{n}" for n in range(3) for queue in home[n]}
            assert all(len(tags) == 3 for tags in consumers.values())

            readers[1].holding = True  # instance 1 will stop with these unacknowledged
            with mqtt_devices(rabbit_cluster, 2) as devices:
                published = publish_shared(devices, prefix, range(5))
                await eventually(lambda: devices.acked == published, WITHIN_S, "PUBACKs")
                await eventually(lambda: sum(len(r.acked) + len(r.held) for r in readers)
                                 == published, WITHIN_S, "every message delivered once")
                assert [r.subscriber.reading for r in readers] == [home[0], home[1], home[2]]
                by_reader = [{device for device, _ in r.acked + r.held} for r in readers]
                assert sum(map(len, by_reader)) == len(SHARED_DEVICES)  # one reader a device
                assert [len(r.takeovers) for r in readers] == [2, 2, 2]

                await stacks[1].aclose()  # instance 1 stops: its channel ends
                consumers = await asyncio.to_thread(active_consumers, rabbit_cluster, name)
                assert all(tags[0].endswith((".i0", ".i2")) for tags in consumers.values())
                assert all(len(tags) == 2 for tags in consumers.values())
                published += publish_shared(devices, prefix, range(5, 10))
                await eventually(lambda: devices.acked == published, WITHIN_S, "PUBACKs")
                everything = {(device, seq) for device in SHARED_DEVICES for seq in range(10)}
                await eventually(lambda: set(readers[0].acked + readers[2].acked) == everything,
                                 WITHIN_S, "every message acknowledged by instance 0 or 2")
            # Instance 1's partitions moved (each to one of the others, whichever registered
            # first), each announced before its first message; its unacknowledged messages
            # came again, before the newer ones and in order.
            moved = (readers[0].subscriber.reading | readers[2].subscriber.reading)
            assert moved == home[0] | home[1] | home[2]
            assert len(readers[0].takeovers) + len(readers[2].takeovers) == 4 + len(home[1])
            assert set(readers[1].held) <= set(readers[0].acked + readers[2].acked)
            for device in by_reader[1]:
                seqs = [seq for r in (readers[0], readers[2]) for d, seq in r.acked
                        if d == device]
                assert seqs == list(range(10)), device
            for stack in stacks:
                await stack.aclose()
    finally:
        for stack in stacks:
            await stack.aclose()
