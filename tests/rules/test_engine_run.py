"""A device's run of readings judged at once (`RuleEngine.evaluate_run`, and `Alerting.observe`
over batches) changes exactly what judging them one by one changes, in the same order."""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.kinds import Kind
from devices.readings import Reading, StatusUpdate
from devices.registry import Registry
from rules.alert import Alert, AlertStatus, Transition
from rules.alerting import Alerting
from rules.config import RulesFile
from rules.engine import RuleEngine
from tests.rules.books import MINUTE, T0, Clock, flood

SECOND = 1_000_000_000
# Per device: its kind, and the band its main value is drawn from, across its thresholds.
# katulampa: FloodLevel (81/151/201 cm), KatulampaRapidRise, and the flood wave it sends
# to depok and manggarai; manggarai: watched by cam-manggarai; the others: Congestion
# (mean under 15 km/h over 10 minutes) and AirQuality (ISPU over an hour).
BANDS: dict[str, tuple[Kind, float, float]] = {
    "katulampa": (Kind.WATER_LEVEL, 0.0, 260.0),
    "depok": (Kind.WATER_LEVEL, 150.0, 400.0),
    "manggarai": (Kind.WATER_LEVEL, 650.0, 1000.0),
    "sudirman-setiabudi": (Kind.TRAFFIC, 0.0, 50.0),
    "dki1-bundaran-hi": (Kind.AIR_QUALITY, 0.0, 300.0),
}
CAMERA = "cam-manggarai"


def values(kind: Kind, value: float) -> dict[str, float]:
    if kind is Kind.WATER_LEVEL:
        return {"level_cm": value}
    if kind is Kind.TRAFFIC:
        return {"speed_kmh": value, "volume_vph": 1200.0}
    return {"pm25": value, "pm10": round(value * 1.5, 1)}


# A message: a device, where its first reading lies against the previous message's last
# (minutes; back is a late backlog), and its readings: each a step from the previous one
# (seconds; zero repeats a time, back is late) and where its value lies in the band (%).
messages = st.lists(
    st.tuples(
        st.sampled_from(sorted(BANDS)),
        st.integers(min_value=-40, max_value=40),
        st.lists(st.tuples(st.integers(min_value=-120, max_value=400),
                           st.integers(min_value=0, max_value=100)), min_size=1, max_size=40),
    ),
    min_size=1, max_size=25,
)


def runs_of(drawn: list[tuple[str, int, list[tuple[int, int]]]]) -> list[list[Reading]]:
    """The drawn messages as readings, one list (a device's run) a message."""
    runs, at = [], T0
    for device, start_min, steps in drawn:
        kind, low, high = BANDS[device]
        at += start_min * MINUTE
        run = []
        for step_s, percent in steps:
            at += step_s * SECOND
            value = round(low + (high - low) * percent / 100, 1)
            run.append(Reading(kind, device, at, values(kind, value), None))
        runs.append(run)
    return runs


def open_alerts(at: int) -> list[Alert]:
    """What a restart hands the engine: alerts open before the readings."""
    return [flood(AlertStatus.FIRING, level="siaga-2", at=at, device="katulampa"),
            flood(AlertStatus.PENDING, level="siaga-3", at=at, device="depok")]


class Judged:
    """An engine and what it did, in order: its changes, and the open alerts it held
    without a change (which the service refreshes in the book as they come)."""

    def __init__(self, rules_file: RulesFile, registry: Registry, restored: bool) -> None:
        self.events: list[tuple[str, Transition | Alert]] = []
        self.engine = RuleEngine(rules_file, registry, on_unchanged=self.held)
        if restored:
            self.engine.restore(open_alerts(T0 - 5 * MINUTE))

    def held(self, alert: Alert) -> None:
        self.events.append(("unchanged", alert))

    def take(self, transition: Transition) -> None:
        """As the service does: a change is recorded, and a flood alert that begins gets a
        note (the cameras'), which later signals must carry too."""
        self.events.append(("change", transition))
        alert = transition.alert
        if transition.change in ("pending", "firing") and alert.rule == "FloodLevel":
            self.engine.annotate(alert.rule, alert.subject, {"note": str(len(self.events))})

    @property
    def transitions(self) -> list[Transition]:
        return [event for _, event in self.events if isinstance(event, Transition)]

    def state(self) -> tuple[object, ...]:
        engine = self.engine
        return (engine.alerts, engine.late_readings,
                {device: engine.latest_judged(device) for device in BANDS})


@given(drawn=messages, restored=st.booleans())
def test_a_run_judged_at_once_changes_what_its_readings_judged_one_by_one_change(
    rules_file: RulesFile, registry: Registry,
    drawn: list[tuple[str, int, list[tuple[int, int]]]], restored: bool,
) -> None:
    by_run, one_by_one = (Judged(rules_file, registry, restored) for _ in range(2))
    for run in runs_of(drawn):
        by_run.engine.evaluate_run(run, by_run.take)
        for reading in run:
            for transition in one_by_one.engine.evaluate(reading):
                one_by_one.take(transition)
    assert by_run.events == one_by_one.events
    assert by_run.state() == one_by_one.state()


def test_the_equivalence_check_sees_alerts_change_and_late_readings_counted(
    rules_file: RulesFile, registry: Registry,
) -> None:
    # The property above is only worth something if its runs do change alerts.
    rising = [(step, percent) for step, percent in zip([300] * 20, range(0, 100, 5),
                                                       strict=True)]
    drawn = [("katulampa", 0, rising), ("katulampa", -30, [(0, 50), (60, 10)]),
             ("katulampa", 40, [(300, 0)] * 3)]
    judged = Judged(rules_file, registry, restored=False)
    for run in runs_of(drawn):
        judged.engine.evaluate_run(run, judged.take)
    changes = {(t.alert.rule, t.change) for t in judged.transitions}
    assert {("FloodLevel", "firing"), ("FloodLevel", "resolved"),
            ("FloodWaveExpected", "firing")} <= changes
    assert judged.engine.late_readings == 2


def test_a_run_of_a_device_not_in_the_catalog_is_not_judged(
    rules_file: RulesFile, registry: Registry,
) -> None:
    judged = Judged(rules_file, registry, restored=False)
    judged.engine.evaluate_run([Reading(Kind.WATER_LEVEL, "nowhere", T0, {"level_cm": 999.0},
                                        None)], judged.take)
    assert (judged.transitions, judged.engine.late_readings) == ([], 0)


# --- the service's observe over batches -------------------------------------------------


class Recorded(Alerting):
    """The service, keeping every change it applies, in order."""

    applied: list[Transition]

    def _apply(self, transition: Transition) -> None:
        self.applied.append(transition)
        super()._apply(transition)


class ReadingByReading(Recorded):
    """The reference: `observe` as it was before runs, each reading judged on its own."""

    def observe(self, readings: Sequence[Reading], statuses: Sequence[StatusUpdate],
                received_ns: int) -> None:
        seen, latest, tracker = self.devices_seen, self.latest, self.tracker
        for device_id, _ in groupby(readings, lambda reading: reading.device_id):
            seen[device_id] = received_ns
            tracker.seen(device_id, received_ns)
            self.changed.add(device_id)
        cameras = self.cameras.active
        for reading in readings:
            device_id = reading.device_id
            newest = latest.get(device_id)
            if newest is None or reading.ts_ns >= newest.ts_ns:
                latest[device_id] = reading
            for transition in self.engine.evaluate(reading):
                if cameras and transition.change in ("pending", "firing"):
                    transition = self._with_cameras(transition)
                self._apply(transition)
            if cameras:
                if reading.kind is Kind.CAMERA:
                    self._camera_signals(self.cameras.reading(reading, self._lookup, latest))
                elif device_id in self.cameras.gauge_cameras:
                    self._camera_signals(self.cameras.rejudge(
                        self.cameras.gauge_cameras[device_id], self._lookup, latest))


def batches(seed: int) -> list[list[Reading]]:
    """What the pipeline hands `observe`: several messages a call, of several devices, a
    camera seeing water on and off among them, levels crossing thresholds, late ones, and
    single readings, some at their device's newest time again."""
    rng = random.Random(seed)
    devices = [*sorted(BANDS), CAMERA]
    out, at = [], T0
    newest: dict[str, int] = {}
    for _ in range(40):
        batch: list[Reading] = []
        for _ in range(rng.randint(1, 4)):
            device = rng.choice(devices)
            start = at + rng.randint(-20, 20) * MINUTE
            if device in newest and rng.random() < 0.2:
                start = newest[device]  # one reading, at the time of the newest again
                count = 1
            else:
                count = rng.choice([1, 1, rng.randint(2, 30)])
            ts = start
            for i in range(count):
                if not i or rng.random() >= 0.2:  # else the same time again, another value
                    ts = start + i * 30 * SECOND + rng.choice([0, 0, 0, -SECOND])
                newest[device] = max(ts, newest.get(device, ts))
                if device == CAMERA:
                    score = rng.choice([0.1, 0.5, 0.85, 0.9, 0.95])
                    batch.append(Reading(Kind.CAMERA, CAMERA, ts,
                                         {"water_score": score}, None))
                    continue
                kind, low, high = BANDS[device]
                value = round(rng.uniform(low, high), 1)
                batch.append(Reading(kind, device, ts, values(kind, value), None))
        at += rng.randint(0, 15) * MINUTE
        out.append(batch)
    return out


def book_of(service: Alerting) -> tuple[object, ...]:
    """What the alert book holds: every alert as operators see it, and the whole history
    (every change, repeat and note, with what was decided), in the order recorded."""
    return service.book.alerts(limit=10_000), list(reversed(service.book.history(None, 10_000)))


@pytest.mark.parametrize("seed", range(6))
async def test_observe_over_batches_records_what_reading_by_reading_recorded(
    rules_file: RulesFile, registry: Registry, tmp_path: Path, seed: int,
) -> None:
    results = []
    for name, kind in (("runs", Recorded), ("reference", ReadingByReading)):
        clock = Clock(T0)
        service = kind(rules_file, registry, tmp_path / name, webhook_url=None,
                       external_url="http://siaga.test", clock_ns=clock)
        service.applied = []
        async with service:
            for batch in batches(seed):
                clock.now = max(clock.now, max(r.ts_ns for r in batch))
                service.observe(batch, [], clock.now)
            results.append((service.applied, book_of(service), service.engine.alerts,
                            service.engine.late_readings, service.latest,
                            service.devices_seen, service.changed))
    runs, reference = results
    assert runs == reference
    assert any(t.alert.subject == CAMERA for t in runs[0])  # the camera's rules took part
    assert any(t.alert.rule == "FloodLevel" and t.alert.subject == "manggarai"
               for t in runs[0])  # and the gauge the camera watches changed
