"""The console's live state: each device's status, the alerts and reports shown, and the ring
of events every open stream reads (plan section 2).

Producing costs the ingest path one `set.add` per device per message (`Alerting.changed`).
Every tick (200 ms) the hub takes that set, recomputes those devices' statuses
(`siaga.console.status`) and appends one `devices` event with the ones that changed. Each
second it also asks the offline checker about every device (the wall clock greys silent
ones), and every `values_every_s` it sends the latest values of the devices read since.
Alert changes come from the alert book's listener (a fingerprint, read back once per tick in
a worker thread), reports from the citizens' desk's listener.

Each event is serialized once into bytes that every stream shares. Ids are
`<epoch>-<seq>`: the epoch is random per start, so an id from an earlier run is never taken
for one of this run. The streams keep no queues: each holds a cursor (a seq) into the ring
and waits for `wake`, which is set once per tick that published something.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any, Final

import orjson

from devices.kinds import Kind
from devices.registry import Device, Registry
from ingest.deadletters import format_time
from reports.book import ReportQuery
from reports.model import Report
from rules.alert import Alert, AlertStatus
from rules.alertbook import ALL, AlertView
from rules.alerting import Alerting
from rules.ruletypes import SelectingRule
from siaga.api.alerts import alert_json
from siaga.citizens import CitizenDesk
from siaga.console.status import (
    CAMERA_RULES,
    NO_DATA,
    StatusRules,
    device_status,
    heard_status,
    main_value,
)
from siaga.settings import ConsoleSettings
from siaga_core.errors import StorageError

log = logging.getLogger(__name__)

_S: Final = 1_000_000_000
RING_EVENTS: Final = 10_000  # at five ticks a second, over half an hour of catch-up
# ... unless the events are large (thousands of statuses changing at once): the ring's bytes
# are bounded too, so a storm costs memory once, not once per event kept.
RING_MAX_BYTES: Final = 32 * 1024 * 1024
MAX_CHANGED_PER_TICK: Final = 5_000  # the rest wait a tick: a tick stays within milliseconds
SWEEP_EVERY_NS: Final = 1 * _S  # silent devices turn grey within a second of their grace
RECENT_NS: Final = 24 * 3600 * _S  # resolved alerts and closed reports stay this long
MAX_REPORTS: Final = 2_000  # the page clusters reports; more would only slow its first draw
MAX_ALERTS_READ: Final = 100_000  # every open alert: a limit only because the book needs one
MAX_RESOLVED_READ: Final = 5_000  # resolved alerts read at start, to keep the last day's
TIME_CACHE_SECONDS: Final = 100_000  # a day of distinct seconds; cleared when full
SNAPSHOT_MAX_AGE_S: Final = 1.0  # 50 consoles reloading at once build the state once
# Cluster: the shared book is asked every this often what any instance changed (the book's
# listener hears this process only), over a window reaching this far back before the last
# ask: another instance's clock and a commit that took a while still land in it, and an
# alert read twice unchanged is not published again.
SHARED_EVERY_NS: Final = 2 * _S
SHARED_OVERLAP_NS: Final = 10 * _S


class ConsoleHub:
    """Statuses, alerts and reports as the console shows them, and the events since start.

    Event-loop only (listeners from worker threads hand over through the loop). Build it
    after `alerting` is entered (it reads the engine, the book and the offline checker).
    """

    def __init__(self, registry: Registry, alerting: Alerting, desk: CitizenDesk | None,
                 settings: ConsoleSettings, *, clock_ns: Callable[[], int] = time.time_ns,
                 tick_s: float = 0.2, snapshot_max_age_s: float = SNAPSHOT_MAX_AGE_S) -> None:
        self._registry = registry
        self._alerting = alerting
        self._desk = desk
        self._settings = settings
        self._clock_ns = clock_ns
        self._tick_s = tick_s
        self._snapshot_max_age_s = snapshot_max_age_s
        self.epoch = secrets.token_hex(4)
        self._rules = StatusRules.of(alerting.rules_file)
        # The rules that may colour each device: its alerts are looked up by (rule, device id).
        colouring = [rule for rule in alerting.rules_file.rules
                     if isinstance(rule, SelectingRule) and rule.name in self._rules.names]
        self._rules_of: dict[str, tuple[str, ...]] = {
            device.id: tuple(rule.name for rule in colouring if rule.selects(device))
            + (CAMERA_RULES if device.kind is Kind.CAMERA else ())
            for device in registry}
        self._static = {device.id: device_json(device) for device in registry}
        self._status: dict[str, str] = dict.fromkeys(self._static, NO_DATA)
        self._offline: set[str] = set()
        self._alerts: dict[str, dict[str, Any]] = {}  # fingerprint -> alert_json
        # Cluster: the devices' open alerts as the shared book has them, by (rule, subject),
        # for the statuses: this instance's engine holds only the devices it reads.
        self._shared = alerting.cluster is not None
        self._open: dict[tuple[str, str], Alert] = {}
        self._shared_since_ns: int | None = None  # wall time of the last ask
        self._next_shared_ns = 0
        self._resolved_ns: dict[str, int] = {}  # fingerprint -> when it was seen resolved
        self._reports: dict[str, tuple[Report, dict[str, Any]]] = {}
        # Handed over by the listeners, taken by the next tick.
        self._fingerprints: set[str] = set()
        self._new_reports: list[Report] = []
        self._read_since_values: set[str] = set()
        self._next_sweep_ns = 0
        self._next_values_ns = 0
        # The ring: events `_first_seq` .. `_seq`, oldest first.
        self._seq = 0
        self._first_seq = 1
        self._ring: deque[bytes] = deque()
        self._ring_bytes = 0
        self._wake = asyncio.Event()
        self._woken_seq = 0
        self._closed = False
        self._loaded = asyncio.Event()
        self._snapshot: tuple[float, bytes] | None = None
        self.streams = 0  # open streams (stream.py counts them against max_streams)
        self._time = TimeFormat()

    # --- what the streams read ----------------------------------------------------------

    @property
    def last_id(self) -> str:
        return f"{self.epoch}-{self._seq}"

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def wake(self) -> asyncio.Event:
        """Set when events are published after it was taken (or the hub closes)."""
        return self._wake

    @property
    def closed(self) -> bool:
        return self._closed

    def join(self) -> bool:
        """Count one more stream; False when `max_streams` are open already (or closed)."""
        if self._closed or self.streams >= self._settings.max_streams:
            return False
        self.streams += 1
        return True

    def leave(self) -> None:
        self.streams -= 1

    def resume(self, last_event_id: str | None) -> tuple[int, bool]:
        """Where a stream starts: (the seq it has seen, whether it must reload the state).

        No id: a page that has just read the state starts from now. An id of this run that
        the ring still holds: the events after it are replayed. Anything else (another
        run's epoch, an id fallen off the ring, garbage): reload.
        """
        if not last_event_id:
            return self._seq, False
        epoch, _, seq_text = last_event_id.strip().rpartition("-")
        if epoch != self.epoch or not seq_text.isdecimal():
            return self._seq, True
        seq = int(seq_text)
        if not self._first_seq - 1 <= seq <= self._seq:
            return self._seq, True
        return seq, False

    def events_after(self, cursor: int) -> tuple[int, list[bytes]] | None:
        """The events after seq `cursor` and the seq of the last; None if the ring dropped
        some of them (the stream is too far behind: it must reload the state)."""
        if cursor < self._first_seq - 1:
            return None
        count = self._seq - cursor
        events = list(islice(reversed(self._ring), count))
        events.reverse()
        return self._seq, events

    def reset_event(self) -> bytes:
        """`reset`, for one stream: reload the state; the events after this id follow."""
        return f"id: {self.last_id}\nevent: reset\ndata: {{}}\n\n".encode()

    def publish(self, event: str, data: object) -> None:
        """Append one event to the ring, serialized once; streams get it at the next tick."""
        self._seq += 1
        body = b"".join((f"id: {self.epoch}-{self._seq}\nevent: {event}\ndata: ".encode(),
                         orjson.dumps(data), b"\n\n"))
        self._ring.append(body)
        self._ring_bytes += len(body)
        while len(self._ring) > RING_EVENTS or (self._ring_bytes > RING_MAX_BYTES
                                                and len(self._ring) > 1):
            self._ring_bytes -= len(self._ring.popleft())
            self._first_seq += 1

    def notify(self) -> None:
        """Wake every stream waiting for events (each tick does, when there are new ones)."""
        self._woken_seq = self._seq
        self._wake.set()
        self._wake = asyncio.Event()

    def close(self) -> None:
        """End every stream (at shutdown, before the runner waits for handlers)."""
        self._closed = True
        self._wake.set()

    # --- the state ---------------------------------------------------------------------

    async def wait_loaded(self, timeout_s: float) -> bool:
        """Wait until `run` has read the book's alerts and reports; False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._loaded.wait()
        return self._loaded.is_set()

    def snapshot_bytes(self) -> bytes:
        """The `state` JSON (plan section 1, wire format), built at most once a second."""
        now = time.monotonic()
        if self._snapshot is not None and now - self._snapshot[0] < self._snapshot_max_age_s:
            return self._snapshot[1]
        body = orjson.dumps(self.snapshot())
        self._snapshot = (now, body)
        return body

    def snapshot(self) -> dict[str, Any]:
        # last_id with the alerts and statuses of the same moment: the loop does not switch
        # in between, and the events after last_id are upserts, so nothing falls in a gap.
        now_ns = self._clock_ns()
        reports = sorted(self._reports.values(), key=lambda kept: kept[0].requested_ns,
                         reverse=True)[:MAX_REPORTS]
        return {
            "epoch": self.epoch,
            "last_id": self.last_id,
            "now": self._time(now_ns),
            "config": {
                "tile_url": self._settings.tile_url,
                "tile_attribution": self._settings.tile_attribution,
                "language": self._settings.language,
                "utc_offset": self._alerting.rules_file.alerting.utc_offset,
            },
            "devices": [self._static[device.id] | self._live(device, self._status[device.id])
                        for device in self._registry],
            "alerts": list(self._alerts.values()),
            "reports": [shown for _, shown in reports],
        }

    def status(self, device_id: str) -> str:
        """The status the console shows for a device now (as of the last tick)."""
        return self._status[device_id]

    # --- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Load the alerts and reports shown, then tick every `tick_s` until `stop`."""
        loop = asyncio.get_running_loop()

        def alert_changed(fingerprint: str) -> None:  # in the book's caller's thread
            loop.call_soon_threadsafe(self._alert_changed, fingerprint)

        # Listening before loading: a change in between is read twice, never missed.
        unsubscribe = [self._alerting.book.listen(alert_changed)]
        if self._desk is not None:
            unsubscribe.append(self._desk.listen(self._report_changed))
        try:
            try:
                await self._load()
                self._recompute(list(self._static), self._clock_ns())
            except Exception:  # as for a tick: ingestion goes on, the console shows changes
                log.exception("console: could not load what it shows at start; it shows the "
                              "changes from now on")
            self._loaded.set()
            while not stop.is_set() and not self._closed:
                try:
                    await self.tick()
                except Exception:  # the console must never take ingestion down with it
                    log.exception("console: a tick failed; the next one tries again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._tick_s)
        finally:
            for undo in unsubscribe:
                undo()
            self.close()

    async def tick(self) -> None:
        """Publish what changed since the last tick and wake the streams."""
        now = self._clock_ns()
        if self._shared and now >= self._next_shared_ns:
            await self._ask_shared_book(now)
            self._next_shared_ns = now + SHARED_EVERY_NS
        touched = await self._read_alerts(now)
        self._take_reports(now)
        touched |= self._take_changed()
        if now >= self._next_sweep_ns:
            touched |= self._sweep(now)
            self._forget_old(now)
            self._next_sweep_ns = now + SWEEP_EVERY_NS
        entries = self._recompute(touched, now)
        if entries:
            self.publish("devices", entries)
        self._read_since_values |= touched
        if now >= self._next_values_ns:
            self._publish_values()
            self._next_values_ns = now + int(self._settings.values_every_s * _S)
        if self._seq != self._woken_seq:  # this tick's events, or any published meanwhile
            self.notify()

    def _take_changed(self) -> set[str]:
        changed = self._alerting.changed
        if len(changed) <= MAX_CHANGED_PER_TICK:
            self._alerting.changed = set()
            return changed
        taken = set(islice(changed, MAX_CHANGED_PER_TICK))
        changed -= taken  # the rest stays for the next tick
        return taken

    def _sweep(self, now: int) -> set[str]:
        """The devices whose offline judgement changed (the wall clock moves on its own)."""
        offline = {device.id for device in self._registry if self._is_offline(device, now)}
        flipped = offline ^ self._offline
        self._offline = offline
        return flipped

    def _is_offline(self, device: Device, now: int) -> bool:
        """Offline as the rules judge it, once heard from: a device not heard from since the
        service started is `no-data` (SPEC section 8), however long ago that was."""
        return (device.id in self._alerting.devices_seen
                and self._alerting.checker.is_offline(device, now))

    def _recompute(self, device_ids: Iterable[str], now: int) -> list[dict[str, Any]]:
        """New statuses of `device_ids`; the entries of those that changed."""
        engine, latest = self._alerting.engine, self._alerting.latest
        entries: list[dict[str, Any]] = []
        for device_id in device_ids:
            device = self._registry.get(device_id)
            if device is None:
                continue
            offline = self._is_offline(device, now)
            if offline:
                self._offline.add(device_id)
            else:
                self._offline.discard(device_id)
            if self._shared:
                alerts = [alert for rule in self._rules_of[device_id]
                          if (alert := self._open.get((rule, device_id))) is not None]
            else:
                alerts = [alert for rule in self._rules_of[device_id]
                          if (alert := engine.current(rule, device_id)) is not None]
            reading = latest.get(device_id)
            if reading is None and self._shared and not offline and (
                    device_id in self._alerting.devices_seen):
                status = heard_status(alerts, self._rules)  # read by another instance
            else:
                status = device_status(device, reading, alerts, offline, self._rules)
            if status != self._status[device_id]:
                self._status[device_id] = status
                entries.append({"id": device_id} | self._live(device, status))
        return entries

    def _live(self, device: Device, status: str) -> dict[str, Any]:
        reading = self._alerting.latest.get(device.id)
        seen = self._alerting.devices_seen.get(device.id)
        shown = main_value(device, reading)
        return {"status": status,
                "value": None if shown is None else {"field": shown[0], "v": shown[1]},
                "ts": None if reading is None else self._time(reading.ts_ns),
                "last_seen": None if seen is None else self._time(seen)}

    def _publish_values(self) -> None:
        due, self._read_since_values = self._read_since_values, set()
        latest = self._alerting.latest
        values: dict[str, list[object]] = {}
        for device_id in due:
            device = self._registry.get(device_id)
            reading = latest.get(device_id)
            shown = None if device is None else main_value(device, reading)
            if shown is not None and reading is not None:
                values[device_id] = [self._time(reading.ts_ns), shown[1]]
        if values:
            self.publish("values", values)

    # --- alerts and reports ------------------------------------------------------------

    # The listeners look the pending collection up when they run: a tick swaps it for a
    # new one, and a bound `add` of the old one would drop what it adds.
    def _alert_changed(self, fingerprint: str) -> None:
        self._fingerprints.add(fingerprint)

    def _report_changed(self, report: Report) -> None:
        self._new_reports.append(report)

    async def _read_alerts(self, now: int) -> set[str]:
        """Publish the alerts the book says changed; the devices they name."""
        fingerprints, self._fingerprints = self._fingerprints, set()
        if not fingerprints:
            return set()
        book = self._alerting.book
        everything = ALL in fingerprints
        # A silence may change any open alert's view, and those the page shows.
        wanted = (set(self._alerts) | fingerprints) - {ALL} if everything else fingerprints

        def read() -> list[AlertView]:
            views = [book.get(fingerprint) for fingerprint in wanted]
            if everything:
                for status in (AlertStatus.PENDING, AlertStatus.FIRING):
                    views += book.alerts(status, limit=MAX_ALERTS_READ)
            return [view for view in views if view is not None]

        try:
            views = await asyncio.to_thread(read)
        except StorageError:
            log.exception("console: could not read changed alerts; trying again next tick")
            self._fingerprints |= fingerprints
            return set()
        devices: set[str] = set()
        for view in {view.alert.fingerprint: view for view in views}.values():
            before = self._alerts.get(view.alert.fingerprint)
            shown = self._keep_alert(view, now)
            if shown == before:
                continue  # read again unchanged (the shared book's asks overlap)
            self.publish("alert", shown)
            device_id = view.alert.labels.get("device_id")
            if device_id is not None:
                devices.add(device_id)
        return devices

    async def _ask_shared_book(self, now: int) -> None:
        """Cluster: take the alerts any instance changed since the last ask as changed."""
        since = self._shared_since_ns
        if since is None:  # the first ask: `_load` read the book just before
            self._shared_since_ns = now
            return
        book = self._alerting.book
        try:
            changed = await asyncio.to_thread(book.changed_since, since - SHARED_OVERLAP_NS,
                                              MAX_RESOLVED_READ)
        except StorageError:
            log.exception("console: could not ask the shared book what changed; trying "
                          "again in %d s", SHARED_EVERY_NS // _S)
            return
        self._shared_since_ns = now
        self._fingerprints.update(changed)

    def _keep_alert(self, view: AlertView, now: int) -> dict[str, Any]:
        shown = alert_json(view)
        alert = view.alert
        fingerprint = alert.fingerprint
        self._alerts[fingerprint] = shown
        key = (alert.rule, alert.subject)
        if alert.status is AlertStatus.RESOLVED:
            self._resolved_ns.setdefault(fingerprint, now)
            if (held := self._open.get(key)) is not None and held.fingerprint == fingerprint:
                del self._open[key]
        else:
            self._resolved_ns.pop(fingerprint, None)
            self._open[key] = alert
        return shown

    def _take_reports(self, now: int) -> None:
        new, self._new_reports = self._new_reports, []
        for report in new:
            self.publish("report", self._keep_report(report))

    def _keep_report(self, report: Report) -> dict[str, Any]:
        shown = report_json(report)
        self._reports[report.id] = (report, shown)
        return shown

    def _forget_old(self, now: int) -> None:
        """Resolved alerts and closed reports leave the state after a day (the page keeps
        what it has until it reloads)."""
        since = now - RECENT_NS
        for fingerprint, resolved in list(self._resolved_ns.items()):
            if resolved < since:
                del self._resolved_ns[fingerprint]
                self._alerts.pop(fingerprint, None)
        for report_id, (report, _) in list(self._reports.items()):
            if report.state.closes and report.requested_ns < since:
                del self._reports[report_id]

    async def _load(self) -> None:
        """The alerts and reports shown at start: open ones, and those of the last day."""
        now = self._clock_ns()
        book, desk = self._alerting.book, self._desk

        def read() -> tuple[list[AlertView], list[Report]]:
            views = [view for status in (AlertStatus.PENDING, AlertStatus.FIRING)
                     for view in book.alerts(status, limit=MAX_ALERTS_READ)]
            # By their end, in SQL: a year's replay leaves some 100,000 resolved (one per
            # report's ReportOverdue), and a long episode may have ended only today.
            views += book.resolved_since(now - RECENT_NS, limit=MAX_RESOLVED_READ)
            reports: list[Report] = []
            if desk is not None:
                reports = desk.book.find(ReportQuery(status="open", limit=MAX_REPORTS))
                reports += desk.book.find(ReportQuery(requested_from_ns=now - RECENT_NS,
                                                      limit=MAX_REPORTS))
            return views, reports

        try:
            views, reports = await asyncio.to_thread(read)
        except StorageError:
            log.exception("console: could not read the alerts and reports to show; "
                          "changes from now on are shown")
            return
        for view in views:
            ended = view.alert.ends_at_ns
            if view.alert.status is not AlertStatus.RESOLVED:
                self._keep_alert(view, now)
            elif ended is not None and ended >= now - RECENT_NS:
                self._keep_alert(view, now)
                self._resolved_ns[view.alert.fingerprint] = ended
        for report in reports:
            self._keep_report(report)


class TimeFormat:
    """RFC 3339 in UTC to the millisecond, as `format_time`, with each second's text kept:
    readings of one moment share their seconds, and strftime was most of a tick's time."""

    def __init__(self) -> None:
        self._seconds: dict[int, str] = {}

    def __call__(self, ns: int) -> str:
        seconds, rest = divmod(ns, _S)
        text = self._seconds.get(seconds)
        if text is None:
            if len(self._seconds) >= TIME_CACHE_SECONDS:
                self._seconds.clear()
            text = self._seconds[seconds] = format_time(seconds * _S)[:-5]
        return f"{text}.{rest // 1_000_000:03d}Z"


def report_json(report: Report) -> dict[str, Any]:
    """A report as the console draws it: where, what, and how far it got (no contact)."""
    return {"id": report.id, "category": report.service_code, "lat": report.lat,
            "long": report.lon, "status": report.state.status, "state": report.state.value,
            "requested_at": format_time(report.requested_ns),
            "description": report.description}


def device_json(device: Device) -> dict[str, Any]:
    """What the page knows of a device from the catalog (live and history alike)."""
    shown: dict[str, Any] = {
        "id": device.id, "kind": device.kind.value, "name": device.name, "lat": device.lat,
        "lon": device.lon, "labels": dict(device.labels), "thresholds": dict(device.thresholds)}
    if device.kind is Kind.CAMERA:
        shown |= {"spot": device.spot, "watches": device.watches, "zones": list(device.zones),
                  "analytics": list(device.analytics)}
    return shown
