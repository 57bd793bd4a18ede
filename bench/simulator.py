"""The simulators' own speed: what the load comes from, so no figure is limited by it unseen.

Two figures, formerly speed assertions in the tests (`best > 20_000` in
tests/simulators/test_simulation.py), now reported here:

- generator: the scenario simulation's emissions per second, in this process, nothing
  published (what that test measured): every catalog device of `normal-day` reporting
  each second, 50,000 emissions, best of 3. Scenario playback is fed by it.
- load mode, flat out: `siaga simulate --devices N --rate max [--batch B] --duration S`
  into a fresh broker with no subscriber; readings/s the broker acknowledged (the load
  mode's summary) and the simulator process's CPU (100 = one core). The backlogs of the
  drains and the live loads come from this process.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from bench import feed
from bench.bed import broker_config
from devices.registry import bundled_catalog_path, load_catalog
from siaga.sandbox.mosquitto import Mosquitto
from simulators.scenario import load_scenario
from simulators.simulation import Simulation

GENERATOR_SCENARIO = "normal-day"
GENERATOR_INTERVAL_S = 1.0  # every device reports each second: the densest playback
GENERATOR_TRIES = 3


def generator(emissions: int) -> dict[str, object]:
    """Emissions/s of the scenario simulation, best of GENERATOR_TRIES."""
    catalog = load_catalog(bundled_catalog_path())
    scenario = load_scenario(GENERATOR_SCENARIO).with_intervals(GENERATOR_INTERVAL_S)
    rates = []
    for _ in range(GENERATOR_TRIES):
        stream = Simulation(catalog, scenario, 1).emissions()
        started = time.perf_counter()
        count = sum(1 for _ in itertools.islice(stream, emissions))
        rates.append(count / (time.perf_counter() - started))
    return {"what": "generator", "scenario": GENERATOR_SCENARIO, "emissions": emissions,
            "rate": max(rates), "rates": rates}


def load_mode(workdir: Path, *, devices: int, batch: int, duration_s: float) -> dict[str, object]:
    """`siaga simulate --rate max` for `duration_s` into a broker nobody subscribes to."""
    workdir.mkdir(parents=True)
    with Mosquitto(workdir / "mosquitto", config=broker_config(workdir)) as broker:
        config = workdir / "feed.yaml"  # read after the broker started: its port is final
        config.write_text(f"mqtt:\n  url: {broker.url}\n  topic_prefix: flat\n  qos: 1\n")
        fed, cpu_s = feed.flat_out(config, workdir / "feed.log", devices=devices, batch=batch,
                                   duration_s=duration_s)
    return {"what": "load mode", "shape": "single" if batch == 1 else f"batch{batch}",
            "devices": devices, "duration_s": duration_s, "messages": fed.messages,
            "readings": fed.readings, "elapsed_s": fed.elapsed_s, "rate": fed.rate,
            # The whole process's CPU (start-up included) over its publishing time: an
            # upper bound, within a few per cent over a run of several seconds.
            "cpu_percent": 100.0 * cpu_s / fed.elapsed_s if fed.elapsed_s > 0 else 0.0}
