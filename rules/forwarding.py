"""The worker that keeps one Alertmanager told of Siaga's alerts (SPEC section 9).

It listens to the alert book (a change is sent at once) and re-sends every firing alert each
`resend_interval_s`, with the resolutions of the last 15 minutes, so an Alertmanager that
was down or restarted with empty state is whole again after one re-send. A failed POST is
logged and counted, and the next re-send carries the same news: nothing waits for it, and
the book's listener only adds a fingerprint to a set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import aiohttp
import orjson

from rules.alert import Alert, AlertStatus
from rules.alertbook import ALL, AlertBook, AlertView
from rules.alertmanager import (
    ENDS_AFTER_RESENDS,
    RESOLVED_RETENTION_S,
    AlertmanagerSettings,
    label_set,
    postable,
)
from rules.webhook import REASON_MAX_CHARS, format_rfc3339, redact_url
from siaga_core.errors import StorageError
from siaga_core.histogram import Histogram

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
BATCH_MAX = 256  # alerts per POST, as Prometheus' notifier (maxBatchSize 64) x 4: few POSTs
FIRING_MAX = 100_000  # firing alerts read per re-send: far above any city's worst day
BOOK_RETRY_S = 5.0  # a re-send the alert book could not be read for is tried again this soon

Payload = dict[str, object]
LabelKey = tuple[tuple[str, str], ...]
SessionFactory = Callable[[], aiohttp.ClientSession]


@dataclass(slots=True)
class _Resolution:
    payload: Payload
    until_ns: int  # re-sent until then (RESOLVED_RETENTION_S after it was first sent)
    fresh: bool = True  # not sent yet


class Forwarder:
    """Sends one Alertmanager Siaga's firing alerts, their re-sends and their resolutions."""

    def __init__(self, settings: AlertmanagerSettings, book: AlertBook, external_url: str, *,
                 clock_ns: Callable[[], int] = time.time_ns,
                 session_factory: SessionFactory = aiohttp.ClientSession) -> None:
        self.settings = settings
        self._book = book
        self._external_url = external_url
        self._clock_ns = clock_ns
        self._session_factory = session_factory
        self._headers = settings.headers()
        self._ssl = settings.ssl_context()
        self._firing: dict[str, dict[str, str]] = {}  # fingerprint -> label set sent firing
        self._resolutions: dict[LabelKey, _Resolution] = {}
        self._changed: set[str] = set()
        # When the book first told of a change not yet read (`_heard_at`); and the alerts
        # whose news (firing, a new level, resolved) Alertmanager has not yet taken, since
        # when: the starts of the latency histogram.
        self._heard_at: dict[str, int] = {}
        self._unsent_since: dict[str, int] = {}
        self.latency = Histogram()  # seconds from an alert's change to Alertmanager's 2xx
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing: str | None = None  # the last failure's reason until a POST succeeds
        self._book_failing = False  # the alert book could not be read, until it can again
        self.sent_total = 0  # alerts Alertmanager accepted (a re-send counts again)
        # Alerts in POSTs it did not take (no answer, or not 2xx), as Prometheus' notifier
        # counts its errors: in alerts, so a failed share is failed / (sent + failed).
        self.failed_total = 0

    def describe(self) -> str:
        return redact_url(self.settings.url)

    def _heard(self, fingerprint: str) -> None:
        """The book's listener: called after each commit, in any thread; quick."""
        loop = self._loop
        if loop is None or fingerprint == ALL:  # Siaga's silences are not Alertmanager's
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nothing to send
            loop.call_soon_threadsafe(self._mark, fingerprint)

    def _mark(self, fingerprint: str) -> None:
        self._changed.add(fingerprint)
        self._heard_at.setdefault(fingerprint, self._clock_ns())
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send changes as they come and re-send everything each interval, until `stop`."""
        loop = self._loop = asyncio.get_running_loop()
        unsubscribe = self._book.listen(self._heard)
        interval = self.settings.resend_interval_s
        try:
            async with self._session_factory() as session, asyncio.TaskGroup() as group:
                group.create_task(self._wake_on(stop))
                resend_at = loop.time()  # at once: an Alertmanager learns what fires now
                while not stop.is_set():
                    self._wakeup.clear()
                    try:
                        if loop.time() >= resend_at:
                            resend_at = loop.time() + interval
                            await self._send(session, await self._resend_payloads())
                        elif self._changed:
                            await self._send(session, *await self._change_payloads())
                        self._book_reads()
                    except StorageError as exc:
                        # The book could not be read (a database restarting): what changed
                        # is kept, and the next turn reads again. The service, and the
                        # webhooks' deliveries beside this, must not end for it.
                        self._book_fails(exc)
                        resend_at = min(resend_at, loop.time() + BOOK_RETRY_S)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, resend_at - loop.time())):
                            await self._wakeup.wait()
                if self._changed:  # a resolution in the last moments still goes out
                    await self._send(session, *await self._change_payloads())
        finally:
            unsubscribe()
            self._loop = None

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    def _book_fails(self, exc: StorageError) -> None:
        if not self._book_failing:  # once per outage
            log.error("alertmanager %s: the alert book cannot be read (%s); trying again",
                      self.describe(), exc)
        self._book_failing = True

    def _book_reads(self) -> None:
        if self._book_failing:
            log.info("alertmanager %s: the alert book can be read again", self.describe())
        self._book_failing = False

    async def _change_payloads(self) -> tuple[list[Payload], set[str]]:
        """The payloads of the changed alerts, and which fingerprints they cover. Raises
        StorageError, with the changes kept for the next turn."""
        changed, self._changed = self._changed, set()
        book = self._book
        try:  # read everything first: a failure then leaves nothing half tracked
            views = await asyncio.to_thread(lambda: {fp: book.get(fp) for fp in changed})
        except StorageError:
            self._changed |= changed
            raise
        payloads: list[Payload] = []
        for fingerprint, view in views.items():
            payloads += self._track(fingerprint, None if view is None else view.alert)
        return payloads + self._take_resolutions(every=False), changed

    async def _resend_payloads(self) -> list[Payload]:
        """Everything firing, and the end of what was told and ended. Raises StorageError
        before anything is tracked."""
        book, told = self._book, list(self._firing)

        def read() -> tuple[list[AlertView], dict[str, AlertView | None]]:
            views = book.alerts(AlertStatus.FIRING, (), FIRING_MAX)
            firing = {view.alert.fingerprint for view in views}
            return views, {fp: book.get(fp) for fp in told if fp not in firing}  # ended

        covered, self._changed = self._changed, set()  # everything is read afresh below
        try:
            views, ended = await asyncio.to_thread(read)
        except StorageError:
            self._changed |= covered
            raise
        payloads: list[Payload] = []
        for view in views:
            payloads += self._track(view.alert.fingerprint, view.alert)
        for fingerprint, gone in ended.items():
            payloads += self._track(fingerprint, None if gone is None else gone.alert)
        self._heard_at.clear()  # changes that were nothing to send (e.g. pending)
        return payloads + self._take_resolutions(every=True)

    def _track(self, fingerprint: str, alert: Alert | None) -> list[Payload]:
        """The firing payload of an alert's current state, if it fires; resolutions of what
        Alertmanager was told before and is no longer so go to `_resolutions`."""
        now = self._clock_ns()
        heard = self._heard_at.pop(fingerprint, now)
        sent = self._firing.get(fingerprint)
        if alert is None or alert.status is not AlertStatus.FIRING:
            self._firing.pop(fingerprint, None)
            if sent is not None:  # told it fires: tell it ended (pending again counts too)
                self._unsent_since.setdefault(fingerprint, heard)
                ended = now if alert is None or alert.ends_at_ns is None else alert.ends_at_ns
                self._resolve(sent, alert, ended, now)
            return []
        labels = label_set(alert)
        if sent != labels:  # news: it fires, or fires at a new level
            self._unsent_since.setdefault(fingerprint, heard)
        if sent is not None and sent != labels:  # a new level: the old label set ends now
            self._resolve(sent, alert, now, now)
        self._firing[fingerprint] = labels
        self._resolutions.pop(_key(labels), None)  # fires again: its old end is void
        ahead = int(ENDS_AFTER_RESENDS * self.settings.resend_interval_s * _NS_PER_S)
        return [postable(alert, labels, now + ahead, self._external_url)]

    def _resolve(self, labels: dict[str, str], alert: Alert | None, ended_ns: int,
                 now: int) -> None:
        if alert is None:  # forgotten by the book (pruned): labels are all that is left
            payload: Payload = {"labels": labels, "endsAt": format_rfc3339(ended_ns)}
        else:
            payload = postable(alert, labels, ended_ns, self._external_url)
        until = now + int(RESOLVED_RETENTION_S * _NS_PER_S)
        self._resolutions[_key(labels)] = _Resolution(payload, until)

    def _take_resolutions(self, *, every: bool) -> list[Payload]:
        """The fresh resolutions, or (`every`) all still retained; forgets the expired."""
        now = self._clock_ns()
        for key in [key for key, kept in self._resolutions.items() if kept.until_ns <= now]:
            del self._resolutions[key]
        taken = []
        for kept in self._resolutions.values():
            if every or kept.fresh:
                kept.fresh = False
                taken.append(kept.payload)
        return taken

    async def _send(self, session: aiohttp.ClientSession, payloads: list[Payload],
                    covered: Collection[str] | None = None) -> None:
        """POST `payloads`, which carry the changes of the `covered` fingerprints (None: of
        every one, a re-send); once all are taken, their latency is observed."""
        if not payloads:
            # Nothing sent, nothing taken: a change that came to no payload (pending again
            # after a failed send, say) keeps its start until a send carries its news.
            return
        since = self._unsent_since
        starts = {fp: since[fp] for fp in (since if covered is None else covered) if fp in since}
        for start in range(0, len(payloads), BATCH_MAX):
            batch = payloads[start:start + BATCH_MAX]
            failure = await self._post(session, orjson.dumps(batch))
            if failure is None:
                self.sent_total += len(batch)
                if self._failing is not None:
                    log.info("Alertmanager %s takes alerts again", self.describe())
                self._failing = None
                continue
            self.failed_total += len(batch)
            # Once per outage and cause, not once a minute: the next re-send retries anyway.
            if failure != self._failing:
                log.warning("Alertmanager %s did not take %d alerts: %s; the next re-send "
                            "(every %gs) carries them again", self.describe(),
                            len(payloads) - start, failure, self.settings.resend_interval_s)
            self._failing = failure
            return  # the rest would wait out the same time-out; the re-send carries them
        now = self._clock_ns()
        for fingerprint, started in starts.items():
            if since.get(fingerprint) == started:  # not changed again while being sent
                del since[fingerprint]
        self.latency.observe_ages(now, starts.values())

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> str | None:
        """POST one batch; None when it was taken, else why not (never raises for the network)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with session.post(self.settings.api_url, data=body, headers=self._headers,
                                    timeout=timeout, ssl=self._ssl or True,
                                    allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return None
                text = await response.content.read(REASON_MAX_CHARS)
                detail = " ".join(text.decode("utf-8", errors="replace").split())
                return f"{response.status} {response.reason or ''} {detail}".strip()
        except TimeoutError:
            return f"no answer within {self.settings.timeout_s:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return " ".join((str(exc) or type(exc).__name__).split())[:REASON_MAX_CHARS]


def _key(labels: dict[str, str]) -> LabelKey:
    """Alertmanager's identity of an alert: its whole label set."""
    return tuple(sorted(labels.items()))
