"""Delivery end to end: dispatcher -> outbox -> deliverer -> a real HTTP receiver.

Why one module of some 480 lines: every test here stands on the same rig (a manual clock, a
seeded rng, receivers that hold or refuse their answer), and each delivery rule (order,
retries, Retry-After, max age, restarts, routes) is read against the same rig. Every test
runs on both outboxes: SQLite, and a fresh database on the session's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from rules.alert import Notification, fingerprint
from rules.delivery import Deliverer, DeliveryPolicy
from rules.dispatch import Dispatcher
from rules.outbox import Delivery, Outbox
from rules.routing import Receiver, Route, Router
from rules.webhook import build_body
from tests.polling import eventually
from tests.receiver import Answer, RecordingReceiver
from tests.rules.books import OutboxPlace

EXTERNAL_URL = "https://siaga.example"
# Retries within a fraction of a second; a long idle interval, so a delivery that arrives
# quickly proves the deliverer was woken rather than polling.
FAST = DeliveryPolicy(backoff_initial_s=0.02, backoff_max_s=0.2, idle_s=30.0, drain_s=0.1)
SECOND_NS = 1_000_000_000
HOUR_NS = 3600 * SECOND_NS
MANGGARAI = fingerprint("FloodLevel", "pa-manggarai")
KATULAMPA = fingerprint("FloodLevel", "pa-katulampa")


class ManualClock:
    """A clock that moves only when the test moves it.

    With it, what is due and what is too old is decided by the test, not by how long a busy
    machine took between two attempts: the deliverer's timing rules are checked exactly.
    """

    def __init__(self, start_ns: int = 1_700_000_000 * SECOND_NS) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance_to(self, when_ns: int) -> None:
        self.now_ns = max(self.now_ns, when_ns)


class HeldReceiver(RecordingReceiver):
    """A receiver that records each request on arrival and answers only once `release` is set:
    slow for exactly as long as the test needs, however slow or fast the machine is."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        await self.release.wait()
        return response


@pytest.fixture
async def held() -> AsyncIterator[HeldReceiver]:
    receiver = HeldReceiver()
    await receiver.start()
    yield receiver
    receiver.release.set()
    await receiver.stop()


@pytest.fixture
async def down() -> AsyncIterator[RecordingReceiver]:
    """A receiver whose port is known but which is not listening until the test starts it."""
    receiver = RecordingReceiver()
    yield receiver
    await receiver.stop()


@dataclass
class Siaga:
    """The notification side, wired as the service wires it."""

    outbox: Outbox
    deliverer: Deliverer
    dispatcher: Dispatcher

    def dispatch(self, *notifications: Notification) -> list[str]:
        return [i for n in notifications for i in self.dispatcher.dispatch(n).values()]

    def delivery(self, delivery_id: str) -> Delivery:
        found = self.outbox.get(delivery_id)
        assert found is not None
        return found


@pytest.fixture
def wire(outbox_place: OutboxPlace) -> Iterator[Callable[..., Siaga]]:
    opened: list[Outbox] = []

    def make(router: Router, *, policy: DeliveryPolicy = FAST,
             clock: Callable[[], int] = time.time_ns,
             enqueue_clock: Callable[[], int] | None = None) -> Siaga:
        outbox = outbox_place.open(clock)
        opened.append(outbox)
        # A seeded jitter: a run that fails can be run again the same way.
        deliverer = Deliverer(outbox, router, clock_ns=clock, policy=policy,
                              rng=random.Random(7))
        dispatcher = Dispatcher(router, deliverer.enqueue, EXTERNAL_URL,
                                enqueue_clock or clock)
        return Siaga(outbox, deliverer, dispatcher)

    yield make
    for outbox in opened:
        outbox.close()


@contextlib.asynccontextmanager
async def delivering(siaga: Siaga) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(siaga.deliverer.run(stop))
        try:
            yield
        finally:
            stop.set()


async def attempted(siaga: Siaga, delivery_id: str, more_than: int) -> Delivery:
    """The delivery once it was attempted more than `more_than` times, or finished."""

    def changed() -> Delivery | None:
        delivery = siaga.delivery(delivery_id)
        return delivery if delivery.attempts > more_than or delivery.state != "pending" else None

    await eventually(changed, what=f"attempt {more_than + 1} of {delivery_id}, or its end")
    return siaga.delivery(delivery_id)


def one_route(*receivers: Receiver) -> Router:
    return Router(receivers, [Route(receivers=[r.name for r in receivers])])


def flood(fp: str = MANGGARAI, level: str = "siaga-3", *, resolved: bool = False,
          reason: str = "new", severity: str = "warning") -> Notification:
    return Notification(
        fingerprint=fp,
        status="resolved" if resolved else "firing",
        reason="resolved" if resolved else reason,  # type: ignore[arg-type]
        labels={"alertname": "FloodLevel", "severity": severity, "device_id": "pa-manggarai",
                "kind": "water-level", "level": level},
        annotations={"summary": f"Manggarai at {level}", "description": "water rising"},
        starts_at_ns=1_700_000_000_000_000_000,
        ends_at_ns=1_700_000_900_000_000_000 if resolved else None,
    )


def a_flood_rising_and_falling(fp: str) -> list[Notification]:
    return [flood(fp, "siaga-3"), flood(fp, "siaga-2", reason="changed"),
            flood(fp, "siaga-2", resolved=True)]


def assert_each_delivered_once_in_order(server: RecordingReceiver, ids: Iterable[str]) -> None:
    delivered = server.delivered()
    assert Counter(r.delivery for r in delivered) == Counter(dict.fromkeys(ids, 1))
    by_alert: dict[str, list[str]] = {}
    for request in delivered:
        by_alert.setdefault(request.json["alerts"][0]["fingerprint"], []).append(request.delivery)
    for order in by_alert.values():
        assert order == [i for i in ids if i in order]  # ids are listed in dispatch order


def interleaved(first: list[Notification], second: list[Notification]) -> list[Notification]:
    return [n for pair in zip(first, second, strict=False) for n in pair] + first[len(second):]


async def test_a_notification_arrives_in_the_spec_format_signed(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    clock = ManualClock()
    siaga = wire(one_route(Receiver(name="bpbd", url=server.url, secret=SecretStr("k3y"))),
                 clock=clock)
    sent = flood()
    async with delivering(siaga):
        (delivery_id,) = siaga.dispatch(sent)
        await eventually(lambda: len(server.delivered()) == 1, what="one delivery")
    (request,) = server.requests
    assert request.body == build_body(sent, "bpbd", EXTERNAL_URL)
    body: dict[str, Any] = request.json
    assert list(body) == ["version", "groupKey", "truncatedAlerts", "status", "receiver",
                          "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                          "alerts"]
    (alert,) = body["alerts"]
    assert list(alert) == ["status", "labels", "annotations", "startsAt", "endsAt",
                           "generatorURL", "fingerprint"]
    assert (body["version"], body["status"], body["receiver"]) == ("4", "firing", "bpbd")
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["level"] == "siaga-3"
    assert (alert["startsAt"], alert["endsAt"]) == ("2023-11-14T22:13:20Z",
                                                   "0001-01-01T00:00:00Z")
    assert alert["fingerprint"] == MANGGARAI
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Siaga-Delivery"] == delivery_id
    timestamp = request.headers["X-Siaga-Timestamp"]
    assert timestamp == str(clock() // SECOND_NS)  # signed at the time of the attempt
    expected = hmac.new(b"k3y", timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(request.headers["X-Siaga-Signature"],
                               "sha256=" + expected.hexdigest())


async def test_the_latency_to_delivery_counts_from_creation_through_the_retries(
    wire: Callable[..., Siaga], down: RecordingReceiver
) -> None:
    clock = ManualClock()
    siaga = wire(one_route(Receiver(name="bpbd", url=down.url)), clock=clock)
    async with delivering(siaga):
        siaga.dispatch(flood())
        await eventually(lambda: siaga.outbox.counts_by_outcome()["retried"] >= 1,
                         what="a failed attempt")
        assert siaga.deliverer.latency.snapshot().count == 0  # failures are not deliveries
        clock.advance_to(clock() + 90 * SECOND_NS)
        await down.start()
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="delivered")
    snapshot = siaga.deliverer.latency.snapshot()
    assert snapshot.count == 1
    assert snapshot.total == 90.0  # the clock moved only by the test


async def test_a_receiver_that_was_down_gets_every_notification_once_in_order(
    wire: Callable[..., Siaga], down: RecordingReceiver
) -> None:
    siaga = wire(one_route(Receiver(name="bpbd", url=down.url)))
    async with delivering(siaga):
        ids = siaga.dispatch(*interleaved(a_flood_rising_and_falling(MANGGARAI),
                                          a_flood_rising_and_falling(KATULAMPA)))
        await eventually(lambda: siaga.outbox.counts_by_outcome()["retried"] >= 4,
                         what="four failed attempts")
        await down.start()
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="nothing pending")
    assert_each_delivered_once_in_order(down, ids)
    assert siaga.outbox.counts_by_outcome()["delivered"] == 6


async def test_a_receiver_answering_503_gets_every_notification_once_in_order(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    server.script.extend([Answer(503)] * 5 + [Answer(500)] * 2)
    siaga = wire(one_route(Receiver(name="bpbd", url=server.url)))
    async with delivering(siaga):
        ids = siaga.dispatch(*interleaved(a_flood_rising_and_falling(MANGGARAI),
                                          a_flood_rising_and_falling(KATULAMPA)))
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="nothing pending")
    assert len(server.requests) == 6 + 7
    assert_each_delivered_once_in_order(server, ids)


async def test_a_receiver_back_from_an_outage_gets_the_backlog_without_waiting_out_backoffs(
    wire: Callable[..., Siaga], down: RecordingReceiver
) -> None:
    # Backoffs grown while the receiver was down; the first delivery that gets through
    # makes the others due at once. The clock stands still, so no backoff ever runs out:
    # only that hurry can deliver the backlog.
    slow = DeliveryPolicy(backoff_initial_s=30.0, backoff_max_s=30.0, idle_s=30.0, drain_s=0.1)
    clock = ManualClock()
    siaga = wire(one_route(Receiver(name="bpbd", url=down.url)), policy=slow, clock=clock)
    async with delivering(siaga):
        ids = siaga.dispatch(flood(MANGGARAI), flood(KATULAMPA))
        await eventually(lambda: siaga.outbox.counts_by_outcome()["retried"] >= 2,
                         what="both refused once")
        assert all(siaga.delivery(i).next_attempt_ns > clock() for i in ids)
        await down.start()
        siaga.dispatch(flood(fingerprint("FloodLevel", "pa-depok")))  # gets through at once
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="the backlog delivered")
    assert {request.delivery for request in down.delivered()} >= set(ids)


async def test_retry_after_is_honoured(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    server.script.append(Answer(429, {"Retry-After": "1"}))
    clock = ManualClock()
    siaga = wire(one_route(Receiver(name="bpbd", url=server.url)), clock=clock)
    async with delivering(siaga):
        (delivery_id,) = siaga.dispatch(flood())
        await eventually(lambda: siaga.delivery(delivery_id).attempts == 1, what="the 429")
        # The fast backoff alone would retry within 0.02 s; Retry-After asks for one second.
        assert siaga.delivery(delivery_id).next_attempt_ns == clock() + SECOND_NS
        assert siaga.outbox.due(clock() + SECOND_NS - 1, limit=1) == []
        clock.advance_to(clock() + SECOND_NS)
        siaga.deliverer.wake()
        await eventually(lambda: len(server.delivered()) == 1, what="the retry delivered")
    assert [r.status for r in server.requests] == [429, 200]


async def test_a_404_makes_the_delivery_dead_without_retrying(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    server.default = Answer(404)
    siaga = wire(one_route(Receiver(name="bpbd", url=server.url)))
    async with delivering(siaga):
        (delivery_id,) = siaga.dispatch(flood())
        await eventually(siaga.outbox.dead, what="a dead delivery")
    (dead,) = siaga.outbox.dead()
    assert dead.id == delivery_id
    assert dead.last_error is not None and dead.last_error.startswith("404 Not Found")
    assert len(server.requests) == 1
    assert siaga.outbox.counts_by_outcome() == {"delivered": 0, "retried": 0, "dead": 1}


async def test_a_notification_older_than_max_age_is_dead_unsent(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    siaga = wire(one_route(Receiver(name="bpbd", url=server.url)),
                 enqueue_clock=lambda: time.time_ns() - 25 * HOUR_NS)
    async with delivering(siaga):
        siaga.dispatch(flood())
        await eventually(siaga.outbox.dead, what="a dead delivery")
    (dead,) = siaga.outbox.dead()
    assert dead.last_error == "older than max_age 1d (last error: never attempted)"
    assert server.requests == []


async def test_retries_stop_at_max_age_with_a_dead_delivery(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    # The test moves the clock to each retry's due time, as an idle machine would; it never
    # passes the deadline itself, so the deliverer must give up on its own when the next
    # backoff would end past max_age.
    server.default = Answer(503)
    clock = ManualClock()
    receiver = Receiver(name="bpbd", url=server.url, max_age=timedelta(milliseconds=500))
    siaga = wire(one_route(receiver), clock=clock)
    deadline_ns = clock() + 500_000_000
    async with delivering(siaga):
        (delivery_id,) = siaga.dispatch(flood())
        delivery = await attempted(siaga, delivery_id, more_than=0)
        while delivery.state == "pending":  # a failed attempt: its retry is due before max_age
            assert delivery.next_attempt_ns < deadline_ns
            clock.advance_to(delivery.next_attempt_ns)
            siaga.deliverer.wake()
            delivery = await attempted(siaga, delivery_id, more_than=delivery.attempts)
    (dead,) = siaga.outbox.dead()
    assert dead.last_error is not None
    assert dead.last_error.startswith("503 Service Unavailable")
    assert dead.last_error.endswith("; no attempt left within 500ms")
    assert dead.attempts == len(server.requests) >= 2
    assert clock() < deadline_ns  # every attempt was made within max_age
    assert siaga.outbox.pending_count() == 0


async def test_a_retry_that_comes_due_only_after_max_age_is_dead_unsent_with_the_last_error(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    # What a loaded machine does: the retry was due within max_age, but by the time the
    # deliverer gets to it the notification is too old to send.
    server.default = Answer(503)
    clock = ManualClock()
    receiver = Receiver(name="bpbd", url=server.url, max_age=timedelta(milliseconds=500))
    siaga = wire(one_route(receiver), clock=clock)
    async with delivering(siaga):
        (delivery_id,) = siaga.dispatch(flood())
        await eventually(lambda: siaga.delivery(delivery_id).attempts == 1, what="the 503")
        first_error = siaga.delivery(delivery_id).last_error
        assert first_error is not None and first_error.startswith("503 Service Unavailable")
        clock.advance_to(clock() + 500_000_000)
        siaga.deliverer.wake()
        await eventually(siaga.outbox.dead, what="a dead delivery")
    (dead,) = siaga.outbox.dead()
    assert dead.last_error == f"older than max_age 500ms (last error: {first_error})"
    assert dead.attempts == len(server.requests) == 1


async def test_a_restart_delivers_what_was_pending_with_the_same_delivery_id(
    wire: Callable[..., Siaga], down: RecordingReceiver
) -> None:
    router = one_route(Receiver(name="bpbd", url=down.url))
    before = wire(router)
    async with delivering(before):
        ids = before.dispatch(*a_flood_rising_and_falling(MANGGARAI))
        await eventually(lambda: before.outbox.counts_by_outcome()["retried"] >= 2,
                         what="two failed attempts")
    before.outbox.close()
    await down.start()
    after = wire(router)  # the same file, a new outbox and deliverer: a restarted service
    async with delivering(after):
        await eventually(lambda: after.outbox.pending_count() == 0, what="nothing pending")
    assert_each_delivered_once_in_order(down, ids)


async def test_an_attempt_in_flight_at_shutdown_is_sent_again_after_restart(
    wire: Callable[..., Siaga], held: HeldReceiver
) -> None:
    router = one_route(Receiver(name="bpbd", url=held.url))
    before = wire(router)
    async with delivering(before):
        (delivery_id,) = before.dispatch(flood())
        # Held unanswered: still in flight when Siaga stops, whatever the machine's speed.
        await eventually(lambda: len(held.requests) == 1, what="the attempt arriving")
    before.outbox.close()
    held.release.set()
    after = wire(router)
    async with delivering(after):
        await eventually(lambda: after.outbox.pending_count() == 0, what="nothing pending")
    assert [r.delivery for r in held.requests] == [delivery_id, delivery_id]


async def test_an_attempt_that_outlives_its_lease_is_not_sent_twice_by_its_own_deliverer(
    wire: Callable[..., Siaga], held: HeldReceiver
) -> None:
    clock = ManualClock()
    siaga = wire(one_route(Receiver(name="bpbd", url=held.url)), clock=clock)
    async with delivering(siaga):
        (stuck,) = siaga.dispatch(flood(MANGGARAI))
        await eventually(lambda: len(held.requests) == 1, what="the attempt arriving")
        clock.advance_to(clock() + HOUR_NS)  # far past its lease, the answer still held
        (later,) = siaga.dispatch(flood(KATULAMPA))
        # The deliverer looked again after the lease ran out (it sent the later one) ...
        await eventually(lambda: len(held.requests) == 2, what="the later attempt arriving")
        assert [r.delivery for r in held.requests] == [stuck, later]  # ... not the stuck one
        held.release.set()
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="delivered")
    assert [r.delivery for r in held.requests] == [stuck, later]
    assert siaga.outbox.counts_by_outcome()["delivered"] == 2


async def test_routes_send_each_alert_to_the_receivers_its_labels_match(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    monitoring = RecordingReceiver()
    await monitoring.start()
    try:
        router = Router(
            [Receiver(name="bpbd", url=server.url),
             Receiver(name="monitoring", url=monitoring.url)],
            [Route(receivers=["bpbd"], match={"kind": "water-level"}),
             Route(receivers=["monitoring"], match_re={"severity": "critical|major"})],
        )
        siaga = wire(router)
        congestion = Notification(
            fingerprint=fingerprint("Congestion", "tr-sudirman"), status="firing", reason="new",
            labels={"alertname": "Congestion", "severity": "critical", "kind": "traffic"},
            annotations={}, starts_at_ns=0, ends_at_ns=None)
        async with delivering(siaga):
            for sent in (flood(MANGGARAI), flood(KATULAMPA, severity="critical"), congestion):
                await asyncio.to_thread(siaga.dispatcher.dispatch, sent)  # from another thread
            await eventually(lambda: siaga.outbox.pending_count() == 0, what="nothing pending")
        assert {r.json["alerts"][0]["fingerprint"] for r in server.delivered()} == {
            MANGGARAI, KATULAMPA}
        assert {r.json["alerts"][0]["fingerprint"] for r in monitoring.delivered()} == {
            KATULAMPA, congestion.fingerprint}
        assert {r.json["receiver"] for r in monitoring.delivered()} == {"monitoring"}
    finally:
        await monitoring.stop()


async def test_the_webhook_url_receiver_gets_everything_as_default(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    siaga = wire(Router([], [], extra_receiver_url=server.url))
    async with delivering(siaga):
        siaga.dispatch(flood())
        await eventually(lambda: len(server.delivered()) == 1, what="one delivery")
    assert server.requests[0].json["receiver"] == "default"


async def test_a_receivers_extra_headers_are_sent(
    wire: Callable[..., Siaga], server: RecordingReceiver
) -> None:
    receiver = Receiver(name="bpbd", url=server.url,
                        headers={"Authorization": "Bearer t0ken", "X-Team": "pusdalops"})
    siaga = wire(one_route(receiver))
    async with delivering(siaga):
        siaga.dispatch(flood())
        await eventually(lambda: len(server.delivered()) == 1, what="one delivery")
    seen = server.requests[0].headers
    assert (seen["Authorization"], seen["X-Team"]) == ("Bearer t0ken", "pusdalops")


async def test_a_slow_receiver_does_not_hold_up_another(
    wire: Callable[..., Siaga], server: RecordingReceiver, held: HeldReceiver
) -> None:
    siaga = wire(one_route(Receiver(name="slow", url=held.url),
                           Receiver(name="fast", url=server.url)))
    async with delivering(siaga):
        slow_id, fast_id = siaga.dispatch(flood())
        await eventually(lambda: siaga.delivery(fast_id).state == "delivered",
                         what="the fast receiver's delivery")
        await eventually(lambda: len(held.requests) == 1, what="the slow receiver's request")
        assert siaga.delivery(slow_id).state == "pending"  # sent, and still unanswered
        held.release.set()
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="nothing pending")


async def test_a_notification_dispatched_in_the_delivering_loop_is_claimed_as_it_is_stored(
    wire: Callable[..., Siaga], held: HeldReceiver
) -> None:
    siaga = wire(one_route(Receiver(name="bpbd", url=held.url)))
    async with delivering(siaga):
        (first,) = siaga.dispatch(flood(MANGGARAI))
        await eventually(lambda: len(held.requests) == 1, what="the first attempt arriving")
        # The deliverer runs: a rule's change (in its loop) is claimed in the transaction that
        # stores it, and attempted without a look at the outbox.
        (second,) = siaga.dispatch(flood(KATULAMPA))
        assert siaga.delivery(second).claimed_by == siaga.outbox.owner
        # Behind its alert's delivery still in flight: stored unclaimed, for a later look.
        (third,) = siaga.dispatch(flood(MANGGARAI, "siaga-2", reason="changed"))
        assert siaga.delivery(third).claimed_by is None
        await eventually(lambda: len(held.requests) == 2, what="the second attempt arriving")
        held.release.set()
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="nothing pending")
    assert_each_delivered_once_in_order(held, [first, second, third])


async def test_a_dispatch_takes_no_slot_beyond_the_concurrency_nor_from_another_thread(
    wire: Callable[..., Siaga], held: HeldReceiver
) -> None:
    siaga = wire(one_route(Receiver(name="bpbd", url=held.url)),
                 policy=replace(FAST, concurrency=1))
    async with delivering(siaga):
        (first,) = siaga.dispatch(flood(MANGGARAI))
        await eventually(lambda: len(held.requests) == 1, what="the first attempt arriving")
        (second,) = siaga.dispatch(flood(KATULAMPA))
        assert siaga.delivery(second).claimed_by is None  # the one slot is taken
        held.release.set()
        await eventually(lambda: siaga.outbox.pending_count() == 0, what="nothing pending")
        # A scheduled job's page comes from a worker thread: it wakes the deliverer, which
        # sends it long before its 30 s idle look.
        (third,) = await asyncio.to_thread(siaga.dispatch, flood(MANGGARAI, "siaga-2"))
        await eventually(lambda: siaga.delivery(third).state == "delivered",
                         what="the worker thread's page delivered")
    assert_each_delivered_once_in_order(held, [first, second, third])


async def test_a_page_made_while_the_deliverer_is_cancelled_is_stored_for_later(
    wire: Callable[..., Siaga], held: HeldReceiver
) -> None:
    siaga = wire(one_route(Receiver(name="bpbd", url=held.url)))
    run = asyncio.create_task(siaga.deliverer.run(asyncio.Event()))
    (first,) = siaga.dispatch(flood(MANGGARAI))
    await eventually(lambda: len(held.requests) == 1, what="the attempt arriving")
    run.cancel()  # a sibling task failed: the deliverer's group aborts its attempts
    await asyncio.sleep(0)  # ... and waits for the one held in flight
    assert not run.done()
    (later,) = siaga.dispatch(flood(KATULAMPA))  # a rule's change meanwhile
    assert siaga.delivery(later).claimed_by is None  # no attempt to start: left for a look
    held.release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    assert [siaga.delivery(i).state for i in (first, later)] == ["pending", "pending"]


def test_a_notification_no_route_takes_is_not_enqueued(wire: Callable[..., Siaga]) -> None:
    siaga = wire(Router([Receiver(name="a", url="http://127.0.0.1:9/")],
                        [Route(receivers=["a"], match={"kind": "traffic"})]))
    assert siaga.dispatch(flood()) == []
    assert siaga.outbox.pending_count() == 0


def test_bodies_are_built_at_enqueue_time_for_each_receiver(wire: Callable[..., Siaga]) -> None:
    siaga = wire(one_route(Receiver(name="a", url="http://127.0.0.1:9/"),
                           Receiver(name="b", url="http://127.0.0.1:9/")))
    first, second = siaga.dispatch(flood())
    stored = [siaga.outbox.get(first), siaga.outbox.get(second)]
    assert [orjson.loads(d.body)["receiver"] for d in stored if d is not None] == ["a", "b"]
