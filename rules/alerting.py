"""The alerting side of the service: readings (and residents' reports) -> rule engine ->
alert book -> dispatcher.

Rules run on receipt (the pipeline calls `observe` as soon as a message is decoded), not
after the storage flush. The wall-clock jobs (silent devices, repeats, silence expiry,
history pruning) run on an apscheduler `AsyncIOScheduler` in the same event loop, so the
engine and the alert book are only ever touched from that loop. The pipeline tells
`storage` when readings stop (and start again) being durable: the StorageUnavailable alert.
The application's citizens' desk hands over residents' reports (`observe_report`) and their
answers: `rules.citizens` correlates them with the sensors through the same engine and book.
Cameras' counts come as readings and their detections through `observe_detections`:
`rules.cameras` judges both, and names the cameras seeing water in a gauge's flood alert.

In a cluster (`Cluster`: several instances on one PostgreSQL) an instance judges the devices
of its partitions (`_owns`), sees the others' gauges and cameras through the shared book
(`refresh_shared_gauges`), hears every report through the shared report book (the desk
follows it), and only the leader runs the city-wide checks, raises the flood clusters and
pages unanswered reports (ReportOverdue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from devices.detections import Detection
from devices.kinds import Kind
from devices.readings import Reading, StatusUpdate
from devices.registry import Registry
from rules.alert import Alert, AlertStatus, Severity, Signal, Transition, ended, local_time
from rules.alertbook import AlertBook
from rules.alertmanager import AlertmanagerSettings
from rules.cameras import (
    CAMERA_OWN_RULES,
    CAMERAS_COUNT_NOTE,
    CAMERAS_NOTE,
    DETECTION_RULES,
    FLOOD_DETECTED,
    PARKING,
    VIOLATION_HOTSPOT,
    CameraRules,
    PlateLabels,
    detection_prefix,
)
from rules.citizens import (
    CITIZEN_FLOOD_REPORTS,
    FLOOD,
    JAM,
    REPORT_OVERDUE,
    CitizenReport,
    Correlator,
    Lookup,
    counted,
)
from rules.config import STORAGE_UNAVAILABLE, RulesFile
from rules.delivery import Deliverer
from rules.dispatch import Dispatcher
from rules.engine import RuleEngine
from rules.forwarding import Forwarder
from rules.offline import AREA_OFFLINE, DEVICE_OFFLINE, DeviceTracker, OfflineChecker
from rules.outbox import Outbox
from rules.routing import Router
from rules.seenboard import Heard, SeenBoard
from siaga_core.durations import to_ns
from siaga_core.errors import StorageError
from siaga_core.histogram import Histogram, Snapshot

if TYPE_CHECKING:
    from siaga_core.leader import Leadership

log = logging.getLogger(__name__)

REPEAT_CHECK_MAX_S = 60  # repeats come every repeat_interval (hours): a minute late is fine
SILENCE_CHECK_S = 15  # an expired silence restores its alerts within this many seconds
REFRESH_EVERY_NS = 30 * 10**9  # an unchanged open alert's record is refreshed at most this often
PRUNE_EVERY_H = 6  # history retention is in days; a few prunes a day keep the file small
CITIZENS_CHECK_S = 30  # a flood-report cluster lasts its 30-minute window; 30 s late is fine
STORAGE_SUBJECT: Final = "storage"
# Acks are withheld meanwhile: the broker's in-flight window fills and Siaga goes blind.
STORAGE_SEVERITY: Final = Severity.CRITICAL
ONLINE: Final = "online"
OFFLINE: Final = "offline"
SHARE_SEEN_S = 2  # what this instance heard reaches the leader's offline checks this late
# The rules a cluster's leader runs for the whole city: their alerts are the leader's.
LEADER_RULES: Final = frozenset({DEVICE_OFFLINE, AREA_OFFLINE, CITIZEN_FLOOD_REPORTS,
                                 REPORT_OVERDUE})
# The report categories the rules correlate with the sensors and cameras (the report book's
# codes): in a cluster every instance follows them in the shared book.
CORRELATED_CATEGORIES: Final = (FLOOD, JAM, PARKING)
# Readings come in runs of one device (a message each), and a device has one kind (ingest
# refuses another); a run is cut at a change of either, so its kind is known without a look.
_DEVICE_AND_KIND = attrgetter("device_id", "kind")
_TS = attrgetter("ts_ns")


@dataclass(frozen=True, slots=True)
class Cluster:
    """Several instances sharing the work (issue 18): where their shared state lives.

    The alert book, the outbox, the board of devices heard and the leader's lock are in
    the PostgreSQL at `database_url`.
    """

    database_url: str


@dataclass(frozen=True, slots=True)
class ForwarderCounts:
    """One Alertmanager's notification counts (Prometheus' `notifications_*` for it)."""

    alertmanager: str  # its URL, credentials redacted
    sent: int  # alerts it took (each re-send counts again)
    failed: int  # POSTs it did not take


@dataclass(frozen=True, slots=True)
class AlertingMetrics:
    """What the alerting side shows on /metrics, read at a scrape."""

    notification_latency: Mapping[str, Snapshot]  # channel (webhook, alertmanager) -> seconds
    forwarders: Sequence[ForwarderCounts]
    devices: Mapping[tuple[str, str], int]  # (kind, online|offline) -> devices


class Alerting:
    """Owns the engine, the alert book, the outbox and its deliverer, and the scheduled jobs."""

    def __init__(self, rules_file: RulesFile, registry: Registry, data_dir: Path, *,
                 webhook_url: str | None, external_url: str,
                 clock_ns: Callable[[], int] = time.time_ns,
                 plate_labels: PlateLabels | None = None,
                 alertmanagers: Sequence[AlertmanagerSettings] = (),
                 cluster: Cluster | None = None,
                 ) -> None:
        """`plate_labels`: a listed plate -> its watch-list row's labels (agency, reason),
        for WatchlistVehicleSeen; without it the alert names the plate alone.
        `alertmanagers`: Prometheus Alertmanagers told of every alert besides the webhooks.
        `cluster`: this instance is one of several (their shared PostgreSQL): the city-wide
        checks run on the leader only, and a device's state is taken from the shared book
        whenever its partition may have moved here (`ownership_changed`)."""
        self.rules_file = rules_file
        self.registry = registry
        self._data_dir = data_dir
        self._webhook_url = webhook_url
        self._external_url = external_url
        self._clock_ns = clock_ns
        self._alertmanagers = tuple(alertmanagers)
        self.forwarders: list[Forwarder] = []
        self.engine = RuleEngine(rules_file, registry, on_unchanged=self._unchanged)
        self._refreshed: dict[str, int] = {}  # fingerprint -> wall ns of its last refresh
        self._page_max_age_ns = to_ns(rules_file.alerting.page_max_age)
        self.tracker = DeviceTracker(started_ns=clock_ns())
        self.devices_seen: dict[str, int] = {}  # device id -> wall ns of its latest message
        self.latest: dict[str, Reading] = {}  # device id -> its newest reading (event time)
        # Devices heard from since the console's hub last took the set (it swaps in an
        # empty one every tick): the hot path's only cost for the live console.
        self.changed: set[str] = set()
        self.citizens = Correlator(rules_file.citizens, registry, rules_file.rules,
                                   rules_file.alerting.utc_offset)
        self.cameras = CameraRules(rules_file.cameras, registry, rules_file.rules, self.citizens,
                                   rules_file.alerting.utc_offset, plate_labels)
        self.cluster = cluster
        self.leadership: Leadership | None = None
        # Ownership epochs: a device's state is taken from the book again at its first
        # reading after each possible move of partitions (cluster only).
        self._epoch = 1
        self._loaded: dict[str, int] = {}  # device id -> the epoch its state was loaded in
        # camera id -> the epoch its detections (the events topic) were last heard in: a
        # camera's events and its counts may be in different partitions, read by different
        # instances, so its hotspots and plates have an owner of their own.
        self._events_loaded: dict[str, int] = {}
        self._shared: dict[str, int] = {}  # device id -> the wall ns the board last got
        self._statuses_heard: dict[str, tuple[bool, int]] = {}  # since the last publish
        self._leader_alerts_loaded = True  # False from gaining leadership to the reload
        self._leader_loading = asyncio.Lock()  # the offline check's and the reports' turns
        self._leadership_changes = 0  # a reload is used only if leadership held meanwhile
        # Cluster: whether this instance reads its broker now. One cut off from it while the
        # database is fine would judge every device silent, and the city by its own lost
        # connection: it gives the lead to an instance that reads (`Leadership`'s eager).
        self._input_up = False
        # Cluster: the gauges' open alerts in the shared book, whichever instance reads each
        # gauge, as of the last `refresh_shared_gauges` (every SHARE_SEEN_S).
        self._gauges = frozenset(device.id for device in registry.by_kind(Kind.WATER_LEVEL))
        self._shared_gauges: dict[tuple[str, str], Alert] = {}
        # ... and the cameras near a gauge that see water there (FloodDetected firing, the
        # picture not frozen), for the gauge's alert when another instance reads the camera.
        self._watching = frozenset(camera for cameras in self.cameras.gauge_cameras.values()
                                   for camera in cameras)
        self._shared_seeing: frozenset[str] = frozenset()
        # The newest readings as the rules of reports and cameras may use them: in a cluster,
        # only of the devices this instance reads now.
        self._latest_here: Mapping[str, Reading] = (
            self.latest if cluster is None else _ReadHere(self.latest, self._owns))
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Alerting:
        alerting = self.rules_file.alerting
        cluster = self.cluster
        shared = None if cluster is None else cluster.database_url
        self.outbox = self._stack.enter_context(Outbox(
            self._data_dir / "outbox.sqlite", clock_ns=self._clock_ns, database_url=shared))
        router = Router(self.rules_file.receivers, self.rules_file.routes, self._webhook_url)
        self.deliverer = Deliverer(self.outbox, router, clock_ns=self._clock_ns)
        self.dispatcher = Dispatcher(router, self.deliverer.enqueue, self._external_url,
                                     clock_ns=self._clock_ns)
        # The book hands each notification to the dispatcher before it commits "told".
        self.book = self._stack.enter_context(AlertBook(
            self._data_dir / "alerts.sqlite", database_url=shared,
            page_max_age_ns=to_ns(alerting.page_max_age),
            repeat_interval_ns=to_ns(alerting.repeat_interval), clock_ns=self._clock_ns,
            send=self.dispatcher.dispatch))
        self.forwarders = [Forwarder(settings, self.book, self._external_url,
                                     clock_ns=self._clock_ns)
                           for settings in self._alertmanagers]
        self.checker = OfflineChecker(self.rules_file.offline, self.registry, self.tracker,
                                      alerting.utc_offset)
        if self.cluster is not None:
            # Like the board's, the leader's psycopg is loaded only by a cluster's instance.
            from siaga_core.leader import Leadership

            self.board = self._stack.enter_context(SeenBoard(self.cluster.database_url))
            self.leadership = Leadership(self.cluster.database_url, "alerting",
                                         self._leading_changed, eager=lambda: self._input_up)
        # Alerts persisted by the last run: pending timers resume, firing ones stay firing.
        restored = self.book.restore()
        if self.cluster is not None:  # what the book says of others' gauges and cameras
            self._shared_gauges, self._shared_seeing = self._shared_of(restored)
        for transition in self.engine.restore(restored):
            self._apply(transition)
        self._resume(self.engine.alerts.values())
        self.cameras.touched.clear()  # the restored gauge alerts carry their notes already
        return self

    def _resume(self, alerts: Iterable[Alert]) -> None:
        """Reports' links and clusters, and cameras' notes, carry on over restored alerts."""
        for alert in list(alerts):
            notes = self.citizens.resume(alert)
            if notes:
                self.engine.annotate(alert.rule, alert.subject, notes)
            self.cameras.resume(alert)
            seeing = {key: alert.annotations[key] for key in (CAMERAS_NOTE, CAMERAS_COUNT_NOTE)
                      if key in alert.annotations}
            if seeing:  # a gauge's alert keeps naming its cameras over its next readings
                self.engine.annotate(alert.rule, alert.subject, seeing)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stack.aclose()

    # --- on receipt (called by the pipeline, in the event loop) ----------------------------

    def observe(self, readings: Sequence[Reading], statuses: Sequence[StatusUpdate],
                received_ns: int) -> None:
        seen, latest, tracker, changed = self.devices_seen, self.latest, self.tracker, self.changed
        if self.cluster is not None:
            self._take_over(readings, statuses)
        for status in statuses:
            tracker.status(status.device_id, status.online, status.received_ns)
            seen[status.device_id] = status.received_ns
            changed.add(status.device_id)
        cameras = self.cameras.active
        watched = self.cameras.gauge_cameras
        engine, judged = self.engine, self._judged
        for (device_id, kind), grouped in groupby(readings, _DEVICE_AND_KIND):
            # A batch message is one device's: seen once, and judged as one run, not 100x.
            seen[device_id] = received_ns
            tracker.seen(device_id, received_ns)
            changed.add(device_id)
            run = list(grouped)
            if cameras and (kind is Kind.CAMERA or device_id in watched) and self._each_reading(
                    device_id, kind):
                self._observe_each(run)  # camera rules judge again after each reading
                continue
            if len(run) == 1:  # a single reading's message: evaluate costs less than a run
                newest = run[0]
                kept = latest.get(device_id)
                if kept is None or newest.ts_ns >= kept.ts_ns:
                    latest[device_id] = newest
                for transition in engine.evaluate(newest):
                    judged(transition)
                continue
            # The newest reading, the last of equals (a late backlog keeps the newest): what
            # replacing it reading by reading at each one at least as new leaves.
            newest = max(reversed(run), key=_TS)
            kept = latest.get(device_id)
            if kept is None or newest.ts_ns >= kept.ts_ns:
                latest[device_id] = newest
            # Nothing reads `latest` before the run ends: only the camera rules do.
            engine.evaluate_run(run, judged)

    def _each_reading(self, device_id: str, kind: Kind) -> bool:
        """Whether a run is judged reading by reading: a camera's, and a gauge's whose
        cameras' rules would judge again after each of its readings (a camera near it
        firing, or gauges' notes still to write). Otherwise every `rejudge` would give
        nothing and change nothing: the run is judged at once."""
        if kind is Kind.CAMERA:
            return True
        cameras = self.cameras
        return device_id in cameras.gauge_cameras and (
            bool(cameras.touched) or cameras.rejudges(self._own_cameras(device_id),
                                                      self._lookup))

    def _observe_each(self, readings: Sequence[Reading]) -> None:
        """One device's readings, reading by reading: a camera's counts, or a gauge some
        cameras watch, whose camera rules judge again after each of its readings."""
        latest, cameras, engine = self.latest, self.cameras, self.engine
        for reading in readings:
            device_id = reading.device_id
            newest = latest.get(device_id)
            if newest is None or reading.ts_ns >= newest.ts_ns:  # a late backlog keeps the newest
                latest[device_id] = reading
            for transition in engine.evaluate(reading):
                self._judged(transition)
            if reading.kind is Kind.CAMERA:
                self._camera_signals(cameras.reading(reading, self._lookup, self._latest_here,
                                                     self._hears_events(device_id)))
            elif device_id in cameras.gauge_cameras:  # corroboration may change
                self._camera_signals(cameras.rejudge(self._own_cameras(device_id),
                                                     self._lookup, self._latest_here))

    def _own_cameras(self, gauge_id: str) -> list[str]:
        """The cameras near a gauge that this instance reads (all of them when alone): only
        those it judges again; another instance's are that instance's to judge. Right
        after partitions may have moved, a camera counts as read here only from its next
        reading on, which judges it afresh: a gauge's change meanwhile reaches it then."""
        return [camera for camera in self.cameras.gauge_cameras.get(gauge_id, ())
                if self._owns(camera)]

    def _judged(self, transition: Transition) -> None:
        """A change the rules made at a reading: a gauge's alert that begins names the
        cameras seeing water near it."""
        if self.cameras.active and transition.change in ("pending", "firing"):
            transition = self._with_cameras(transition)
        self._apply(transition)

    def ownership_changed(self) -> None:
        """Partitions may have moved to this instance (the AMQP input says when): each
        device's state is taken from the shared book again before its next reading."""
        self._epoch += 1

    def _take_over(self, readings: Sequence[Reading], statuses: Sequence[StatusUpdate]) -> None:
        for status in statuses:  # for the board: the leader judges silence city-wide
            self._statuses_heard[status.device_id] = (status.online, status.received_ns)
        epoch, loaded = self._epoch, self._loaded
        stale = {r.device_id for r in readings if loaded.get(r.device_id) != epoch}
        stale.update(s.device_id for s in statuses if loaded.get(s.device_id) != epoch)
        if not stale:
            return
        # Which of them another instance judged since this one did (the book holds a newer
        # change): only those are reloaded, so a device that stayed here keeps its windows
        # and notes when another partition moves in. Two reads, not one transaction: the
        # previous owner is gone or no longer reads the device, so nobody judges it now.
        # A camera's own alerts count too: its rules are not the engine's conditions, and
        # without them a camera coming back would keep what this instance judged before
        # (a flood still held as firing here swallows the next one; tests/rules/
        # test_cluster_cameras.py).
        engine = self.engine
        judged = self.book.last_judged(stale, engine.judging_rules(stale) | CAMERA_OWN_RULES)
        moved = {device_id for device_id in stale
                 if (mine := engine.latest_judged(device_id)) is None
                 or judged.get(device_id, mine) > mine}
        if moved:
            alerts = self.book.restore(engine.subjects_of(moved))
            engine.reload(moved, alerts, judged)
            for device_id in moved:
                self.cameras.forget(device_id, judged.get(device_id))
            self._resume(alert for alert in engine.alerts.values()
                         if alert.subject in engine.subjects_of(moved))
        # Only now: when the book cannot be read (StorageError), the batch comes again and
        # so does the takeover. A step already done is found done (its device's latest
        # judged is the book's), so doing the rest again changes nothing twice.
        for device_id in stale:
            loaded[device_id] = epoch

    def _take_over_events(self, detections: Sequence[Detection]) -> None:
        """The cameras' hotspots and plates, from the book, when another instance changed
        one since this instance last heard the camera's detections. They are the events
        reader's: the events topic is partitioned apart from the counts', so the readings'
        takeover neither looks them up nor makes this instance their owner. Their alerts
        have subjects of their own (`camera-id/...`): without this, a hotspot or a plate the
        other instance raised would be raised here again as new, or never ended (nothing
        here held it), and one it ended would be ended again. What this instance counted of
        the camera's detections is dropped; the open alerts hold as after a restart
        (`CameraRules.resume`). Marked as heard only once the book was read, as above."""
        epoch, heard = self._epoch, self._events_loaded
        stale = {d.device_id for d in detections if heard.get(d.device_id) != epoch}
        if not stale:
            return
        cameras = self.cameras
        camera_ids = [device_id for device_id in stale if cameras.is_camera(device_id)]
        prefixes = {camera_id: detection_prefix(camera_id) for camera_id in camera_ids}
        found = self.book.under(prefixes.values(), DETECTION_RULES)
        newest: dict[str, int] = {}
        for alert in found:
            camera_id = alert.subject.split("/", 1)[0]  # device ids hold no slash
            newest[camera_id] = max(newest.get(camera_id, 0), alert.evaluated_at_ns)
        moved = tuple(prefixes[camera_id] for camera_id in camera_ids
                      if camera_id in newest and ((mine := cameras.events_ns(camera_id)) is None
                                                  or newest[camera_id] > mine))
        if moved:
            self.engine.reload_under(DETECTION_RULES, moved, found)
            for prefix in moved:
                cameras.forget_detections(prefix.removesuffix("/"))
            self._resume(alert for alert in self.engine.alerts.values()
                         if alert.rule in DETECTION_RULES and alert.subject.startswith(moved))
        for device_id in stale:
            heard[device_id] = epoch

    def _hears_events(self, camera_id: str) -> bool:
        """Whether this instance reads the camera's detections now: always when alone; in a
        cluster, once one came since partitions last moved. Only then do its hotspots and
        plates end here on the camera's counts, or name residents' reports: an instance
        reading only the counts would end what the events' reader keeps alive."""
        return self.cluster is None or self._events_loaded.get(camera_id) == self._epoch

    def observe_detections(self, detections: Sequence[Detection], received_ns: int) -> None:
        """Judge cameras' detections (the events channel): ViolationHotspot and
        WatchlistVehicleSeen (rules.cameras). One event id counts once, however often its
        new, update or end arrive. Raises StorageError when the alert book cannot record.
        """
        if not self.cameras.active:
            return
        if self.cluster is not None:
            self._take_over_events(detections)
        seen, changed = self.devices_seen, self.changed
        for detection in detections:
            seen[detection.device_id] = received_ns
            changed.add(detection.device_id)
            self._camera_signals(self.cameras.detection(detection))

    def _camera_signals(self, signals: Sequence[Signal]) -> None:
        """Apply the camera rules' signals; then name the cameras seeing water in the flood
        alerts of the gauges near them, if that changed."""
        for signal in signals:
            transition = self.engine.signal(signal, self.cameras.resolution)
            if transition is not None:
                self._apply(transition)
        touched = self.cameras.touched
        while touched:
            self._annotate_gauge(touched.pop())

    def _annotate_gauge(self, gauge_id: str) -> None:
        if not self._owns(gauge_id):
            return  # its reader names the cameras in its alert
        notes = self.cameras.gauge_notes(gauge_id, self._sees)
        for rule in self.cameras.ladders:
            alert = self.engine.current(rule, gauge_id)
            if alert is None or alert.annotations.get(CAMERAS_NOTE, "") == notes[CAMERAS_NOTE]:
                continue
            noted = self.engine.annotate(rule, gauge_id, notes)
            if noted is not None:
                seeing = notes[CAMERAS_NOTE] or "none"
                self.book.observe(noted, self._clock_ns(), note=f"cameras seeing water: {seeing}")

    def _with_cameras(self, transition: Transition) -> Transition:
        """A gauge's ladder alert that begins, with the cameras seeing water near it."""
        alert = transition.alert
        cameras = self.cameras
        if alert.rule not in cameras.ladders or alert.subject not in cameras.gauge_cameras:
            return transition
        notes = self.cameras.gauge_notes(alert.subject, self._sees)
        if notes[CAMERAS_NOTE] == alert.annotations.get(CAMERAS_NOTE, ""):
            return transition
        noted = self.engine.annotate(alert.rule, alert.subject, notes)
        return transition if noted is None else Transition(transition.change, noted,
                                                           transition.previous)

    def _apply(self, transition: Transition) -> None:
        alert = transition.alert
        try:
            notification = self.book.apply(transition)  # dispatched by the book when paged
        except StorageError:
            if alert.rule in LEADER_RULES:
                # The engine took the step the book refused: the leader's checks would not
                # take it again (a resolved alert is no longer held), and the book would
                # keep it firing and repeating. Its alerts are read again at its next turn
                # (`take_up_leadership`), in a cluster or not.
                self._leader_alerts_loaded = False
            raise
        log.info("alert %s %s %s (%s)%s", alert.rule, alert.subject, transition.change,
                 alert.labels.get("level", alert.severity),
                 f": notifying ({notification.reason})" if notification else "")

    def _unchanged(self, alert: Alert) -> None:
        """An open alert that held without a change: refresh its record now and then.

        This is how an alert first seen in a stale backlog (recorded, not paged) is paged
        once fresh readings show it still holds, and how keep-firing-for survives a
        restart. Throttled, because a write per reading would put a disk sync on the
        hot path.
        """
        now = self._clock_ns()
        if alert.evaluated_at_ns < now - self._page_max_age_ns:
            return  # still replaying the past: nothing to tell yet, and no throttle spent
        if now - self._refreshed.get(alert.fingerprint, 0) < REFRESH_EVERY_NS:
            return
        self._refreshed[alert.fingerprint] = now
        notification = self.book.observe(alert, now)
        if notification is not None:
            log.info("alert %s %s still holds: notifying (%s)", alert.rule, alert.subject,
                     notification.reason)

    # --- residents' reports (called by the citizens' desk, in the event loop) ------------

    def observe_report(self, report: CitizenReport) -> list[str]:
        """Correlate a resident's report with the sensors: the fingerprints it is linked to.

        A banjir report may found or join a CitizenFloodReports cluster, be linked to a
        gauge's flood alert near it and corroborate cameras seeing water; a macet report is
        linked to a congestion alert near it; a parkir-liar report is named in the camera
        hotspots near it. A linked alert's annotations count the report, in the book at
        once and in its next notification; a change of annotations pages nobody
        (`content_digest`). The same report twice is counted once, so the desk may read
        reports again after a restart. Raises StorageError when the alert book cannot record.

        One instance: called by the desk that took the report. In a cluster every instance
        calls it for every report of the correlated categories (CORRELATED_CATEGORIES) that
        any instance stored, in the order stored: each links the report to the alerts of
        the devices it reads, and keeps the city's flood clusters and recent reports (the
        same reports in the same order make the same clusters), which only the leader
        raises and resolves, naming its gauge's level from the shared book whichever
        instance reads the gauge.
        """
        now = self._clock_ns()
        linked = self._flood_cluster(report, now, self._lookup)
        for alert in self.citizens.linkable(report, self._own_alert):
            notes = counted(alert, report.id)
            noted = None if notes is None else self.engine.annotate(alert.rule, alert.subject,
                                                                    notes)
            if noted is not None:
                self.book.observe(noted, now, note=f"citizen report {report.id} linked")
            linked.append(alert.fingerprint)
        if self.cameras.active:
            linked += self._report_to_flood_cameras(report)
            linked += self._report_to_hotspots(report, now)
        return linked

    def _owns(self, device_id: str) -> bool:
        """Whether this instance reads the device now: always when alone; in a cluster,
        once a reading of it came since partitions last moved. The engine's copy of another
        instance's device dates from start-up or from before its partition moved away."""
        return self.cluster is None or self._loaded.get(device_id) == self._epoch

    def _own_alert(self, rule: str, subject: str) -> Alert | None:
        """An open alert of a device this instance reads: the ones it may annotate."""
        return self.engine.current(rule, subject) if self._owns(subject) else None

    def _lookup(self, rule: str, subject: str) -> Alert | None:
        """An open alert, as the rules of reports and cameras look a gauge's up: in a
        cluster, a gauge this instance does not read now (no reading since partitions last
        moved) is looked up in the shared book's copy, not in the engine, whose copy of it
        dates from start-up or from before its partition moved away."""
        if subject not in self._gauges or self._owns(subject):
            return self.engine.current(rule, subject)
        return self._shared_gauges.get((rule, subject))

    def _shared_of(self, alerts: Iterable[Alert],
                   ) -> tuple[dict[tuple[str, str], Alert], frozenset[str]]:
        """From the book's open alerts (newest episode first): the gauges', and the cameras
        near a gauge seeing water (FloodDetected firing, the picture not frozen)."""
        gauges: dict[tuple[str, str], Alert] = {}
        seeing = set()
        for alert in alerts:
            if alert.subject in self._gauges:
                gauges.setdefault((alert.rule, alert.subject), alert)
            elif (alert.subject in self._watching and alert.rule == FLOOD_DETECTED
                  and alert.status is AlertStatus.FIRING
                  and "camera_frozen" not in alert.annotations):
                seeing.add(alert.subject)
        return gauges, frozenset(seeing)

    def _sees(self, camera_id: str) -> bool:
        """Whether a camera near a gauge sees water: judged here if this instance reads it,
        else as the shared book had it at the last refresh."""
        if self._owns(camera_id):
            return camera_id in self.cameras.seeing
        return camera_id in self._shared_seeing

    async def refresh_shared_gauges(self) -> None:
        """Cluster: read the open alerts of the gauges and of the cameras near them from the
        shared book; judge again this instance's cameras near a gauge whose alert changed
        there, and name again the cameras seeing water in the alerts of its gauges near a
        camera another instance reads that began or stopped seeing it. Raises StorageError."""
        def read() -> tuple[dict[tuple[str, str], Alert], frozenset[str]]:
            return self._shared_of(self.book.restore(self._gauges | self._watching))

        found, seeing = await asyncio.to_thread(read)
        before, self._shared_gauges = self._shared_gauges, found
        changed = {key[1] for key in found.keys() | before.keys()
                   if _level(before.get(key)) != _level(found.get(key))}
        cameras = self.cameras
        if not cameras.active:
            return
        near = sorted({camera for gauge in changed for camera in self._own_cameras(gauge)})
        self._camera_signals(cameras.rejudge(near, self._lookup, self._latest_here))
        began_or_stopped = seeing ^ self._shared_seeing
        self._shared_seeing = seeing
        for gauge, watching in cameras.gauge_cameras.items():
            if not began_or_stopped.isdisjoint(watching):
                self._annotate_gauge(gauge)

    def _flood_cluster(self, report: CitizenReport, now: int, lookup: Lookup) -> list[str]:
        """The report into the flood clusters: the fingerprint of its cluster's alert."""
        signal = self.citizens.cluster(report, now, lookup, self._latest_here)
        if signal is None or not self.raises_city_alerts:
            return []
        transition = self.engine.signal(signal, self.citizens.resolution)
        if transition is not None:
            self._apply(transition)
        cluster = self.engine.current(signal.rule, signal.subject)
        if cluster is None:
            return []
        if transition is None:  # a report joined: a new count for the book, no page
            self.book.observe(cluster, now)
        return [cluster.fingerprint]

    @property
    def raises_city_alerts(self) -> bool:
        """Whether this instance raises the alerts of the reports city-wide (the flood
        clusters, ReportOverdue): always, unless in a cluster. A cluster's other instances
        keep the clusters without raising them; a new leader raises them once it holds its
        predecessor's alerts (`take_up_leadership`), as any instance does once it read them
        again after the book refused one of their changes."""
        return self.leading and self._leader_alerts_loaded

    def _report_to_flood_cameras(self, report: CitizenReport) -> list[str]:
        """A banjir report may corroborate cameras seeing water near it: the fingerprints of
        their FloodDetected alerts that now name it."""
        if report.category != FLOOD:
            return []
        linked = []
        radius = self.cameras.config.flood.reports_radius_m
        near = [camera_id for camera_id in
                self.cameras.cameras_near(report.lat, report.lon, radius)
                if self._owns(camera_id)]
        self._camera_signals(self.cameras.rejudge(near, self._lookup, self._latest_here))
        for camera_id in near:
            alert = self.engine.current(FLOOD_DETECTED, camera_id)
            if alert is not None and report.id in alert.annotations.get(
                    "flood_report_ids", "").split(","):
                linked.append(alert.fingerprint)
        return linked

    def _report_to_hotspots(self, report: CitizenReport, now: int) -> list[str]:
        """A parkir-liar report is named in the hotspots near it: their fingerprints."""
        linked = []
        for camera_id in self.cameras.report(report, now):  # every instance keeps it
            if not self._hears_events(camera_id):  # the hotspots are its events reader's
                continue
            device = self.registry.get(camera_id)
            notes = {} if device is None else self.cameras.parking_notes(device)
            for subject in self.cameras.hotspot_subjects(camera_id):
                noted = self.engine.annotate(VIOLATION_HOTSPOT, subject, notes)
                if noted is not None:
                    self.book.observe(noted, now, note=f"citizen report {report.id} linked")
                    linked.append(noted.fingerprint)
        return linked

    def report_overdue(self, report: CitizenReport, due_ns: int) -> None:
        """Raise (or keep) ReportOverdue: no officer answered `report` by `due_ns`. Only
        where `raises_city_alerts`: in a cluster every instance's desk finds the same
        reports overdue in the shared book, and the leader alone raises them."""
        if not self.raises_city_alerts:
            return
        overdue = self.citizens.overdue(report, due_ns, self._clock_ns())
        transition = self.engine.signal(overdue, self.citizens.resolution)
        if transition is not None:
            self._apply(transition)

    def report_answered(self, report_id: str) -> None:
        """An officer answered the report: its ReportOverdue resolves (if it is open here;
        in a cluster an answer taken by another instance ends it at the leader's next
        check, when the shared book no longer lists the report as overdue)."""
        if not self.raises_city_alerts:
            return  # what an old leader still holds is its successor's to end
        answered = self.citizens.answered(report_id, self._clock_ns())
        transition = self.engine.signal(answered, self.citizens.resolution)
        if transition is not None:
            self._apply(transition)

    def overdue_reports(self) -> list[str]:
        """The ids of the reports with an open ReportOverdue (to reconcile after a restart)."""
        if not self.raises_city_alerts:
            return []
        return [alert.subject for alert in self.engine.alerts.values()
                if alert.rule == REPORT_OVERDUE]

    def check_flood_reports(self) -> None:
        """Resolve the flood-report clusters no report joined for their window (wall clock).
        In a cluster every instance forgets them; the leader resolves their alerts."""
        for signal in self.citizens.expired(self._clock_ns()):
            if not self.raises_city_alerts:
                continue
            transition = self.engine.signal(signal, self.citizens.resolution)
            if transition is not None:
                self._apply(transition)
        # Reports gone: what corroborated a camera this instance reads may be gone too.
        seeing = sorted(camera for camera in self.cameras.seeing if self._owns(camera))
        if seeing:
            self._camera_signals(self.cameras.rejudge(seeing, self._lookup, self._latest_here))

    def broker_connection_changed(self, up: bool) -> None:
        """The broker connection changed: devices are unobservable while it is down. In a
        cluster its partitions go to other instances meanwhile: no device is this
        instance's until a reading of it comes again (`_owns`)."""
        self.tracker.broker_connection_changed(up, self._clock_ns())
        self._input_up = up
        if not up and self.cluster is not None:
            self._epoch += 1

    def durability_changed(self, reason: str | None) -> None:
        """Readings cannot be made durable (why), or can again (None): StorageUnavailable.

        On a full disk the alert book's own write may fail as well. That is logged and the
        service carries on: `/readyz` and `siaga_storage_unavailable` still show the state.
        """
        try:
            transition = self.engine.signal(_storage_signal(reason, self._clock_ns()),
                                            self._storage_resolution)
            if transition is not None:
                self._apply(transition)
        except (StorageError, OSError):
            log.exception("could not record the %s alert (%s)", STORAGE_UNAVAILABLE,
                          "resolved" if reason is None else reason)

    def _storage_resolution(self, alert: Alert) -> Mapping[str, str]:
        offset = self.rules_file.alerting.utc_offset
        at_ns = alert.ends_at_ns if alert.ends_at_ns is not None else self._clock_ns()
        since = local_time(alert.starts_at_ns, offset)
        summary = f"Siaga makes readings durable again (at {local_time(at_ns, offset)})"
        return ended(summary, f"{summary}: a store succeeded, acknowledgements resume. They "
                              f"had stopped at {since}.", at_ns, offset)

    # --- wall clock -----------------------------------------------------------------------

    def metrics(self) -> AlertingMetrics:
        """Latencies, Alertmanager counts, and devices online and offline by kind.

        A device is online once heard from and not judged offline (`OfflineChecker`), offline
        when judged so; one never heard from is neither until its grace runs out.
        """
        latency = {"webhook": self.deliverer.latency}
        if self.forwarders:
            merged = Histogram()
            for forwarder in self.forwarders:
                merged.merge(forwarder.latency)
            latency["alertmanager"] = merged
        return AlertingMetrics(
            {channel: histogram.snapshot() for channel, histogram in latency.items()},
            [ForwarderCounts(f.describe(), f.sent_total, f.failed_total)
             for f in self.forwarders],
            # One count for the city, from the leader: summed over a cluster's instances,
            # every instance's would count each device several times.
            self._device_counts() if self.leading else {})

    def _device_counts(self) -> dict[tuple[str, str], int]:
        now = self._clock_ns()
        devices: dict[tuple[str, str], int] = {}
        for kind in Kind:
            devices[(kind.value, ONLINE)] = devices[(kind.value, OFFLINE)] = 0
        for device in self.registry:
            if self.checker.is_offline(device, now):
                devices[(device.kind.value, OFFLINE)] += 1
            elif self.tracker.last_seen(device.id) is not None:
                devices[(device.kind.value, ONLINE)] += 1
        return devices

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver notifications and run the scheduled checks until `stop` is set."""
        scheduler = AsyncIOScheduler()
        check_s = self.rules_file.offline.check_every.total_seconds()
        scheduler.add_job(self._check_offline, "interval", seconds=check_s, id="offline")
        repeat_s = self.rules_file.alerting.repeat_interval.total_seconds()
        scheduler.add_job(self._repeat, "interval", id="repeat",
                          seconds=min(REPEAT_CHECK_MAX_S, repeat_s / 4))
        scheduler.add_job(self._silences, "interval", seconds=SILENCE_CHECK_S, id="silences")
        scheduler.add_job(self._prune, "interval", hours=PRUNE_EVERY_H, id="prune")
        scheduler.add_job(self._check_citizens, "interval", seconds=CITIZENS_CHECK_S,
                          id="citizens")
        if self.cluster is not None:
            scheduler.add_job(self._share_seen, "interval", seconds=SHARE_SEEN_S, id="share")
        scheduler.start()
        try:
            # Each Alertmanager on its own: one that hangs delays neither webhooks nor others.
            async with asyncio.TaskGroup() as group:
                for forwarder in self.forwarders:
                    group.create_task(forwarder.run(stop))
                if self.leadership is not None:
                    group.create_task(self.leadership.run(stop))
                await self.deliverer.run(stop)
        finally:
            scheduler.shutdown(wait=False)

    @property
    def leading(self) -> bool:
        """Whether this instance runs the city-wide checks: always, unless in a cluster."""
        return self.leadership is None or self.leadership.leading

    def _leading_changed(self, leading: bool) -> None:
        # The alerts a previous leader raised are this one's to carry on: taken from the
        # book before its first check (not here, in the event loop's callback).
        self._leader_alerts_loaded = not leading
        self._leadership_changes += 1

    async def _share_seen(self) -> None:
        try:
            await self.refresh_shared_gauges()
        except StorageError:
            log.exception("could not read the gauges' alerts from the shared book")
        heard: dict[str, Heard] = {}
        shared = self._shared
        for device_id, seen_ns in self.devices_seen.items():
            if shared.get(device_id) != seen_ns:
                heard[device_id] = Heard(seen_ns)
        statuses, self._statuses_heard = self._statuses_heard, {}
        for device_id, status in statuses.items():
            heard[device_id] = Heard(heard.get(device_id, Heard()).seen_ns, status)
        try:
            await asyncio.to_thread(self.board.publish, heard)
        except StorageError:
            log.exception("could not share the devices heard; trying again")
            self._statuses_heard = {**statuses, **self._statuses_heard}
            return
        for device_id, found in heard.items():
            if found.seen_ns is not None:
                shared[device_id] = found.seen_ns

    def _hear_board(self, board: Mapping[str, Heard]) -> None:
        """What every instance heard, into this instance's tracker.

        What was heard before this instance started is left out, as a single instance
        knows nothing from before its start: after a cluster-wide outage, silence counts
        from the start, not from a reading hours ago (every device would be paged silent).
        """
        tracker, started = self.tracker, self.tracker.started_ns
        for device_id, heard in board.items():
            last = tracker.last_seen(device_id)
            seen = heard.seen_ns
            if seen is not None and seen >= started and (last is None or seen > last):
                tracker.seen(device_id, seen)
                if device_id not in self.devices_seen:
                    self.changed.add(device_id)  # heard at last: the console's no-data ends
                self.devices_seen[device_id] = seen
                self._shared[device_id] = seen  # the board has it: not news to publish
            if heard.status is not None and heard.status[1] >= max(seen or 0, started):
                tracker.status(device_id, heard.status[0], heard.status[1])

    async def take_up_leadership(self) -> None:
        """On the first turn as the cluster's leader: take the open alerts of the rules the
        leader runs (LEADER_RULES) from the shared book, its predecessor's included, and
        raise each flood cluster the city's reports formed meanwhile without an alert.
        Called by the offline check, by the desk's turn over the shared reports and by its
        overdue check, whichever comes first. Raises StorageError when the book cannot be read."""
        async with self._leader_loading:
            if not self.leading or self._leader_alerts_loaded:
                return
            changes = self._leadership_changes
            alerts = await asyncio.to_thread(self.book.restore)
            if changes != self._leadership_changes:
                return  # lost (or lost and won again) meanwhile: the next turn reads again
            engine = self.engine
            engine.reload_rules(LEADER_RULES, alerts)
            self._resume(alert for alert in engine.alerts.values()
                         if alert.rule == CITIZEN_FLOOD_REPORTS)
            self._leader_alerts_loaded = True
            now = self._clock_ns()
            for signal in self.citizens.signals(self._lookup, self._latest_here):
                transition = engine.signal(signal, self.citizens.resolution)
                if transition is not None:
                    self._apply(transition)
                elif (alert := engine.current(signal.rule, signal.subject)) is not None:
                    self.book.observe(alert, now)  # reports joined since the book's count

    async def _check_offline(self) -> None:
        try:
            if self.cluster is not None:
                # Every instance hears the whole city (its console shows who is silent);
                # only the leader raises the alerts.
                self._hear_board(await asyncio.to_thread(self.board.read))
            await self.take_up_leadership()
        except StorageError:
            log.exception("the alert book: offline checks wait for the next turn")
            return
        if not self.raises_city_alerts:  # not leading, or leading again since the reload
            return
        for signal in self.checker.check(self._clock_ns()):
            transition = self.engine.signal(signal, self.checker.resolution)
            if transition is not None:
                self._apply(transition)

    async def _check_citizens(self) -> None:
        # Every instance forgets what ran out of time; only the leader resolves alerts.
        self.check_flood_reports()

    async def _repeat(self) -> None:
        if self.leading:
            self.book.due_repeats(self._clock_ns())  # the book dispatches what is due

    async def _silences(self) -> None:
        if self.leading:
            self.book.refresh_after_silence_change(self._clock_ns())

    async def _prune(self) -> None:
        if not self.leading:
            return
        keep = timedelta(days=self.rules_file.alerting.history_days)
        try:
            self.book.prune(self._clock_ns() - to_ns(keep))
        except Exception:  # retention must never take the service down; say so and go on
            log.exception("pruning alert history failed")


class _ReadHere(Mapping[str, Reading]):
    """The newest readings of the devices an instance reads now: what it kept of a device
    whose partition moved away is older than what its new reader knows."""

    def __init__(self, latest: Mapping[str, Reading], owns: Callable[[str], bool]) -> None:
        self._latest = latest
        self._owns = owns

    def __getitem__(self, device_id: str) -> Reading:
        if not self._owns(device_id):
            raise KeyError(device_id)
        return self._latest[device_id]

    def __iter__(self) -> Iterator[str]:
        return (device_id for device_id in self._latest if self._owns(device_id))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _level(alert: Alert | None) -> tuple[str, str] | None:
    """What of a gauge's alert corroborates a camera: its status and Siaga level."""
    return None if alert is None else (alert.status.value, alert.labels.get("level", ""))


def _storage_signal(reason: str | None, now_ns: int) -> Signal:
    if reason is None:
        return Signal(STORAGE_UNAVAILABLE, STORAGE_SUBJECT, False, now_ns, STORAGE_SEVERITY,
                      {}, {})
    labels = {"alertname": STORAGE_UNAVAILABLE, "severity": STORAGE_SEVERITY.value}
    annotations = {
        "summary": "Siaga cannot make readings durable",
        "description": f"Neither InfluxDB nor the disk spool takes readings ({reason}). "
                       "Acknowledgements are withheld, so the broker keeps the messages; "
                       "once its in-flight window is full it sends no more, and no rule "
                       "sees a new reading until storage recovers.",
        "reason": reason,
    }
    return Signal(STORAGE_UNAVAILABLE, STORAGE_SUBJECT, True, now_ns, STORAGE_SEVERITY, labels,
                  annotations)
