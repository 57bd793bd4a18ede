"""The citizens' desk: a report's way from the Open311 edge to the book and the alerts.

The HTTP handlers (`siaga.api.open311`, `siaga.api.reports`) parse the request; the desk
checks the key, the rate and the photo, stores the report durably, and only then tells the
rules (`rules.alerting.Alerting.observe_report`), whose links it records in the book. An
officer's first update answers `ReportOverdue`; a scheduled check raises it.

In a cluster the desk that takes a report only stores it: every instance's desk follows the
shared book (`follow`) and tells its own rules, which correlate each report with the
devices that instance reads.

The book and the photo store do blocking I/O (SQLite or PostgreSQL, files with fsync): each
call runs in a worker thread, so the event loop keeps taking readings meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from reports.book import ApiKey, ReportBook, ReportQuery
from reports.errors import KeyRefused
from reports.intake import parse_report, refuse_future
from reports.model import NewReport, Report, State, Update
from reports.photos import PhotoStore, StoredPhoto
from reports.ratelimit import RateLimiter
from reports.settings import ReportsSettings
from reports.stats import Stats
from rules.alerting import CORRELATED_CATEGORIES
from rules.citizens import CitizenReport
from siaga_core.errors import StorageError

if TYPE_CHECKING:
    from rules.alerting import Alerting

log = logging.getLogger(__name__)

_NS_PER_S: Final = 1_000_000_000
PHOTOS_AT_ONCE: Final = 2  # photos decoded at once (one per core here)
OVERDUE_CHECK_S: Final = 60  # response times are hours; a minute late is fine
# After a restart, the flood clusters are rebuilt from this much of the book's recent past
# (the rules' window is 30 minutes by default; an hour covers a changed setting too).
RESTORE_WINDOW_NS: Final = 2 * 3600 * _NS_PER_S
# In a cluster, how often each instance reads the reports the others stored: a report
# counts in its flood cluster and its links this late (the clusters' window is 30 minutes).
FOLLOW_S: Final = 1.0
FOLLOW_BATCH: Final = 1000  # reports a turn; a flood day brings tens a second at most
FOLLOW_FIRST_MAX: Final = 10_000  # the newest of the recent past read by a starting instance
ReportListener = Callable[[Report], None]


@dataclass(frozen=True, slots=True)
class Submitted:
    """A stored report and what the public answer says about it."""

    report: Report
    notice: str | None  # GeoReport `service_notice`: e.g. that it is probably a duplicate


class CitizenDesk:
    """Takes reports and officers' updates; owns the book, the photos and the rate limit."""

    def __init__(self, book: ReportBook, photos: PhotoStore, settings: ReportsSettings,
                 alerting: Alerting | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.book = book
        self.photos = photos
        self.settings = settings
        self.alerting = alerting
        self.clock_ns = clock_ns
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.categories = book.categories
        self.received = 0  # reports taken since start (the demo's live line)
        # Decoding a photo takes up to ~8 bytes a pixel (40 Mpx: some 320 MB) and a core:
        # a few at a time, so a burst of large photos queues instead of exhausting memory.
        self._decoding = asyncio.Semaphore(PHOTOS_AT_ONCE)
        self._listeners: tuple[ReportListener, ...] = ()
        self._followed: dict[str, int] | None = None  # cluster: category -> last id read

    def listen(self, callback: ReportListener) -> Callable[[], None]:
        """Call `callback(report)` with each report stored by `submit` and after each
        officer's `update`; the unsubscribe. Called in the event loop (the console's hub)."""
        self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            self._listeners = tuple(kept for kept in self._listeners if kept is not callback)

        return unsubscribe

    def _tell(self, report: Report) -> None:
        for callback in self._listeners:
            try:
                callback(report)
            except Exception:  # the report is stored: a listener's bug must not undo the answer
                log.exception("a report listener failed on report %s", report.id)

    @classmethod
    def photo_store(cls, settings: ReportsSettings, data_dir: Path,
                    book: ReportBook | None = None) -> PhotoStore:
        """Photos in the data directory, and in `book` too when instances share it: each
        instance serves every photo, whichever took it."""
        return PhotoStore(data_dir / "photos", settings.photo_max_bytes,
                          settings.photo_max_pixels,
                          shared=book if book is not None and book.shared else None)

    def sweep(self) -> None:
        """Remove the unfinished photo files of a killed run: call it before the API listens
        (an upload under way has its own temporary file, which this would take)."""
        swept = self.photos.sweep()
        if swept:
            log.info("citizens' desk: removed %d unfinished photo files of an earlier run", swept)

    # --- intake ----------------------------------------------------------------------------

    async def api_key(self, api_key: str | None) -> ApiKey:
        """The key of an app or channel; KeyRefused when it is missing, unknown or revoked.
        Looked up on each report, so a key added or revoked meanwhile counts at once."""
        if not api_key:
            raise KeyRefused("api_key is required: ask the city for a key for your app")
        return await asyncio.to_thread(self.book.key, api_key)

    async def submit(self, fields: Sequence[tuple[str, str]], photo: bytes | None,
                     key: ApiKey) -> Submitted:
        """Validate, store durably, then correlate. Nothing refused is stored."""
        key_name = key.name
        received = self.clock_ns()
        if self.book.shared:  # the key's bucket is the cluster's, in the book
            capacity = key.rate_limit_per_minute or self.settings.rate_limit_per_minute
            await asyncio.to_thread(self.book.take_report_token, key_name, capacity, received)
        else:
            self.limiter.take(key_name, key.rate_limit_per_minute)
        # The fields first: a photo of a report that would be refused is never written.
        new = parse_report(fields, categories=self.categories,
                           jurisdiction=self.settings.jurisdiction, received_ns=received,
                           key_name=key_name)
        if photo is not None:
            async with self._decoding:
                stored: StoredPhoto = await asyncio.to_thread(self.photos.accept, photo)
            new = replace(new, photo=stored.name)
        report = await self._store(new)
        self.received += 1
        log.info("report %s (%s) from %s at %.5f,%.5f%s", report.id, report.service_code,
                 key_name, report.lat, report.lon,
                 f": probably a duplicate of {report.duplicate_of}" if report.duplicate_of else "")
        report = await self._correlate(report)
        self._tell(report)
        notice = None
        if report.duplicate_of is not None:
            notice = (f"Probably a duplicate of report {report.duplicate_of} (same category "
                      f"within {self.settings.duplicate_radius_m:g} m and "
                      f"{self.settings.duplicate_window}); an officer will confirm.")
        return Submitted(report, notice)

    async def _store(self, new: NewReport) -> Report:
        """Add the report to the book. When that fails its photo goes too, unless another
        report shows it: it would be served at a URL no report names."""
        try:
            report = await asyncio.to_thread(self.book.add, new)
        except Exception:  # not a cancellation: the add may yet commit in its thread
            if new.photo is not None:
                await self._discard_photo(new.photo)
            raise
        if new.photo is not None:
            self.photos.release(new.photo)
        return report

    async def _discard_photo(self, name: str) -> None:
        try:
            removed = await asyncio.to_thread(self.photos.discard, name,
                                              self.book.forget_photo)
        except StorageError as exc:  # the report's own failure is what the caller hears
            log.warning("photo %s of a report that could not be stored is kept: %s", name,
                        exc)
            return
        if removed:
            log.info("photo %s removed: its report could not be stored", name)

    async def _correlate(self, report: Report) -> Report:
        """Tell the rules; record the alerts they linked the report to.

        The report is already stored and will be acknowledged: a failure here (the alert
        book or the report book cannot write) only weakens the story, so it is logged and
        the report goes on unlinked rather than answered 503 (and sent again).
        """
        if self.alerting is None or self.alerting.cluster is not None:
            return report  # in a cluster every instance correlates it as it follows the book
        try:
            fingerprints = self.alerting.observe_report(citizen_report(report))
        except StorageError:
            log.exception("could not correlate report %s with the sensors", report.id)
            return report
        if not fingerprints or not await self._link(report, fingerprints, self.alerting):
            return report
        return replace(report, alerts=tuple(dict.fromkeys((*report.alerts, *fingerprints))))

    async def _link(self, report: Report, fingerprints: Sequence[str],
                    alerting: Alerting) -> bool:
        """Record in the book the alerts the rules linked the report to; False if it failed
        (logged: the report and the alerts stand, unlinked)."""
        def link() -> None:
            # A cluster's alert names every report in it: the earlier ones are linked now too.
            links = [(report.id, fingerprint) for fingerprint in fingerprints]
            for fingerprint in fingerprints:
                view = alerting.book.get(fingerprint)
                members = "" if view is None else view.alert.annotations.get("report_ids", "")
                links += [(member, fingerprint) for member in members.split(",")
                          if member and member != report.id]
            self.book.link_many(links)

        try:
            await asyncio.to_thread(link)
        except StorageError:
            log.exception("could not record report %s's links to %s", report.id, fingerprints)
            return False
        return True

    # --- officers --------------------------------------------------------------------------

    async def update(self, report_id: str, state: State, note: str, officer: str,
                     at_ns: int | None) -> Update:
        """Record an officer's update (`at_ns`: when it happened, if not now), then tell the
        rules and the listeners. Answered once it is stored, whatever follows fails."""
        now_ns = self.clock_ns()
        if at_ns is not None:
            refuse_future("at", at_ns, now_ns)
        update = await asyncio.to_thread(self.book.add_update, report_id, state, note, officer,
                                         now_ns if at_ns is None else at_ns)
        if self.alerting is not None:
            try:
                self.alerting.report_answered(report_id)
            except StorageError:
                # The update is stored: a 503 would have it sent, and stored, again. The
                # ReportOverdue stays firing meanwhile; the next overdue check reads the
                # alerts again (`take_up_leadership`), finds the report answered and ends it.
                log.exception("could not resolve report %s's overdue alert", report_id)
        log.info("report %s %s by %s", report_id, state, officer)
        if self._listeners:  # the report as it now reads: one more read, only when watched
            try:
                self._tell(await asyncio.to_thread(self.book.get, report_id))
            except StorageError:
                log.exception("could not re-read report %s for its listeners", report_id)
        return update

    async def get(self, report_id: str) -> Report:
        return await asyncio.to_thread(self.book.get, report_id)

    async def history(self, report_id: str) -> list[Update]:
        return await asyncio.to_thread(self.book.updates, report_id)

    async def find(self, query: ReportQuery) -> tuple[list[Report], int]:
        def both() -> tuple[list[Report], int]:
            return self.book.find(query), self.book.count(query)

        return await asyncio.to_thread(both)

    async def updates(self, since_ns: int | None, until_ns: int | None, limit: int,
                      offset: int = 0) -> list[Update]:
        return await asyncio.to_thread(self.book.updates, None, since_ns, until_ns, limit,
                                       offset)

    async def stats(self, year: int) -> Stats:
        return await asyncio.to_thread(self.book.stats, year)

    # --- the wall clock --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Restore the flood clusters, then check for overdue reports until `stop`; in a
        cluster, follow the shared book's correlated reports instead of restoring. Beside
        them, photos on this disk that a shared book lacks are kept in it."""
        async with asyncio.TaskGroup() as group:
            # Beside the rest, not before: after an upgrade, thousands of photos take minutes.
            group.create_task(self.share_photos(stop))
            if self.alerting is not None and self.alerting.cluster is not None:
                group.create_task(self.follow(stop, self.alerting))
            else:
                try:
                    await self.restore()
                except StorageError:  # the clusters start empty; intake and the rest go on
                    log.exception("could not re-read recent reports for the flood clusters")
            await self._check_overdue_until(stop)

    async def share_photos(self, stop: asyncio.Event) -> None:
        """Keep in the shared book the photos only this instance has: those taken before
        the book was shared (an upgrade), or while keeping them failed. Every instance then
        serves them, and they outlive this machine. Ends early at `stop`, or when the
        desk's run is cancelled (the copying thread is told too)."""
        halt = threading.Event()
        try:
            kept = await asyncio.to_thread(self.photos.share_local,
                                           lambda: stop.is_set() or halt.is_set())
        except Exception:  # best effort: the photos stay on this disk; the next start retries
            log.exception("could not keep this instance's photos in the shared report book")
            return
        finally:
            halt.set()
        if kept:
            log.info("citizens' desk: %d photos on this disk kept in the shared report book",
                     kept)

    async def _check_overdue_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_overdue()
            except StorageError:
                log.exception("checking for overdue reports failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), OVERDUE_CHECK_S)

    async def restore(self) -> None:
        """Re-feed the recent past's reports to the rules, whose clusters live in memory."""
        if self.alerting is None:
            return
        since = self.clock_ns() - RESTORE_WINDOW_NS
        query = ReportQuery(requested_from_ns=since, limit=10_000, newest_first=False)
        recent = await asyncio.to_thread(self.book.find, query)
        for report in recent:
            await self._correlate(report)
        if recent:
            log.info("citizens' desk: %d recent reports re-read for correlation", len(recent))

    async def follow(self, stop: asyncio.Event, alerting: Alerting) -> None:
        """In a cluster: every second, the reports of the correlated categories that any
        instance stored, in the order stored, to this instance's rules
        (`Alerting.observe_report`): the city's flood clusters are judged as one, and each
        report is linked to the alerts of whichever instance reads the devices near it. The
        first turn reads the recent past, as `restore` does after a restart."""
        while not stop.is_set():
            try:
                await self.follow_once(alerting)
            except StorageError:
                log.exception("could not follow the shared report book; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_S)

    async def follow_once(self, alerting: Alerting) -> int:
        """One turn of `follow`: how many reports it read. Raises StorageError."""
        codes = CORRELATED_CATEGORIES
        first_turn = self._followed is None
        if self._followed is None:
            since = self.clock_ns() - RESTORE_WINDOW_NS

            def first() -> tuple[dict[str, int], list[Report]]:
                # The latest ids first: a report stored between the two reads comes in
                # both, and the rules count a report once.
                last = {code: self.book.last_id(code) for code in codes}
                query = ReportQuery(service_codes=codes, requested_from_ns=since,
                                    limit=FOLLOW_FIRST_MAX)
                # In the order stored, as the other instances read them: clusters are
                # built greedily, and the same reports in another order may group otherwise.
                return last, sorted(self.book.find(query), key=lambda r: int(r.id))

            followed, reports = await asyncio.to_thread(first)
        else:
            followed = self._followed  # advanced report by report: a failure resumes there

            def after() -> list[Report]:
                return [report for code in codes
                        for report in self.book.added_after(code, followed[code], FOLLOW_BATCH)]

            reports = await asyncio.to_thread(after)
        # A new leader takes its predecessor's clusters before it judges any report.
        await alerting.take_up_leadership()
        for report in reports:
            fingerprints = alerting.observe_report(citizen_report(report))
            if fingerprints:
                await self._link(report, fingerprints, alerting)
            code = report.service_code
            followed[code] = max(followed[code], int(report.id))
        if first_turn:  # kept once whole: a first turn that fails is read again whole
            self._followed = followed
        return len(reports)

    async def check_overdue(self) -> int:
        """Raise ReportOverdue for each report no officer answered within its response time:
        how many are overdue. In a cluster only the leader raises them (every instance
        would find the same reports in the shared book); elsewhere this is 0, unread.
        Raises StorageError."""
        alerting = self.alerting
        if alerting is None:
            return 0
        # A new leader takes its predecessor's ReportOverdue alerts before it judges, and
        # any instance reads them again after the book refused one of their changes.
        await alerting.take_up_leadership()
        if not alerting.raises_city_alerts:
            return 0
        overdue = await asyncio.to_thread(self.book.overdue, self.clock_ns())
        for report in overdue:
            category = self.categories[report.service_code]
            due = report.received_ns + int(category.response_time.total_seconds() * _NS_PER_S)
            alerting.report_overdue(citizen_report(report), due)
        # Answered elsewhere (another instance sharing the book, or before a restart): the
        # book no longer lists them, so their alerts end here.
        still = {report.id for report in overdue}
        for report_id in alerting.overdue_reports():
            if report_id not in still:
                alerting.report_answered(report_id)
        return len(overdue)


def citizen_report(report: Report) -> CitizenReport:
    """What the rules see of a report: no contact, no photo."""
    return CitizenReport(id=report.id, category=report.service_code, lat=report.lat,
                         lon=report.lon, at_ns=report.requested_ns, agency=report.agency,
                         description=report.description)
