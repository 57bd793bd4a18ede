"""Peer (b): a batched paho-mqtt script. Lines collected, written every 5000 or every second.

A paho-mqtt subscriber (QoS 1, persistent session) whose callback turns each message into
line protocol (orjson, no validation) and appends it to a buffer; a writer thread POSTs the
buffer to /write when it holds 5000 lines or a second has passed, over one kept-alive
connection. paho acknowledges each message on receipt, before it is written: a crash
loses up to a batch. This is the fast script a careful user writes.

    python bench/peers/batched.py --mqtt-port P --prefix X --client-id C --influx-port I --db D
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

BATCH = 5000  # InfluxDB's recommended batch size
INTERVAL_S = 1.0
MEASUREMENT = {"water-level": "water_level", "air-quality": "air_quality", "traffic": "traffic"}


def to_line(measurement: str, device: str, reading: dict[str, Any]) -> str:
    """One reading as line protocol: numbers as floats, seq as an integer, ts in microseconds."""
    fields = ",".join(f"{key}={float(value)}" for key, value in reading.items()
                      if key not in ("ts", "seq") and isinstance(value, int | float))
    if "seq" in reading:
        fields += f",seq={int(reading['seq'])}i"
    return f"{measurement},device_id={device} {fields} {round(float(reading['ts']) * 1e6)}"


class Writer(threading.Thread):
    """Flushes the buffer on size or interval, and once more when stopped."""

    def __init__(self, port: int, db: str) -> None:
        super().__init__(daemon=True)
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.full = threading.Event()
        self.stopping = threading.Event()
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = f"/write?db={db}&precision=u"

    def add(self, lines: list[str]) -> None:
        with self.lock:
            self.lines.extend(lines)
            if len(self.lines) >= BATCH:
                self.full.set()

    def run(self) -> None:
        deadline = time.monotonic() + INTERVAL_S
        while not self.stopping.is_set():
            self.full.wait(max(0.0, deadline - time.monotonic()))
            self.flush()
            deadline = time.monotonic() + INTERVAL_S
        self.flush()

    def flush(self) -> None:
        with self.lock:
            lines, self.lines = self.lines, []
            self.full.clear()
        for start in range(0, len(lines), BATCH):
            body = "\n".join(lines[start:start + BATCH]).encode()
            self.connection.request("POST", self.path, body=body)
            self.connection.getresponse().read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--influx-port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    writer = Writer(args.influx_port, args.db)
    writer.start()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        _, kind, device, _ = msg.topic.rsplit("/", 3)
        data = orjson.loads(msg.payload)
        readings = data if isinstance(data, list) else [data]
        measurement = MEASUREMENT[kind]
        writer.add([to_line(measurement, device, r) for r in readings])

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, *_: c.subscribe(f"{args.prefix}/+/+/telemetry", qos=1)
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect("127.0.0.1", args.mqtt_port)
    client.loop_forever()
    writer.stopping.set()
    writer.full.set()
    writer.join(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
