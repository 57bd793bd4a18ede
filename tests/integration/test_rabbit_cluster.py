"""The 3-node RabbitMQ cluster of issue 18 does what Siaga will count on.

Devices publish MQTT to any node; the broker partitions by device topic into quorum queues;
a PUBACK means the message is in its queue; a node lost keeps every queued message and its
order; single-active-consumer gives each partition one reader and a standby that takes over
with the unacknowledged messages, in order. Each test keeps to a topic prefix and partitions
of its own; one that stops or kills a node starts it again before it ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import paho.mqtt.client as mqtt
from aio_pika.abc import AbstractIncomingMessage
from paho.mqtt.enums import CallbackAPIVersion

from siaga.broker.config import connect_packet, remaining_length
from siaga.sandbox.rabbitmq import USER, RabbitCluster
from tests.integration.support import unique_name
from tests.polling import eventually, wait_until

KIND = "water-level"
WITHIN_S = 60  # a ceiling for a broker on a loaded 2-core machine (elections, restarts)
PINGREQ = b"\xc0\x00"


class Publisher:
    """A paho MQTT 3.1.1 client on one node that records which messages got their PUBACK."""

    def __init__(self, cluster: RabbitCluster, node: int) -> None:
        self.connack: Any = None
        self._acked: set[int] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=unique_name("rabbit-pub-"), protocol=mqtt.MQTTv311)
        self.client.username_pw_set(USER, cluster.password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", cluster.mqtt_port(node))
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, WITHIN_S, "a CONNACK")
        assert not self.connack.is_failure, self.connack

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connack = reason

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            self._acked.add(mid)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; the message id to look for in `acked`."""
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        return info.mid

    def acked(self, *mids: int) -> bool:
        with self._lock:
            return all(mid in self._acked for mid in mids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def publisher(cluster: RabbitCluster, node: int) -> Iterator[Publisher]:
    client = Publisher(cluster, node)
    try:
        yield client
    finally:
        client.close()


def reading(device: str, seq: int) -> bytes:
    return orjson.dumps({"device": device, "seq": seq})


def publish_readings(client: Publisher, prefix: str, devices: list[str], count: int) -> None:
    """`count` readings per device, interleaved, each with its sequence number; returns once
    every one has its PUBACK."""
    mids = [client.publish(f"{prefix}/{KIND}/{device}/telemetry", reading(device, seq))
            for seq in range(count) for device in devices]
    wait_until(lambda: client.acked(*mids), WITHIN_S, f"PUBACKs for {len(mids)} readings")


async def read_queues(url: str, queues: tuple[str, ...], count: int,
                      ) -> dict[str, list[AbstractIncomingMessage]]:
    """Consume from `queues` through one node until `count` messages are in; ack them."""
    received: dict[str, list[AbstractIncomingMessage]] = {name: [] for name in queues}
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=count)
        for name in queues:
            async def keep(message: AbstractIncomingMessage, name: str = name) -> None:
                received[name].append(message)
            queue = await channel.get_queue(name, ensure=False)
            await queue.consume(keep)
        await eventually(lambda: sum(map(len, received.values())) >= count, WITHIN_S,
                         f"{count} messages from {len(queues)} queues")
        for messages in received.values():
            for message in messages:
                await message.ack()
    return received


def by_device(messages: list[AbstractIncomingMessage]) -> dict[str, list[int]]:
    """Each device's sequence numbers, in the order they came."""
    sequences: dict[str, list[int]] = {}
    for message in messages:
        body = orjson.loads(message.body)
        sequences.setdefault(body["device"], []).append(body["seq"])
    return sequences


def test_the_cluster_runs_three_nodes(rabbit_cluster: RabbitCluster) -> None:
    expected = sorted(rabbit_cluster.node_name(i) for i in (1, 2, 3))
    for i in (1, 3):  # as the first node and a joined one see it
        assert rabbit_cluster.running_nodes(i) == expected


async def test_each_device_lands_in_one_partition_and_devices_spread(
        rabbit_cluster: RabbitCluster) -> None:
    prefix = unique_name("rp")
    partitions = await rabbit_cluster.declare_partitions(prefix, 8, name=unique_name("b"))
    devices = [f"wl-{n:02d}" for n in range(20)]
    with publisher(rabbit_cluster, 2) as client:
        publish_readings(client, prefix, devices, 3)
        received = await read_queues(rabbit_cluster.amqp_url(1), partitions.queues, 60)
        # The same devices again, later: each keeps its partition.
        publish_readings(client, prefix, devices, 2)
        again = await read_queues(rabbit_cluster.amqp_url(3), partitions.queues, 40)

    home = {device: queue for queue, messages in received.items()
            for device in by_device(messages)}
    assert sorted(home) == devices
    for queue, messages in received.items():
        for device, sequence in by_device(messages).items():
            assert home[device] == queue, f"{device} in {home[device]} and {queue}"
            assert sequence == [0, 1, 2], device  # all of them, once each, in order
    for queue, messages in again.items():
        assert all(home[device] == queue for device in by_device(messages))
    assert len(set(home.values())) >= 3, home  # 20 devices over 8 partitions


def read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    """One MQTT packet: its first byte and its body; None if the broker closed the
    connection."""
    first = sock.recv(1)
    if not first:
        return None
    length, shift = 0, 0
    while True:
        digit = sock.recv(1)[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return first[0], body


@contextmanager
def raw_mqtt(cluster: RabbitCluster, node: int) -> Iterator[socket.socket]:
    """A bare MQTT 3.1.1 connection, CONNACK read: to see each packet in its order."""
    with socket.create_connection(("127.0.0.1", cluster.mqtt_port(node)), WITHIN_S) as sock:
        sock.sendall(connect_packet(unique_name("raw-"), USER, cluster.password))
        assert read_packet(sock) == (0x20, b"\x00\x00")  # CONNACK, accepted
        yield sock


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 1."""
    encoded = topic.encode()
    variable = struct.pack(">H", len(encoded)) + encoded + struct.pack(">H", packet_id)
    return b"\x32" + remaining_length(len(variable) + len(payload)) + variable + payload


async def test_a_puback_waits_until_the_message_is_in_its_queue(
        rabbit_cluster: RabbitCluster) -> None:
    """A quorum queue of two members, one stopped, cannot take a message (no majority). A
    raw MQTT client publishes there, then pings: the PINGRESP shows the broker has read the
    PUBLISH, and no PUBACK came before it. Then RabbitMQ 3.10 does one of two things,
    depending on whether the queue still names its lost leader: it holds the message until
    the member is back and then sends the PUBACK; or the queue refuses it at once (a
    publisher-confirm nack) and the MQTT plugin, which has no answer for a nack, closes the
    connection without a PUBACK, the message not queued, so the device sends it again.
    Either way a PUBACK means the message is in the queue, and it is there once."""
    prefix, held = unique_name("rc"), unique_name("held-")
    async with await aio_pika.connect(rabbit_cluster.amqp_url(1)) as connection:
        channel = await connection.channel()
        topic = await channel.get_exchange("amq.topic", ensure=False)
        queue = await channel.declare_queue(held, durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
        await queue.bind(topic, routing_key=f"{prefix}.{held}")
    _, members = rabbit_cluster.queue_leaders()[held]
    stopped = rabbit_cluster.node_index(members[0])
    publish_via = next(i for i in (1, 2, 3) if i != stopped)
    url = rabbit_cluster.amqp_url(publish_via)
    rabbit_cluster.stop_node(stopped)
    try:
        with raw_mqtt(rabbit_cluster, publish_via) as sock:
            sock.sendall(publish_packet(f"{prefix}/{held}", 1, b"held") + PINGREQ)
            assert read_packet(sock) == (0xD0, b"")  # PINGRESP first: no PUBACK yet
            rabbit_cluster.start_node(stopped)
            answer = read_packet(sock)
        if answer is None:  # refused and the connection closed: nothing may be queued
            assert await queued(url, held) == 0
            with raw_mqtt(rabbit_cluster, publish_via) as sock:
                sock.sendall(publish_packet(f"{prefix}/{held}", 1, b"held"))
                answer = read_packet(sock)
        assert answer == (0x40, b"\x00\x01")  # the PUBACK, for packet 1
    finally:
        rabbit_cluster.start_node(stopped)
    received = await read_queues(url, (held,), 1)
    assert [message.body for message in received[held]] == [b"held"]
    assert await queued(url, held) == 0


async def queued(url: str, queue_name: str) -> int:
    """How many messages `queue_name` holds ready."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)  # a passive declare
        count = queue.declaration_result.message_count
        assert count is not None
        return count


async def test_killing_a_queue_leader_loses_no_queued_message_nor_their_order(
        rabbit_cluster: RabbitCluster) -> None:
    prefix = unique_name("rd")
    partitions = await rabbit_cluster.declare_partitions(prefix, 4, name=unique_name("d"))
    devices = [f"wl-{n}" for n in range(8)]
    with publisher(rabbit_cluster, 2) as client:
        publish_readings(client, prefix, devices, 25)
    leaders = rabbit_cluster.queue_leaders()
    victim = rabbit_cluster.node_index(leaders[partitions.queues[0]][0])
    rabbit_cluster.kill_node(victim)
    try:
        reader = next(i for i in (1, 2, 3) if i != victim)
        received = await read_queues(rabbit_cluster.amqp_url(reader), partitions.queues, 200)
        new_leader = rabbit_cluster.queue_leaders(reader)[partitions.queues[0]][0]
    finally:
        rabbit_cluster.start_node(victim)
    assert rabbit_cluster.node_index(new_leader) != victim
    sequences: dict[str, list[int]] = {}
    for messages in received.values():
        for device, sequence in by_device(messages).items():
            assert device not in sequences, f"{device} in two partitions"
            sequences[device] = sequence
    assert sequences == {device: list(range(25)) for device in devices}


# A consumer in a process of its own, so that it can die as an instance of Siaga would:
# SIGKILL, its connection cut without a goodbye. It never acknowledges; it prints "ready"
# once the broker has its consumer, then each message's body, one per line.
CONSUMER = """
import asyncio, sys
import aio_pika

async def main():
    connection = await aio_pika.connect(sys.argv[1])
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    queue = await channel.get_queue(sys.argv[2], ensure=False)
    async def show(message):
        print(message.body.decode(), flush=True)
    await queue.consume(show)
    print("ready", flush=True)
    await asyncio.Future()

asyncio.run(main())
"""


async def test_a_standby_consumer_takes_over_the_unacknowledged_messages_in_order(
        rabbit_cluster: RabbitCluster) -> None:
    prefix = unique_name("re")
    partitions = await rabbit_cluster.declare_partitions(prefix, 1, name=unique_name("e"))
    (queue_name,) = partitions.queues
    active = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CONSUMER, rabbit_cluster.amqp_url(1), queue_name,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert active.stdout is not None
    try:
        line = await asyncio.wait_for(active.stdout.readline(), WITHIN_S)
        assert line == b"ready\n", line
        standby_got: list[AbstractIncomingMessage] = []
        async with await aio_pika.connect(rabbit_cluster.amqp_url(3)) as connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=100)
            queue = await channel.get_queue(queue_name, ensure=False)

            async def keep(message: AbstractIncomingMessage) -> None:
                standby_got.append(message)
            await queue.consume(keep)
            consumers = rabbit_cluster.rabbitmqctl(
                2, "list_consumers", "queue_name", "active", "activity_status")
            states = sorted(re.findall(rf"^{re.escape(queue_name)}\t(\S+)\t(\S+)$",
                                       consumers, re.MULTILINE))
            assert states == [("false", "waiting"), ("true", "single_active")], consumers

            bodies = [reading("wl-sac", seq) for seq in range(10)]
            with publisher(rabbit_cluster, 2) as client:
                mids = [client.publish(f"{prefix}/{KIND}/wl-sac/telemetry", body)
                        for body in bodies]
                wait_until(lambda: client.acked(*mids), WITHIN_S, "PUBACKs")
            seen = [await asyncio.wait_for(active.stdout.readline(), WITHIN_S)
                    for _ in bodies]
            assert [line.rstrip(b"\n") for line in seen] == bodies
            assert standby_got == []  # the active one has them all, unacknowledged

            active.kill()
            await active.wait()
            await eventually(lambda: len(standby_got) == len(bodies), WITHIN_S,
                             "the standby receiving the unacknowledged messages")
            assert [message.body for message in standby_got] == bodies
            assert all(message.redelivered for message in standby_got)
            for message in standby_got:
                await message.ack()
    finally:
        if active.returncode is None:
            active.kill()
            await active.wait()


def _descendants(root: int) -> set[int]:
    """`root` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has exited: only its entry is left)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_a_cluster_leaves_no_process_behind(tmp_path: Path) -> None:
    """A one-node cluster, killed and started again, then left: no beam, epmd or helper of
    either run remains (pgrep finds nothing with its data dir or epmd port either)."""
    seen: set[int] = set()
    with RabbitCluster(tmp_path, nodes=1) as cluster:
        for server in (cluster.node(1), cluster.epmd):
            assert server.pid is not None
            seen |= _descendants(server.pid)
        cluster.kill_node(1)
        cluster.start_node(1)
        assert cluster.node(1).pid is not None
        seen |= _descendants(cluster.node(1).pid)
        epmd_port = cluster.epmd.port
    assert len(seen) >= 4  # epmd; the start script, beam and erl_child_setup, twice
    assert _alive(seen) == set()
    for pattern in (str(tmp_path), f"epmd -port {epmd_port} "):
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        assert found.stdout == "", (pattern, found.stdout)
