"""Peer (a): the script users write first. One InfluxDB /write per MQTT message.

A paho-mqtt subscriber (QoS 1, persistent session) whose callback parses the JSON with
the standard library and POSTs the message's readings to /write over one kept-alive HTTP
connection, in paho's network thread. No validation, no dead letters, no rules. paho
acknowledges each message when the callback returns: after its write.

    python bench/peers/naive.py --mqtt-port P --prefix X --client-id C --influx-port I --db D
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MEASUREMENT = {"water-level": "water_level", "air-quality": "air_quality", "traffic": "traffic"}


def to_line(measurement: str, device: str, reading: dict[str, Any]) -> str:
    """One reading as line protocol: numbers as floats, seq as an integer, ts in microseconds."""
    fields = ",".join(f"{key}={float(value)}" for key, value in reading.items()
                      if key not in ("ts", "seq") and isinstance(value, int | float))
    if "seq" in reading:
        fields += f",seq={int(reading['seq'])}i"
    return f"{measurement},device_id={device} {fields} {round(float(reading['ts']) * 1e6)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--influx-port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    influx = http.client.HTTPConnection("127.0.0.1", args.influx_port, timeout=30)
    path = f"/write?db={args.db}&precision=u"

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        _, kind, device, _ = msg.topic.rsplit("/", 3)
        data = json.loads(msg.payload)
        readings = data if isinstance(data, list) else [data]
        body = "\n".join(to_line(MEASUREMENT[kind], device, r) for r in readings)
        influx.request("POST", path, body=body.encode())
        influx.getresponse().read()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, *_: c.subscribe(f"{args.prefix}/+/+/telemetry", qos=1)
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect("127.0.0.1", args.mqtt_port)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
