"""Latency under load: publish -> webhook received (alerts), publish -> queryable (storage).

Siaga runs with the default rules and a webhook receiver in this process; the load mode
publishes a steady background from its own process. A probe client publishes one reading
at a time for Pintu Air Manggarai (siaga3/2/1 at 751/851/950 cm) with a fresh `ts`:

- alerts: 960 cm and 900 cm in turn, so every probe changes the FloodLevel alert
  (siaga-1 <-> siaga-2, outside the 10 cm clear margin) and is notified; the clock stops
  when the matching webhook arrives at the receiver.
- storage: 500 cm (no alert); the clock stops when a query finds the point.

Probes are spaced by a random 50-250 ms, so they do not lock onto the 1 s flush interval.
"""

from __future__ import annotations

import queue
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench import feed
from bench.bed import Bed, fresh_bed
from bench.consumers import SIAGA
from bench.influxdb import Influx
from bench.receiver import Receiver

DEVICE = "manggarai"
ALERT_LEVELS = ((960.0, "siaga-1"), (900.0, "siaga-2"))  # each a change from the other
QUIET_LEVEL = 500.0  # below Siaga 3: stored, not alerting
WARM_UP_S = 3.0  # background load running before the first probe
GAP_S = (0.05, 0.25)
PROBE_TIMEOUT_S = 10.0  # a probe not answered by then counts as lost
MAX_LOST = 3  # in a row: the service is not keeping up; stop probing
STORAGE_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class Latencies:
    """One series of probes under one background load."""

    what: str  # "alert" or "storage"
    background_rate: float  # readings/s the load mode achieved
    samples_ms: list[float]
    lost: int

    def as_dict(self) -> dict[str, Any]:
        """The percentiles (the samples themselves are not kept)."""
        values = sorted(self.samples_ms)
        return {"what": self.what, "background_rate": self.background_rate,
                "samples": len(values), "lost": self.lost,
                "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
                "max_ms": values[-1] if values else None,
                "mean_ms": statistics.fmean(values) if values else None}


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return None
    rank = max(1, min(len(values), round(p / 100 * len(values) + 0.5)))
    return values[rank - 1]


class Probe:
    """A device-side QoS 1 client publishing the probe readings."""

    def __init__(self, bed: Bed) -> None:
        self.topic = f"{bed.prefix}/water-level/{DEVICE}/telemetry"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{bed.prefix}",
                                  protocol=mqtt.MQTTv311)
        self.client.connect("127.0.0.1", bed.broker.port)
        self.client.loop_start()

    def publish(self, level_cm: float) -> tuple[float, float]:
        """Publish now; returns (monotonic time of the publish, the reading's ts)."""
        ts = round(time.time(), 6)
        body = orjson.dumps({"ts": ts, "level_cm": level_cm})
        at = time.monotonic()
        self.client.publish(self.topic, body, qos=1)
        return at, ts

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def measure(root: Path, influx: Influx, catalog: Path, *, what: str, samples: int,
            background_rate: float, devices: int) -> Latencies:
    """Siaga under background load, `samples` probes of `what` ("alert" or "storage")."""
    with Receiver() as receiver, \
            fresh_bed(root, influx, catalog, webhook_url=receiver.url) as bed, \
            SIAGA.running(bed) as running:
        running.wait_ready()
        config = bed.siaga_config("siaga-load-config", 0, name="feed")
        with feed.live(config, bed.workdir / "feed.log", devices=devices,
                       rate=background_rate) as load:
            time.sleep(WARM_UP_S)
            probe = Probe(bed)
            try:
                if what == "alert":
                    measured, lost = _alerts(probe, receiver, samples)
                else:
                    measured, lost = _storage(probe, bed, samples)
            finally:
                probe.close()
            fed = load.finish()
    return Latencies(what, fed.rate, measured, lost)


def _series(samples: int, one: Callable[[int], float | None]) -> tuple[list[float], int]:
    measured: list[float] = []
    lost = in_a_row = 0
    for number in range(samples):
        latency = one(number)
        if latency is None:
            lost += 1
            in_a_row += 1
            if in_a_row >= MAX_LOST:
                break
        else:
            in_a_row = 0
            measured.append(latency * 1000)
        time.sleep(random.uniform(*GAP_S))
    return measured, lost


def _alerts(probe: Probe, receiver: Receiver, samples: int) -> tuple[list[float], int]:
    def one(number: int) -> float | None:
        level_cm, level = ALERT_LEVELS[number % 2]
        receiver.drain()
        published, _ = probe.publish(level_cm)
        deadline = published + PROBE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                hit = receiver.hits.get(timeout=left)
            except queue.Empty:
                return None
            if any(_is_probe_alert(alert, level) for alert in hit.alerts()):
                return hit.at - published
        return None

    return _series(samples, one)


def _is_probe_alert(alert: dict[str, Any], level: str) -> bool:
    labels = alert.get("labels", {})
    return (alert.get("status") == "firing" and labels.get("alertname") == "FloodLevel"
            and labels.get("device_id") == DEVICE and labels.get("level") == level)


def _storage(probe: Probe, bed: Bed, samples: int) -> tuple[list[float], int]:
    def one(number: int) -> float | None:
        published, ts = probe.publish(QUIET_LEVEL)
        ts_ns = round(ts * 1e9)
        # Within a microsecond: the float seconds may not convert to the very same ns.
        q = (f'SELECT count("level_cm") FROM "water_level" WHERE "device_id" = \'{DEVICE}\' '
             f"AND time >= {ts_ns - 1000} AND time <= {ts_ns + 1000}")
        while time.monotonic() - published < PROBE_TIMEOUT_S:
            result = bed.influx.query(q, bed.database)
            if "series" in result["results"][0]:  # type: ignore[index]
                return time.monotonic() - published
            time.sleep(STORAGE_POLL_S)
        return None

    return _series(samples, one)

