"""The worker that delivers the outbox's deliveries and applies each attempt's outcome.

Deliveries wait in `rules.outbox.Outbox` (SQLite, or a PostgreSQL several instances
share); this module claims the due ones, posts them (`rules.webhook`), and records what came
of it: delivered, retried after a backoff, or dead. Several deliverers on one shared outbox
each attempt what they claimed, so a notification goes out once while all are up and still
goes out when one is down: its claims run out and another takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from rules.outbox import Delivery, Outbox, Scope
from rules.routing import DEFAULT_MAX_AGE, Receiver, Router
from rules.webhook import Outcome, describe, post
from siaga_core.durations import format_duration, to_ns
from siaga_core.errors import StorageError
from siaga_core.histogram import Histogram

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000

Receivers = Router | Mapping[str, Receiver]
SessionFactory = Callable[[], aiohttp.ClientSession]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How the deliverer retries and paces itself; tests shrink the times."""

    backoff_initial_s: float = 1.0  # attempt n waits up to initial * 2^(n-1), fully jittered
    # Alertmanager's cap too; and a receiver's first success makes the rest due at once.
    backoff_max_s: float = 60.0
    concurrency: int = 8  # attempts at once: alerts and receivers never wait on each other
    idle_s: float = 60.0  # look at the outbox at least this often, whatever the clock did
    drain_s: float = 5.0  # at shutdown, attempts in flight get this long; the rest wait
    keep_delivered_s: float = 7 * 86400.0  # a week of delivered bodies to look into
    prune_every_s: float = 3600.0  # pruning is a cheap indexed delete; hourly is plenty
    # A claim's lease: the slowest receiver's timeout and this margin for the outbox writes
    # around the attempt (a PostgreSQL connection may take its 10 s connect timeout). Too
    # short, and another instance sends again what is still in flight (a duplicate the
    # receiver drops by its id); too long, and a dead instance's claims wait that long.
    lease_margin_s: float = 10.0
    # The outbox could not be read or written (a full disk, a locked file, PostgreSQL away):
    # deliveries wait in it, and the deliverer looks again this soon.
    store_retry_s: float = 1.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.lease_margin_s <= 0:
            raise ValueError(f"lease_margin_s must be positive, got {self.lease_margin_s}")

    def lease_ns(self, receivers: Iterable[Receiver]) -> int:
        """How long a claim lasts: one attempt to the slowest of `receivers`, and the margin."""
        slowest_s = max((receiver.timeout_s for receiver in receivers), default=0.0)
        return int((slowest_s + self.lease_margin_s) * _NS_PER_S)

    def backoff_s(self, attempts: int, rng: random.Random) -> float:
        """The wait after the `attempts`-th failed attempt (1 for the first)."""
        # Full jitter (uniform from 0) spreads the retries of many alerts after an outage.
        exponent = min(max(attempts - 1, 0), 32)  # 2^32 s is past any cap: stop growing
        return rng.uniform(0, min(self.backoff_max_s, self.backoff_initial_s * 2.0**exponent))


class Deliverer:
    """Delivers due deliveries, applying each attempt's outcome (the retry stage).

    Concurrent across alerts and receivers (up to `policy.concurrency`), in order within one
    alert for one receiver: it attempts only what it claimed from the outbox, and the outbox
    hands out one alert's deliveries to a receiver one at a time, across instances too. A
    retryable failure waits the jittered backoff or the receiver's `Retry-After`, whichever
    is longer; a delivery older than its receiver's `max_age`, or refused for good (4xx), is
    dead. A claim lasts one attempt (`DeliveryPolicy.lease_ns`); claims cut short at
    shutdown are given back.
    """

    def __init__(
        self,
        outbox: Outbox,
        receivers: Receivers,
        session_factory: SessionFactory = aiohttp.ClientSession,
        clock_ns: Callable[[], int] = time.time_ns,
        *,
        policy: DeliveryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._receivers = receivers
        self._session_factory = session_factory
        self._clock_ns = clock_ns
        self._policy = policy or DeliveryPolicy()
        configured = receivers.receivers if isinstance(receivers, Router) else receivers
        self._lease_ns = self._policy.lease_ns(configured.values())
        # Several instances share the outbox: each takes only what it can send (see Scope);
        # another receiver's deliveries once older than any receiver keeps trying.
        self._names = frozenset(configured)
        self._foreign_after_ns = to_ns(max([DEFAULT_MAX_AGE, *(
            receiver.max_age for receiver in configured.values())]))
        self._shared = outbox.dialect == "postgresql"
        # From a notification's creation (its alert raised, changed or resolved) to its
        # receiver's 2xx, retries included: the latency an operator pages on.
        self.latency = Histogram()
        self._rng = rng or random.Random()
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        # While delivering (not draining): where an attempt handed over by `enqueue` runs.
        self._attempts: tuple[aiohttp.ClientSession, asyncio.TaskGroup] | None = None
        self._claiming = 0  # slots a claim in a worker thread may fill when it returns
        self._pruned_ns: int | None = None
        self._store_failing = False

    def wake(self) -> None:
        """Something was enqueued: look now. Safe to call from any thread."""
        if self._loop is not None:  # not running: run() starts by looking at the outbox
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def enqueue(self, items: Sequence[tuple[str, str, bytes]], created_ns: int) -> list[str]:
        """Store (receiver, fingerprint, body) deliveries, all or none (the dispatcher's
        way in); their ids. Blocking: one outbox transaction.

        Called in the delivering loop (a rule's change, at a reading) with slots free, the
        due ones are claimed in that same transaction and attempted at once. The other way,
        a wake, a look at the outbox and a claim in a worker thread, took 12 ms at the
        median and 40 ms at the 99th percentile from a page's commit to its POST, under a
        background of 99,000 readings/s on one core (bench/cores.py's alert probes).
        From another thread, with no slot free, or while the deliverer is not delivering
        (stopping, cancelled), the deliveries are stored unclaimed and the deliverer woken.
        """
        slots = self._slots_here()
        if slots <= 0 or self._attempts is None:
            ids = self._outbox.enqueue_many(items, created_ns)
            self.wake()
            return ids
        session, group = self._attempts
        ids, claimed = self._outbox.enqueue_claimed(items, created_ns, self._clock_ns(), slots,
                                                    self._lease_ns)
        for started, delivery in enumerate(claimed):
            try:
                task = group.create_task(self._attempt(session, delivery))
            except RuntimeError:  # the group is closing (a child failed): no attempt now
                self._outbox.release([later.id for later in claimed[started:]])
                return ids
            self._in_flight[delivery.id] = task
        if len(claimed) < len(ids):
            self._wakeup.set()  # one waits behind its alert's older delivery: a look decides
        return ids

    def _slots_here(self) -> int:
        """Attempts `enqueue` may start: none unless called in the delivering loop's thread,
        where nothing else runs meanwhile."""
        if self._attempts is None or self._loop is None:
            return 0
        try:
            if asyncio.get_running_loop() is not self._loop:
                return 0
        except RuntimeError:  # a worker thread
            return 0
        return self._policy.concurrency - len(self._in_flight) - self._claiming

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then give attempts in flight `drain_s` to finish."""
        self._loop = asyncio.get_running_loop()
        try:
            async with self._session_factory() as session, asyncio.TaskGroup() as group:
                group.create_task(self._wake_on(stop))
                self._attempts = session, group
                try:
                    await self._deliver(session, group, stop)
                finally:
                    # Before the group closes, also when cancelled: a page made meanwhile
                    # is stored unclaimed, for the next start (or another instance).
                    self._attempts = None
                await self._drain()
        finally:
            self._loop = None

    async def _deliver(self, session: aiohttp.ClientSession, group: asyncio.TaskGroup,
                       stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wakeup.clear()
            try:
                await self._start_due(session, group)
                await self._maybe_prune()
                timeout = await self._until_next()
                self._store_works()
            except StorageError as exc:
                # Claiming writes, so a full disk or a database away is met here: it must
                # not end delivery, only pause it.
                self._store_fails(exc)
                timeout = self._policy.store_retry_s
            await self._sleep(timeout)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    async def _start_due(self, session: aiohttp.ClientSession, group: asyncio.TaskGroup) -> None:
        free = self._policy.concurrency - len(self._in_flight)
        if free <= 0:
            return
        now = self._clock_ns()
        self._claiming = free  # `enqueue` meanwhile starts attempts only beside these
        try:
            claimed = await asyncio.to_thread(self._outbox.claim, now, free, self._lease_ns,
                                              tuple(self._in_flight), self._scope(now))
        finally:
            self._claiming = 0
        for delivery in claimed:
            self._in_flight[delivery.id] = group.create_task(self._attempt(session, delivery))

    async def _until_next(self) -> float:
        """Seconds until the outbox next needs a look (a free slot and something due)."""
        timeout = self._policy.idle_s
        if len(self._in_flight) < self._policy.concurrency:
            now = self._clock_ns()
            next_ns = await asyncio.to_thread(self._outbox.next_due_ns, now,
                                              tuple(self._in_flight), self._scope(now))
            if next_ns is not None:
                wait_s = (next_ns - self._clock_ns()) / _NS_PER_S
                timeout = min(self._policy.idle_s, max(0.0, wait_s))
        return timeout

    def _scope(self, now_ns: int) -> Scope | None:
        """What this instance may claim; everything when the outbox is its own (SQLite)."""
        if not self._shared:
            return None
        return Scope(self._names, now_ns - self._foreign_after_ns)

    def _store_fails(self, exc: StorageError) -> None:
        if not self._store_failing:  # once per outage, not once per look
            log.error("the outbox cannot be used, deliveries wait: %s (trying again every"
                      " %gs)", exc, self._policy.store_retry_s)
        self._store_failing = True

    def _store_works(self) -> None:
        if self._store_failing:
            log.warning("the outbox works again; delivering")
        self._store_failing = False

    async def _sleep(self, seconds: float) -> None:
        # Woken early by wake(), by a finished attempt (its alert's next delivery may be
        # due) and by stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        _, unfinished = await asyncio.wait(self._in_flight.values(), timeout=self._policy.drain_s)
        cut = [delivery_id for delivery_id, task in self._in_flight.items() if task in unfinished]
        for task in unfinished:
            task.cancel()  # still pending in the outbox: attempted again after the restart
        # Given back rather than left to run out: another instance (or this one restarted)
        # takes them at once. A store too broken to say so leaves the leases to run out.
        await self._release(cut)

    async def _release(self, delivery_ids: list[str]) -> None:
        try:
            await asyncio.to_thread(self._outbox.release, delivery_ids)
        except StorageError:
            log.exception("could not give back the claims on %d deliveries; they wait out"
                          " their lease", len(delivery_ids))

    async def _maybe_prune(self) -> None:
        now = self._clock_ns()
        every_ns = int(self._policy.prune_every_s * _NS_PER_S)
        if self._pruned_ns is not None and now - self._pruned_ns < every_ns:
            return
        self._pruned_ns = now
        keep_ns = int(self._policy.keep_delivered_s * _NS_PER_S)
        await asyncio.to_thread(self._outbox.prune, now - keep_ns)

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        try:
            await self._attempt_once(session, delivery)
        except Exception:
            # One delivery's trouble (a full disk, a bug) must not stop the others. It stays
            # pending; holding its slot for the idle interval keeps it from spinning.
            log.exception("delivery %s to %s failed unexpectedly", delivery.id, delivery.receiver)
            await asyncio.sleep(self._policy.idle_s)
            await self._release([delivery.id])
        finally:
            self._in_flight.pop(delivery.id, None)
            self._wakeup.set()

    async def _attempt_once(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        receivers = self._receivers
        receiver = (receivers.receiver(delivery.receiver) if isinstance(receivers, Router)
                    else receivers.get(delivery.receiver))
        if receiver is None:
            gone = f"receiver {delivery.receiver!r} is no longer configured"
            return await self._dead(delivery, gone, attempted=False)
        deadline_ns = delivery.created_ns + to_ns(receiver.max_age)
        if self._clock_ns() >= deadline_ns:
            old = (f"older than max_age {format_duration(receiver.max_age)}"
                   f" (last error: {delivery.last_error or 'never attempted'})")
            return await self._dead(delivery, old, attempted=False)
        outcome = await post(session, receiver, delivery.id, delivery.body,
                             self._clock_ns() / _NS_PER_S)
        await self._apply(delivery, receiver, outcome, deadline_ns)

    async def _apply(
        self, delivery: Delivery, receiver: Receiver, outcome: Outcome, deadline_ns: int
    ) -> None:
        attempt = delivery.attempts + 1
        if outcome.kind == "delivered":
            log.info("delivered %s to %s (attempt %d)", delivery.id, describe(receiver), attempt)
            self.latency.observe_ages(self._clock_ns(), (delivery.created_ns,))
            await asyncio.to_thread(self._outbox.mark_delivered, delivery.id, self._clock_ns())
            await asyncio.to_thread(self._outbox.hurry, delivery.receiver, self._clock_ns())
            return
        if outcome.kind == "failed":
            return await self._dead(delivery, f"{outcome.reason} (not retried)", attempted=True)
        delay_s = max(outcome.retry_after_s or 0.0, self._policy.backoff_s(attempt, self._rng))
        next_ns = self._clock_ns() + int(delay_s * _NS_PER_S)
        if next_ns >= deadline_ns:
            late = f"{outcome.reason}; no attempt left within {format_duration(receiver.max_age)}"
            return await self._dead(delivery, late, attempted=True)
        log.warning("delivery %s to %s failed (attempt %d): %s; retrying in %.1fs",
                    delivery.id, describe(receiver), attempt, outcome.reason, delay_s)
        asked = outcome.retry_after_s
        not_before = None if not asked else self._clock_ns() + int(asked * _NS_PER_S)
        await asyncio.to_thread(self._outbox.mark_retry, delivery.id, next_ns, outcome.reason,
                                not_before)

    async def _dead(self, delivery: Delivery, error: str, *, attempted: bool) -> None:
        log.error("delivery %s to %s is dead: %s", delivery.id, delivery.receiver, error)
        await asyncio.to_thread(self._outbox.mark_dead, delivery.id, error, self._clock_ns(),
                                attempted=attempted)
