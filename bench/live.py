"""Memory at a steady live rate: each system taking readings as they are published.

The backlog drains (bench/throughput.py) show how fast a system empties a queue, and
their peak RSS is the memory of that drain. A system that acknowledges on receipt
(Node-RED, the batched script) takes the whole backlog in as fast as the broker sends
it and buffers it in memory, so its drain memory says little about its memory in
service. Here the load mode publishes live, at a steady rate, to a system that is
already running and subscribed, and the system's RSS is sampled while it keeps up.

For each system: a fresh broker and database; its persistent session is primed; it
starts; one probe reading is published and awaited in InfluxDB (so it is subscribed and
writing before the load starts, with no start-up backlog); then `siaga simulate
--devices N --rate R` runs for the planned duration. RSS (VmRSS) and the stored count are
sampled every second; the first `warm_up_s` are left out, and the median and the peak
of the rest are reported, with the CPU over the same span. Whether the system kept up:
how far behind it was when the load stopped (in seconds of load; a few at most), and
whether everything published landed; the rate it stored over the steady span is
reported beside the rate published. A
system that fell behind is given a bounded time to catch up, then reported as it is.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench import feed
from bench.bed import Bed, fresh_bed, prime_session
from bench.consumers import Consumer
from bench.influxdb import Influx
from bench.procs import Usage, cpu_percent, usage

MEASURE = "live rate"
SAMPLE_S = 1.0  # RSS and count this often (a count query costs InfluxDB a little)
PROBE_TIMEOUT_S = 60.0  # until the probe reading is stored (Node-RED starts in seconds)
PROBE_DEVICE = "load-000001"  # a water-level device of the load mode's catalog
CATCH_UP_S = 10.0  # after the load stops, at most this long for the rest to land (a system
# that kept up needs a flush or two)
STILL_S = 5.0  # ... or until the count has not moved for this long (a system far behind)
KEPT_UP_LAG_S = 3.0  # behind by at most this many seconds of load when it stopped


@dataclass(frozen=True, slots=True)
class Live:
    """One system under a steady live load."""

    consumer: str
    rate: float  # readings/s asked of the load mode
    fed_rate: float  # readings/s the broker acknowledged to it, over its run
    published: int  # readings the broker acknowledged
    landed: int  # readings stored at the end (the probe not counted)
    stored_rate: float  # readings/s stored over the steady span
    lag_s: float  # published but not stored when the load stopped, in seconds of load
    kept_up: bool
    median_rss_mb: float  # over the steady span (after the warm-up)
    peak_rss_mb: float  # the highest sample of the steady span
    hwm_rss_mb: float  # VmHWM at the end: the process's high-water mark, start-up included
    cpu_percent: float  # over the steady span, 100 = one core
    warm_up_s: float
    duration_s: float
    timeline: list[tuple[float, int, float, float]]  # seconds, count, CPU s, RSS MB

    def as_dict(self) -> dict[str, Any]:
        return {"measure": MEASURE} | asdict(self)


def measure(root: Path, influx: Influx, catalog: Path, consumer: Consumer, *, rate: float,
            duration_s: float, warm_up_s: float, devices: int,
            webhook_url: str | None) -> Live:
    with fresh_bed(root, influx, catalog, webhook_url=webhook_url) as bed:
        prime_session(bed.broker.port, consumer.client_id(bed), consumer.filters(bed))
        with consumer.running(bed) as running:
            if running.http_port is not None:
                running.wait_ready()
            probe(bed)
            base = bed.count()
            config = bed.siaga_config("siaga-load-config", 0, name="feed")
            samples: list[tuple[float, int, Usage]] = []
            with feed.live(config, bed.workdir / "feed.log", devices=devices, rate=rate,
                           max_duration_s=duration_s + 60) as load:
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < duration_s:
                    time.sleep(SAMPLE_S)  # the sampling interval, not a synchronisation
                    now = usage(running.pid)
                    if now is None:
                        raise RuntimeError(f"{consumer.name} exited under the live load "
                                           f"(see its log in {bed.workdir})")
                    samples.append((elapsed, bed.count() - base, now))
                fed = load.finish()
            at_stop = bed.count() - base
            landed = catch_up(bed, base, fed.readings)
            end = usage(running.pid)
    return summarise(consumer.name, rate, fed, samples, at_stop, landed, warm_up_s,
                      duration_s, end)


def probe(bed: Bed) -> None:
    """One reading, published and awaited in InfluxDB: the system is subscribed and writing."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{bed.prefix}",
                         protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", bed.broker.port)
    client.loop_start()
    try:
        body = orjson.dumps({"ts": round(time.time(), 6), "seq": 0, "level_cm": 50.0})
        client.publish(f"{bed.prefix}/water-level/{PROBE_DEVICE}/telemetry", body,
                       qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    if bed.wait_count(1, PROBE_TIMEOUT_S) < 1:
        raise RuntimeError(f"the probe reading was not stored within {PROBE_TIMEOUT_S:g} s")


def catch_up(bed: Bed, base: int, published: int) -> int:
    """Until all landed, CATCH_UP_S passed, or the count stood still STILL_S; the count."""
    deadline = time.monotonic() + CATCH_UP_S
    last, moved = bed.count() - base, time.monotonic()
    while last < published and time.monotonic() < deadline and time.monotonic() - moved < STILL_S:
        time.sleep(0.5)  # the polling interval of the count
        count = bed.count() - base
        if count != last:
            last, moved = count, time.monotonic()
    return last


def summarise(name: str, rate: float, fed: feed.Fed, samples: list[tuple[float, int, Usage]],
               at_stop: int, landed: int, warm_up_s: float, duration_s: float,
               end: Usage | None) -> Live:
    steady = [sample for sample in samples if sample[0] >= warm_up_s] or samples[-1:]
    (t0, c0, u0), (t1, c1, u1) = steady[0], steady[-1]
    stored_rate = (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
    rss = [u.rss_mb for _, _, u in steady]
    lag_s = (fed.readings - at_stop) / fed.rate if fed.rate else 0.0
    # Behind by a few seconds at most (flushes are 1 s apart, samples too), and all landed.
    # The stored rate is reported beside it, not judged: over a short steady span a
    # flush more or less at either end moves it by several per cent.
    kept_up = lag_s <= KEPT_UP_LAG_S and landed >= fed.readings
    timeline = [(round(at, 2), count, round(u.cpu_s, 2), round(u.rss_mb, 1))
                for at, count, u in samples]
    return Live(name, rate, fed.rate, fed.readings, landed, stored_rate, max(lag_s, 0.0),
                kept_up, statistics.median(rss), max(rss),
                end.peak_rss_mb if end is not None else max(rss),
                cpu_percent(u0, u1), warm_up_s, duration_s, timeline)
