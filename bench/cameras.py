"""Cameras (issue 16): Siaga with 5,000 cameras beside the Jakarta catalog, and without them.

Two cases in turns, in the same invocation (ratios are taken within a run):

- `none`: the Jakarta catalog and the background devices, no synthetic camera;
- `cameras`: the same, plus `cameras` synthetic cameras (load mode: counts every 10 s each,
  detections `new` and `end` at 24 an hour each, plates made up, a few of them listed).

Each case: a fresh broker and database, a catalog written by the load mode (the bundled
Jakarta catalog, the background devices, the cameras), a watch list of the demo's plates
(so listed plates raise WatchlistVehicleSeen as in service), Siaga started and awaited,
one reading stored; then the load mode publishes the background (`devices` synthetic
devices at `rate` readings/s, as bench/latency.py's alert probes meet) and the cameras
from one process for `warm_up_s + duration_s`. Siaga's RSS and CPU are sampled every
second; the first `warm_up_s` are left out. Through the counted span, bench/latency.py's
alert probe (Manggarai's gauge crossing Siaga 1 <-> Siaga 2, publish -> the FloodLevel
webhook) runs in a thread, about every `probe_every_s`.

Afterwards every camera message is accounted for: points in `camera` (counted on `seq`)
plus the camera telemetry dead-lettered equal the readings the broker acknowledged to the
load mode, and points in `camera_event` (counted on `score`) plus the events
dead-lettered equal the detections acknowledged (dead letters from the service's
/api/deadletters/counts, split by topic when there are any).
"""

from __future__ import annotations

import contextlib
import csv
import json
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from bench import feed, latency
from bench.bed import Bed, fresh_bed
from bench.consumers import NO_PROXY, SIAGA, Running
from bench.influxdb import Influx
from bench.latency import percentile
from bench.live import probe
from bench.procs import Usage, child, cpu_percent, usage
from bench.provenance import REPO
from bench.receiver import Receiver
from siaga.sandbox.ports import free_port
from simulators.cameras import WATCHED_PLATES

MEASURE = "cameras"
SAMPLE_S = 1.0  # Siaga's RSS and CPU this often, as bench/live.py
CAMERA_FIELD = "seq"  # every load-mode camera reading carries one
EVENT_FIELD = "score"  # every detection carries one
CAMERA_KIND, EVENT_KIND = "camera", "camera-events"  # the load mode's summary, by kind
CATCH_UP_S = 60.0  # after the load stops, at most this long for the rest to land
STILL_S = 10.0  # ... or until nothing has moved for this long
KEPT_UP_LAG_S = 3.0  # behind by at most this many seconds of background when it stopped
FEED_SPARE_S = 120.0  # the load outlives the measurement; it is stopped explicitly
DEAD_LETTER_PAGE = 1000  # /api/deadletters?limit=: the API's LIMIT_MAX
SUMMARY_KIND = re.compile(r"^ {4}(\S+) +([\d,]+) +([\d,]+)$")  # a `by kind` row of the summary


@dataclass(frozen=True, slots=True)
class Case:
    """One case of the comparison: how many synthetic cameras publish beside the rest."""

    cameras: int  # 0: the Jakarta catalog and the background alone

    @property
    def name(self) -> str:
        return "cameras" if self.cameras else "none"


def measure(root: Path, influx: Influx, case: Case, *, devices: int, rate: float,
            duration_s: float, warm_up_s: float, probe_every_s: float) -> dict[str, Any]:
    catalog = write_catalog(root, devices, case.cameras)
    watchlist = write_watchlist(root / "watchlist.csv")
    span_s = warm_up_s + duration_s
    with Receiver() as receiver, \
            fresh_bed(root, influx, catalog, webhook_url=receiver.url) as bed, \
            _siaga(bed, watchlist) as running:
        running.wait_ready()
        probe(bed)
        # Counted on `seq`: the background's readings; the alert probes carry none.
        base = bed.count()
        config = bed.siaga_config("siaga-load-config", 0, name="feed")
        samples: list[tuple[float, Usage]] = []
        counted: tuple[float, int] | None = None  # (seconds, background stored) after warm-up
        with _feed(config, bed.workdir / "feed.log", devices=devices, cameras=case.cameras,
                   rate=rate, max_duration_s=span_s + FEED_SPARE_S) as load, \
                AlertProbes(bed, receiver, warm_up_s, probe_every_s) as alerts:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < span_s:
                time.sleep(SAMPLE_S)  # the sampling interval, not a synchronisation
                now = usage(running.pid)
                if now is None:
                    raise RuntimeError(f"siaga exited under the camera load (see its log in "
                                       f"{bed.workdir})")
                samples.append((elapsed, now))
                if counted is None and elapsed >= warm_up_s:
                    counted = (elapsed, bed.count() - base)
            stopped = time.monotonic() - started
            alert_ms, lost = alerts.stop()
            fed = load.finish()
        sent = sent_by_kind(load.log.read_text(errors="replace"))
        background = fed.readings - sent.get(CAMERA_KIND, (0, 0))[1]
        at_stop = bed.count() - base
        expected = Expected(background, sent.get(CAMERA_KIND, (0, 0))[1],
                            sent.get(EVENT_KIND, (0, 0))[0])
        stored = settle(bed, base, expected)
        dead = dead_letters(running.http_port or 0)
        metrics = _metrics(running)
        end = usage(running.pid)
    unacknowledged = max(sum(m for m, _ in sent.values()) - fed.messages, 0)
    stored_rate = None
    if counted is not None and stopped > counted[0]:
        stored_rate = (at_stop - counted[1]) / (stopped - counted[0])
    publishing_s = fed.elapsed_s or stopped  # the load mode's own clock, as bench/live.py
    lag_s = max(background - at_stop, 0) / (background / publishing_s) if background else 0.0
    ordered = sorted(alert_ms)
    return {
        "measure": MEASURE, "case": case.name, "cameras": case.cameras, "devices": devices,
        "rate": rate, "duration_s": duration_s, "warm_up_s": warm_up_s,
        "fed_rate": background / publishing_s, "stored_rate": stored_rate,
        "lag_s": lag_s, "kept_up": lag_s <= KEPT_UP_LAG_S and stored.background >= background,
        **steady_usage(samples, warm_up_s, end),
        "alert_samples": len(ordered), "alert_lost": lost,
        "alert_p50_ms": percentile(ordered, 50), "alert_p99_ms": percentile(ordered, 99),
        "alert_max_ms": ordered[-1] if ordered else None,
        "webhooks": receiver.total,
        **accounting(expected, stored, dead, unacknowledged),
        "camera_rate": expected.camera / publishing_s,
        "event_rate": expected.events / publishing_s,
        "detections_received": metrics.get("siaga_camera_detections_received_total"),
        "plates_listed": metrics.get('siaga_camera_plates_total{list="listed"}'),
        "plates_unlisted": metrics.get('siaga_camera_plates_total{list="unlisted"}'),
        "dead_letter_codes": dead.codes,
    }


def steady_usage(samples: list[tuple[float, Usage]], warm_up_s: float,
                 end: Usage | None) -> dict[str, float]:
    """RSS (median, peak) and CPU over the samples after the warm-up; VmHWM at the end."""
    steady = [sample for at, sample in samples if at >= warm_up_s] or [samples[-1][1]]
    rss = [u.rss_mb for u in steady]
    return {"median_rss_mb": median(rss), "peak_rss_mb": max(rss),
            "hwm_rss_mb": end.peak_rss_mb if end is not None else max(rss),
            "cpu_percent": cpu_percent(steady[0], steady[-1])}


# --- what the broker took, what was stored, what was dead-lettered ------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    """What the broker acknowledged to the load mode: background readings, camera readings,
    camera events (messages: each one detection's `new` or `end`)."""

    background: int
    camera: int
    events: int


@dataclass(frozen=True, slots=True)
class Stored:
    background: int
    camera: int
    events: int


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """The service's dead letters: by code, and split by channel when there are any."""

    codes: dict[str, int]
    camera: int  # on cameras' telemetry topics
    events: int  # on cameras' events topics
    other: int

    @property
    def total(self) -> int:
        return sum(self.codes.values())

    @property
    def unlisted(self) -> int:
        """Beyond the API's page (DEAD_LETTER_PAGE): of a channel nobody can tell."""
        return self.total - self.camera - self.events - self.other


def sent_by_kind(output: str) -> dict[str, tuple[int, int]]:
    """The load mode's summary, `by kind` rows: kind -> (messages, readings) sent."""
    kinds: dict[str, tuple[int, int]] = {}
    inside = False
    for line in output.splitlines():
        if line.strip() == "by kind":
            inside, kinds = True, {}  # the last summary printed wins
        elif line.strip() == "by fault":
            inside = False
        elif inside and (row := SUMMARY_KIND.match(line)):
            kinds[row.group(1)] = (int(row.group(2).replace(",", "")),
                                   int(row.group(3).replace(",", "")))
    return kinds


def accounting(expected: Expected, stored: Stored, dead: DeadLetters,
               unacknowledged: int) -> dict[str, Any]:
    """Stored plus dead-lettered against what the broker acknowledged, per measurement.

    The load mode's rows count what was sent; when the broker acknowledged every message
    (`unacknowledged` 0) and every dead letter's channel is known, that is what it took and
    nothing may be missing. Otherwise the camera counts may fall short by at most the
    unacknowledged messages and the dead letters of no known channel, together.
    """
    missing_camera = expected.camera - stored.camera - dead.camera
    missing_events = expected.events - stored.events - dead.events
    tolerance = unacknowledged + dead.unlisted
    accounted = (missing_camera >= 0 and missing_events >= 0
                 and missing_camera + missing_events <= tolerance)
    return {"camera_acked": expected.camera, "camera_stored": stored.camera,
            "camera_dead": dead.camera, "camera_missing": missing_camera,
            "events_acked": expected.events, "events_stored": stored.events,
            "events_dead": dead.events, "events_missing": missing_events,
            "background_published": expected.background, "background_stored": stored.background,
            "dead_letters": dead.total, "unacknowledged": unacknowledged,
            "accounted": accounted}


def settle(bed: Bed, base: int, expected: Expected) -> Stored:
    """Counts until everything landed, CATCH_UP_S passed, or nothing moved for STILL_S."""
    deadline = time.monotonic() + CATCH_UP_S
    last, moved = _stored(bed, base), time.monotonic()
    while (last.background < expected.background or last.camera < expected.camera
           or last.events < expected.events) and time.monotonic() < deadline \
            and time.monotonic() - moved < STILL_S:
        time.sleep(0.5)  # the polling interval of the counts
        now = _stored(bed, base)
        if now != last:
            last, moved = now, time.monotonic()
    return last


def _stored(bed: Bed, base: int) -> Stored:
    return Stored(bed.count() - base, _count(bed, "camera", CAMERA_FIELD),
                  _count(bed, "camera_event", EVENT_FIELD))


def _count(bed: Bed, measurement: str, field: str) -> int:
    return bed.influx.count(bed.database, [measurement], field)


def dead_letters(port: int) -> DeadLetters:
    """GET /api/deadletters/counts; when there are any, the newest listed, split by topic."""
    counts = _get_json(port, "/api/deadletters/counts")
    codes = {str(code): int(count) for code, count in counts["counts"].items()}
    if not sum(codes.values()):
        return DeadLetters(codes, 0, 0, 0)
    listed = _get_json(port, f"/api/deadletters?limit={DEAD_LETTER_PAGE}")["dead_letters"]
    camera = sum(1 for d in listed if "/camera/" in d["topic"]
                 and d["topic"].endswith("/telemetry"))
    events = sum(1 for d in listed if "/camera/" in d["topic"] and d["topic"].endswith("/events"))
    return DeadLetters(codes, camera, events, len(listed) - camera - events)


def _get_json(port: int, path: str) -> dict[str, Any]:
    with NO_PROXY.open(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        document: dict[str, Any] = json.loads(answer.read())
    return document


def _metrics(running: Running) -> dict[str, float]:
    """Siaga's /metrics, labelled samples kept under their whole name."""
    with NO_PROXY.open(f"http://127.0.0.1:{running.http_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


# --- the service, its catalog and watch list, the load ------------------------------------


def write_catalog(root: Path, devices: int, cameras: int) -> Path:
    """The Jakarta catalog, `devices` background devices and `cameras` cameras (made once)."""
    path = root / f"catalog-{devices}-cameras-{cameras}.yaml"
    if path.exists():
        return path
    config = path.with_name(path.stem + "-source.yaml")  # only the bundled catalog matters
    config.write_text("mqtt:\n  url: mqtt://127.0.0.1:1883\n")
    command = [*feed.SIMULATE, "-c", str(config), "--devices", str(devices),
               *_camera_args(cameras), "--write-catalog", str(path)]
    done = subprocess.run(command, capture_output=True, timeout=600, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"`siaga simulate --write-catalog` failed: {done.stderr[-800:]!r}")
    return path


def write_watchlist(path: Path) -> Path:
    """The demo's watch list (made-up plates): listed plates raise WatchlistVehicleSeen."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["plate", "reason", "agency"])
        writer.writerows([plate, "tunggakan pajak", "bapenda"] for plate in WATCHED_PLATES)
    return path


def _camera_args(cameras: int) -> list[str]:
    return ["--cameras", str(cameras)] if cameras else []


@contextlib.contextmanager
def _siaga(bed: Bed, watchlist: Path) -> Iterator[Running]:
    """`siaga run` as bench/consumers.py starts it, with the watch list configured."""
    port = free_port()
    config = bed.siaga_config(SIAGA.client_id(bed), port)
    document = yaml.safe_load(config.read_text())
    document["cameras"] = {"watchlist_file": str(watchlist)}
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    with child([sys.executable, "-m", "siaga", "run", "-c", str(config)],
               bed.workdir / "siaga-run.log") as process:
        yield Running(process.pid, port)


@contextlib.contextmanager
def _feed(config: Path, log: Path, *, devices: int, cameras: int, rate: float,
          max_duration_s: float) -> Iterator[feed.LiveFeed]:
    """The background and the cameras from one load-mode process, until finished."""
    command = [*feed.SIMULATE, "-c", str(config), "--devices", str(devices),
               *_camera_args(cameras), "--rate", f"{rate:g}",
               "--duration", f"{max_duration_s:g}", "--seed", str(feed.SEED)]
    with child(command, log, stop_signal=signal.SIGINT) as process:
        load = feed.LiveFeed(process, log)
        yield load
        if load.fed is None:
            load.finish()


class AlertProbes:
    """After the warm-up, bench/latency.py's alert probe in a thread until stopped: the gauge
    at 960 and 900 cm in turn (each a FloodLevel change that is notified), publish -> the
    matching webhook; a probe unanswered within latency.PROBE_TIMEOUT_S counts as lost."""

    def __init__(self, bed: Bed, receiver: Receiver, warm_up_s: float,
                 every_s: float) -> None:
        self.bed = bed
        self.receiver = receiver
        self.warm_up_s = warm_up_s
        self.every_s = every_s
        self.latencies_ms: list[float] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="alert-probes", daemon=True)

    def __enter__(self) -> AlertProbes:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(latency.PROBE_TIMEOUT_S + 1)

    def stop(self) -> tuple[list[float], int]:
        self.__exit__()
        return self.latencies_ms, self.lost

    def _probe(self) -> None:
        if self._stop.wait(self.warm_up_s):
            return
        gauge = latency.Probe(self.bed)
        try:
            number = 0
            while not self._stop.is_set():
                took = self._one(gauge, number)
                if took is not None:
                    self.latencies_ms.append(took * 1000)
                elif not self._stop.is_set():
                    self.lost += 1
                number += 1
                # Random gaps around `every_s`: off the 1 s flush beat, spread over the span.
                self._stop.wait(random.uniform(0.5, 1.5) * self.every_s)
        finally:
            gauge.close()

    def _one(self, gauge: latency.Probe, number: int) -> float | None:
        level_cm, level = latency.ALERT_LEVELS[number % 2]
        self.receiver.drain()
        published, _ = gauge.publish(level_cm)
        deadline = published + latency.PROBE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
            try:
                hit = self.receiver.hits.get(timeout=min(left, 0.1))
            except queue.Empty:  # look at the stop event, then wait again
                continue
            if any(_is_probe_alert(alert, level) for alert in hit.alerts()):
                return hit.at - published
        return None


def _is_probe_alert(alert: dict[str, Any], level: str) -> bool:
    labels = alert.get("labels", {})
    return (alert.get("status") == "firing" and labels.get("alertname") == "FloodLevel"
            and labels.get("device_id") == latency.DEVICE and labels.get("level") == level)
