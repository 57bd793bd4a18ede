"""Recovery: InfluxDB stopped under a steady load, then back; how fast the spool drains.

Siaga writes to an InfluxDB of its own here (the one stopped). The load mode publishes at
a steady rate; after a warm-up InfluxDB is stopped (SIGTERM) for the outage, so Siaga
spools; then it is started again and the clock runs until Siaga's spool is empty
(`siaga_spool_segments` 0 on /metrics, polled every 100 ms). The load keeps running
throughout, so while draining Siaga also takes the live readings, which queue behind the
spool. The catch-up speed is what was written during the drain over its duration, and
the multiple is that speed over the live rate ((outage + drain) / drain when everything
queued behind the spool). The final count must equal what the load mode published.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import feed
from bench.bed import fresh_bed
from bench.consumers import SIAGA
from bench.influxdb import Influx
from siaga.sandbox.influxdb import InfluxDB1

WARM_UP_S = 5.0
POLL_S = 0.1
TAIL_S = 2.0  # live load after the drain, so the end of the drain is steady state


@dataclass(frozen=True, slots=True)
class Recovery:
    outage_s: float
    live_rate: float  # readings/s received while InfluxDB was up, before the outage
    spooled: int  # readings in the spool when InfluxDB came back
    drain_s: float  # InfluxDB answering again -> spool empty
    catch_up_rate: float  # readings/s written during the drain
    multiple: float  # catch_up_rate / live_rate
    expected: int
    landed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(root: Path, catalog: Path, *, outage_s: float, rate: float,
            devices: int) -> Recovery:
    with InfluxDB1(root / f"influx-recovery-{time.monotonic_ns()}") as server:
        influx = Influx(server)
        try:
            return _measure(root, influx, server, catalog, outage_s, rate, devices)
        finally:
            influx.close()


def _measure(root: Path, influx: Influx, server: InfluxDB1, catalog: Path, outage_s: float,
             rate: float, devices: int) -> Recovery:
    drain_cap_s = max(120.0, 10 * outage_s)
    with fresh_bed(root, influx, catalog) as bed, SIAGA.running(bed) as running:
        running.wait_ready()
        config = bed.siaga_config("siaga-load-config", 0, name="feed")
        with feed.live(config, bed.workdir / "feed.log", devices=devices, rate=rate,
                       max_duration_s=WARM_UP_S + outage_s + drain_cap_s + 60) as load:
            time.sleep(1.0)
            warm = running.metrics()
            time.sleep(WARM_UP_S - 1.0)
            down = running.metrics()
            live_rate = (down["siaga_readings_received_total"]
                         - warm["siaga_readings_received_total"]) / (WARM_UP_S - 1.0)
            server.stop()
            time.sleep(outage_s)
            server.start()  # returns once InfluxDB answers
            back_at, back = time.monotonic(), running.metrics()
            drained_at, drained = back_at, back
            while time.monotonic() - back_at < drain_cap_s:
                drained_at, drained = time.monotonic(), running.metrics()
                if drained["siaga_spool_segments"] == 0:
                    break
                time.sleep(POLL_S)
            time.sleep(TAIL_S)
            fed = load.finish()
        landed = bed.wait_count(fed.readings)
    drain_s = drained_at - back_at
    written = drained["siaga_readings_written_total"] - back["siaga_readings_written_total"]
    catch_up = written / drain_s if drain_s > 0 else 0.0
    spooled = int(back["siaga_readings_spooled_total"] - down["siaga_readings_spooled_total"])
    return Recovery(outage_s, live_rate, spooled, drain_s, catch_up,
                    catch_up / live_rate if live_rate else 0.0, fed.readings, landed)

