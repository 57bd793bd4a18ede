"""How big each measurement is: the full plan, and the quick smoke check (`--quick`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

SCENARIOS = ("ceilings", "simulator", "throughput", "live", "latency", "scale", "recovery",
             "reports", "reports-year", "console", "cameras", "cores")
NOT_IN_QUICK = ("reports-year",)  # a year replayed takes tens of minutes: asked for by name
SYSTEMS = ("siaga", "node-red", "paho-batched", "paho-naive")
SHAPES = (1, 100)  # readings per message: single readings, and batches of 100


@dataclass(frozen=True, slots=True)
class Plan:
    runs: int = 3  # medians of this many
    devices: int = 1000  # synthetic devices publishing in throughput, latency and recovery
    mosquitto_messages: int = 300_000  # ~10 s at the broker's own rate
    influx_points: int = 1_000_000  # ~5 s at InfluxDB's own rate
    generator_emissions: int = 50_000  # the scenario generator, best of 3 (bench/simulator.py)
    flat_out_s: float = 10.0  # the load mode flat out, into a broker nobody reads
    # Backlog drains: exactly this many readings are queued, then drained (bench/backlog.py).
    # Sized so the fast systems drain for 10 s or more (0.5 s polls, 1 s flushes at the ends),
    # within the broker's queue limits (mosquitto.conf: 2,000,000 messages, 512 MiB).
    single_backlog: int = 500_000  # ~10 s at Siaga's ~50,000/s
    batch_backlog: int = 4_000_000  # 40,000 messages of 100, ~280 MB queued; ~15 s at 270,000/s
    drain_cap_s: float = 120.0  # a consumer still draining then is measured on what landed
    naive_cap_s: float = 20.0  # the naive script takes minutes for a backlog: its rate is steady
    live_rate: float = 10_000.0  # readings/s published live, every system in turn
    live_duration_s: float = 60.0
    live_warm_up_s: float = 10.0  # left out of the memory figures
    alert_samples: int = 200
    alert_rate: float = 5000.0  # background readings/s during the alert probes
    storage_samples: int = 100
    storage_rate: float = 10_000.0  # background readings/s during the storage probes
    scale_devices: tuple[int, ...] = (1000, 10_000, 100_000)
    scale_rate: float = 5000.0
    scale_duration_s: float = 30.0  # at least long enough for every device to report once
    outage_s: float = 60.0
    recovery_rate: float = 5000.0
    # Residents' reports (bench/reports.py): reports posted per intake measurement.
    reports_intake: int = 5000  # form-urlencoded, no photo: ~10 s at the 500/s target
    reports_photo: int = 500  # each with a JPEG of reports_photo_bytes: ~10 s at 50/s
    reports_photo_bytes: int = 200_000  # issue 14's "200 KB photo" (1280x960, quality ~78)
    reports_concurrency: int = 16  # connections of the load client, as `siaga simulate reports`
    reports_stats_repeats: int = 5  # ReportBook.stats of the year, median of this many
    # The console (issue 15, bench/console.py): Siaga live without consoles, then with them.
    console_clients: int = 50  # open consoles (aiohttp clients acting as the page)
    console_devices: int = 10_000  # the synthetic catalog a city-wide room watches
    console_rate: float = 10_000.0  # readings/s from all of them, live
    console_duration_s: float = 60.0  # counted, after the warm-up
    console_warm_up_s: float = 10.0  # the consoles load the state, Chromium its first render
    console_flips: int = 100  # a gauge above siaga1_cm and back, once every flip_every_s
    console_flip_every_s: float = 0.5
    console_page_loads: int = 5  # cold loads of the page until __siagaReady, median
    console_browser: bool = True  # one headless Chromium page open beside the consoles
    # Cameras (issue 16, bench/cameras.py): the Jakarta catalog and `devices` synthetic devices
    # at cameras_rate (the background the alert probes meet in bench/latency.py), without
    # and with cameras_count cameras (counts every 10 s each, detections at 24 an hour each).
    cameras_count: int = 5000  # the city's monitoring room: more than 5,000 CCTV cameras
    cameras_rate: float = 5000.0  # background readings/s, the same in both cases
    cameras_duration_s: float = 600.0  # counted, after the warm-up (issue 16: 10 minutes)
    cameras_warm_up_s: float = 10.0  # 5,000 cameras come online; left out of the figures
    cameras_probe_every_s: float = 1.0  # an alert probe about this often through the span
    # Cores (issue 18, bench/cores.py): each system's consumers confined to 1, 2 and all cores.
    # Smaller than the throughput scenario's backlogs: 7 setups x 2 shapes on 2 cores, with
    # the live rate and the latency probes, in about 18 minutes a run.
    # Readings/s are timed between polls 0.5 s apart (bench/throughput.py): 300,000 single
    # readings drained in about 5 s at 20261208-025209's rates, so the end poll alone
    # moved a rate by up to 10 %; 600,000 take about 10 s.
    cores_single_backlog: int = 600_000
    # One unrecorded drain of single readings by the first system before the cores drains:
    # here the first drain after a quiet spell ran 20-25 % slower than the next ones, on the
    # same code (38,253 then 45,167 and 49,063/s, at f7c15d3), and the first slot is
    # always Siaga's. 0: none.
    cores_warm_up_readings: int = 100_000
    cores_batch_backlog: int = 2_000_000  # ~10-20 s at 100,000-240,000/s
    cores_live_rate: float = 10_000.0  # readings/s, common to every system, count and shape
    cores_live_duration_s: float = 15.0
    cores_live_warm_up_s: float = 5.0  # left out of the memory figures
    # At half of Siaga's batch-100 drain rate at 1 core. Enough probes that the nearest-rank
    # p99 is not the slowest one (with 100 it is: rank 100 of 100); here it is the third
    # slowest. About a minute each at 0.05-0.25 s between probes.
    cores_alert_samples: int = 300
    cores_storage_samples: int = 200
    cores_partitions: int = 12  # amqp.partitions of the siaga-amqp instances (the default)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


FULL = Plan()
QUICK = Plan(runs=1, mosquitto_messages=60_000, influx_points=250_000, flat_out_s=4.0,
             single_backlog=100_000, batch_backlog=500_000, drain_cap_s=45.0, naive_cap_s=8.0,
             live_duration_s=20.0, live_warm_up_s=5.0, alert_samples=30, storage_samples=20,
             scale_duration_s=8.0, outage_s=10.0, reports_intake=1000, reports_photo=100,
             console_duration_s=20.0, console_flips=20, console_page_loads=3,
             cameras_duration_s=60.0, cores_single_backlog=30_000,
             cores_batch_backlog=200_000, cores_warm_up_readings=10_000,
             cores_live_duration_s=6.0, cores_live_warm_up_s=2.0,
             cores_alert_samples=20, cores_storage_samples=10)


def make_plan(*, quick: bool, runs: int | None, outage_s: float | None) -> Plan:
    plan = QUICK if quick else FULL
    if runs is not None:
        plan = replace(plan, runs=runs)
    if outage_s is not None:
        plan = replace(plan, outage_s=outage_s)
    return plan
