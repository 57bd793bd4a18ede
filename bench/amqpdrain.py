"""Backlog drain, AMQP partitions vs Mosquitto: readings/s landed in InfluxDB, one instance.

A backlog of exact size is published over MQTT (paho, QoS 1, every PUBACK awaited) while
the service is away; then `python -m siaga run -c FILE` starts and the stored count is
polled every 0.5 s: the rate is from the first poll that saw readings to the first that
saw them all (as bench/throughput.py measures). One Siaga, issue 18's AMQP input against
its MQTT input; a first measurement, not yet a group of `python -m bench` (no peers, no
commit recorded: note it beside the figure).

    .venv/bin/python -m bench.amqpdrain --broker amqp|mosquitto --batch 1|100 --readings N

`--reader aiormq|wire` (AMQP) picks `amqp.reader`: aiormq's, or ingest.amqpwire's.

`--input-only` (AMQP) measures the input alone, in this process: `ingest.amqp`'s subscriber
takes and acknowledges every message as the pipeline would once durable, with no decoding
or storage; the rate is from the first message taken to the last, with the process's CPU
seconds over that span. `--profile FILE` writes cProfile's stats of that drain.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import aiormq
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.bed import broker_config, prime_session
from bench.influxdb import Influx
from bench.procs import cpu_percent, usage
from devices.topics import TopicScheme
from ingest.amqp import AmqpSubscriber, declare_partitions
from ingest.settings import AmqpSettings
from siaga.sandbox.influxdb import InfluxDB1
from siaga.sandbox.mosquitto import Mosquitto
from siaga.sandbox.ports import free_port
from siaga.sandbox.rabbitmq import USER, RabbitCluster
from simulators.load import _stream, synthetic_devices, write_catalog

DEVICES = 100
LINGER_S = 0.05  # ingest.linger_s's default: how long --input-only lets a batch gather


def messages(prefix: str, readings: int, batch: int) -> list[tuple[str, bytes]]:
    rng = random.Random(1)
    streams = [_stream(d, TopicScheme(prefix)) for d in synthetic_devices(DEVICES)]
    start = time.time() - 30 * 86400
    out = []
    for n in range(readings // batch):
        stream = streams[n % len(streams)]
        body = [stream.reading(start + stream.seq, rng) for _ in range(batch)]
        out.append((stream.topic, orjson.dumps(body[0] if batch == 1 else body)))
    return out


def publish(port: int, user: str | None, password: str | None,
            backlog: list[tuple[str, bytes]]) -> float:
    acked = 0
    lock = threading.Lock()
    done = threading.Event()

    def on_publish(*_: object) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked == len(backlog):
                done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"feed-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)
    if user:
        client.username_pw_set(user, password)
    client.max_inflight_messages_set(1000)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    for n, (topic, body) in enumerate(backlog):
        while n - acked >= 1000:  # paho stalled with 150,000 queued: keep 1000 outstanding
            time.sleep(0.001)
        client.publish(topic, body, qos=1)
    assert done.wait(1800), f"only {acked} of {len(backlog)} acknowledged"
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def drain(config: dict[str, object], workdir: Path, influx: Influx, database: str,
          expected: int) -> dict[str, float]:
    path = workdir / "siaga.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "siaga.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "siaga", "run", "-c", str(path)],
                               stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    started = time.monotonic()
    samples = []
    try:
        last_change, count = started, 0
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            new = influx.count(database)
            if new != count:
                last_change = now
            count = new
            samples.append((now - started, count, usage(process.pid)))
            if count >= expected or now - last_change > 30 or process.poll() is not None:
                break
    finally:
        process.terminate()
        process.wait(60)
    first = next(s for s in samples if s[1] > 0)
    last = next(s for s in samples if s[1] == samples[-1][1])
    span = last[0] - first[0]
    return {"landed": samples[-1][1], "expected": expected,
            "rate": (last[1] - first[1]) / span if span > 0 else 0.0,
            "first_landed_s": first[0], "span_s": span,
            "cpu_percent": cpu_percent(first[2], last[2]) if first[2] and last[2] else 0.0,
            "peak_rss_mb": max(s[2].peak_rss_mb for s in samples if s[2] is not None)}


async def drain_input(settings: AmqpSettings, topics: list[str], expected: int,
                      ) -> dict[str, float]:
    """Take and acknowledge `expected` messages from the partitions; the rate and CPU."""
    # The first take's messages arrived before the clock started: they are not counted.
    taken, first_taken, first_s, first_cpu = 0, 0, 0.0, 0.0
    async with AmqpSubscriber(settings, topics, time.time_ns) as subscriber:
        started = time.monotonic()
        while taken < expected and time.monotonic() - started < 600:
            await subscriber.wait(0.5)
            # As the pipeline does: let a batch gather (its linger_s), and acknowledge it
            # whole; acknowledging every few messages costs the broker and us a frame each.
            await asyncio.sleep(LINGER_S)
            messages = subscriber.take(5000)
            if messages and not taken:
                first_s, first_cpu = time.monotonic(), time.process_time()
                first_taken = len(messages)
            taken += len(messages)
            subscriber.ack(messages)
        span, cpu_s = time.monotonic() - first_s, time.process_time() - first_cpu
    rate = (taken - first_taken) / span if span > 0 else 0.0
    # CPU per message says more than the rate on a shared machine, where the broker's
    # nodes compete for the same cores.
    return {"landed": taken, "expected": expected, "rate": rate,
            "span_s": span, "cpu_percent": 100 * cpu_s / span if span > 0 else 0.0,
            "cpu_us_per_msg": 1e6 * cpu_s / max(1, taken - first_taken)}


def base_config(workdir: Path, influx: Influx, database: str, prefix: str, catalog: Path,
                ) -> dict[str, object]:
    return {"mqtt": {"url": "mqtt://127.0.0.1:1", "client_id": "siaga-drain",
                     "topic_prefix": prefix, "qos": 1},
            "influx": {"api": "v1", "url": influx.url, "database": database},
            "ingest": {"batch_size": 20000, "batch_messages": 5000, "flush_interval_s": 1.0},
            "http": {"host": "127.0.0.1", "port": free_port()},
            "data_dir": str(workdir / "data"), "catalog": str(catalog)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=["amqp", "mosquitto"], required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/amqp-bench/work"))
    parser.add_argument("--reader", choices=["aiormq", "wire"], default="aiormq",
                        help="AMQP: amqp.reader, what reads the deliveries")
    parser.add_argument("--input-only", action="store_true",
                        help="AMQP: drain the partitions with the subscriber alone (no storage)")
    parser.add_argument("--profile", type=Path, help="with --input-only: cProfile stats here")
    args = parser.parse_args()
    workdir = args.workdir / f"{args.broker}-{args.batch}-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    catalog = workdir / "catalog.yaml"
    write_catalog(synthetic_devices(DEVICES), catalog)
    prefix, database = "b1", f"drain_{uuid.uuid4().hex[:6]}"
    backlog = messages(prefix, args.readings, args.batch)
    with InfluxDB1(workdir / "influx") as server:
        influx = Influx(server)
        influx.create(database)
        config = base_config(workdir, influx, database, prefix, catalog)
        if args.broker == "mosquitto":
            with Mosquitto(workdir / "mosquitto", config=broker_config(workdir)) as broker:
                prime_session(broker.port, "siaga-drain", TopicScheme(prefix).subscriptions())
                config["mqtt"] = {**config["mqtt"], "url": f"mqtt://127.0.0.1:{broker.port}"}  # type: ignore[dict-item]
                fed_s = publish(broker.port, None, None, backlog)
                result = drain(config, workdir, influx, database, args.readings)
        else:
            with RabbitCluster(workdir / "rabbit", nodes=args.nodes) as cluster:
                name = "drain"

                async def declare() -> None:
                    async with aiormq.connect(cluster.amqp_url(1)) as connection:
                        channel = await connection.channel(publisher_confirms=False)
                        await declare_partitions(channel, TopicScheme(prefix).subscriptions(),
                                                 name=name, partitions=args.partitions,
                                                 replicas=args.nodes)
                asyncio.run(declare())
                fed_s = publish(cluster.mqtt_port(1), USER, cluster.password, backlog)
                urls = [cluster.amqp_url(i) for i in range(1, args.nodes + 1)]
                if args.input_only:
                    settings = AmqpSettings(urls=urls, name=name, partitions=args.partitions,
                                            replicas=args.nodes, prefetch=args.prefetch,
                                            reader=args.reader)
                    profile = cProfile.Profile() if args.profile else None
                    if profile is not None:
                        profile.enable()
                    result = asyncio.run(drain_input(
                        settings, TopicScheme(prefix).subscriptions(), len(backlog)))
                    if profile is not None and args.profile is not None:
                        profile.disable()
                        profile.dump_stats(args.profile)
                else:
                    config["ingest"] = {**config["ingest"], "input": "amqp"}  # type: ignore[dict-item]
                    config["amqp"] = {"urls": urls, "name": name, "partitions": args.partitions,
                                      "replicas": args.nodes, "prefetch": args.prefetch,
                                      "reader": args.reader}
                    result = drain(config, workdir, influx, database, args.readings)
    report: dict[str, object] = {**result, "broker": args.broker, "batch": args.batch,
                                 "nodes": args.nodes, "reader": args.reader,
                                 "fed_msgs_per_s": len(backlog) / fed_s,
                                 "load_avg": os.getloadavg()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
