"""Scale of devices: Siaga's memory and CPU per reading with 1,000 to 100,000 devices.

For each size the load mode writes the catalog (`--write-catalog`: the bundled Jakarta
devices plus N synthetic ones), Siaga starts with it, and the load mode publishes from N
devices at a steady rate, long enough for every device to report at least once. Reported:
RSS once ready (the catalog and rules loaded), peak RSS under load, and Siaga's CPU
seconds per reading stored while the load ran.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import feed
from bench.bed import fresh_bed
from bench.consumers import SIAGA, Running
from bench.influxdb import Influx
from bench.procs import usage

WARM_UP_S = 3.0  # load running before CPU is counted
EVERY_DEVICE = 1.2  # the run lasts this many times the time each device needs to report once


@dataclass(frozen=True, slots=True)
class Scale:
    devices: int
    rate: float  # readings/s the load mode achieved
    ready_rss_mb: float
    peak_rss_mb: float
    end_rss_mb: float
    cpu_us_per_reading: float
    expected: int
    landed: int
    ready_s: float  # siaga run started -> ready (catalog loaded, subscribed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(root: Path, influx: Influx, *, devices: int, rate: float,
            duration_s: float) -> Scale:
    catalog = feed.write_catalog(devices, root / f"catalog-{devices}.yaml")
    duration_s = max(duration_s, EVERY_DEVICE * devices / rate)
    with fresh_bed(root, influx, catalog) as bed, SIAGA.running(bed) as running:
        started = time.monotonic()
        running.wait_ready()
        ready_s = time.monotonic() - started
        ready = usage(running.pid)
        config = bed.siaga_config("siaga-load-config", 0, name="feed")
        with feed.live(config, bed.workdir / "feed.log", devices=devices, rate=rate,
                       max_duration_s=duration_s + 120) as load:
            time.sleep(WARM_UP_S)
            before, written_before = usage(running.pid), _written(running)
            time.sleep(duration_s)
            after, written_after = usage(running.pid), _written(running)
            fed = load.finish()
        landed = bed.wait_count(fed.readings)
        end = usage(running.pid)
    if ready is None or before is None or after is None or end is None:
        raise RuntimeError("siaga run exited during the scale run (see its log)")
    stored = written_after - written_before
    per_reading = (after.cpu_s - before.cpu_s) / stored * 1e6 if stored else 0.0
    return Scale(devices, fed.rate, ready.rss_mb, end.peak_rss_mb, end.rss_mb, per_reading,
                 fed.readings, landed, ready_s)


def _written(running: Running) -> float:
    return running.metrics().get("siaga_readings_written_total", 0.0)

