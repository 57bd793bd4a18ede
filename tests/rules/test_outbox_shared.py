"""One outbox, several instances: each delivery claimed by one at a time (issue 18).

Two Outbox objects with two owners stand for two Siaga instances: each has its own
connections, as two processes would. PostgreSQL is the session's real server (a fresh
database per test); webhooks go to a real aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from aiohttp import web

from rules.delivery import Deliverer, DeliveryPolicy
from rules.outbox import Outbox
from rules.routing import Receiver
from siaga.sandbox.postgres import PostgreSQL
from tests.polling import eventually
from tests.receiver import Answer, RecordingReceiver
from tests.rules.books import OutboxPlace, fresh_database

SECOND_NS = 1_000_000_000
FAST = DeliveryPolicy(backoff_initial_s=0.02, backoff_max_s=0.1, idle_s=30.0, drain_s=0.1,
                      concurrency=2)


class ManualClock:
    """A wall clock that moves only when the test moves it: leases run out on the test's word."""

    def __init__(self, start_ns: int = 1_700_000_000 * SECOND_NS) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns


class GatedReceiver(RecordingReceiver):
    """Records each request on arrival; answers only once `gate` is open."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        await self.gate.wait()
        return response


@pytest.fixture
def shared(postgres: PostgreSQL, tmp_path: Path) -> Iterator[OutboxPlace]:
    with fresh_database(postgres, "outbox") as url:
        yield OutboxPlace(tmp_path / "unused.sqlite", url)


@pytest.fixture
async def gated() -> AsyncIterator[GatedReceiver]:
    receiver = GatedReceiver()
    await receiver.start()
    yield receiver
    receiver.gate.set()
    await receiver.stop()


def body(fingerprint: str, n: int) -> bytes:
    """What a receiver needs to tell one alert's notifications apart, and their order."""
    return orjson.dumps({"alerts": [{"fingerprint": fingerprint}], "n": n})


def deliverer(outbox: Outbox, receiver: RecordingReceiver, clock: ManualClock | None = None,
              policy: DeliveryPolicy = FAST) -> Deliverer:
    receivers = {"bpbd": Receiver(name="bpbd", url=receiver.url)}
    return Deliverer(outbox, receivers, clock_ns=clock or time.time_ns, policy=policy,
                     rng=random.Random(7))


@contextlib.asynccontextmanager
async def running(*deliverers: Deliverer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        for one in deliverers:
            group.create_task(one.run(stop))
        try:
            yield
        finally:
            stop.set()


def claim_all(outbox: Outbox, start: threading.Barrier, taken: list[str]) -> None:
    """Claim and finish, a few at a time, until nothing is left to claim."""
    now = time.time_ns()
    start.wait()
    while outbox.pending_count():
        for delivery in outbox.claim(now, 3, 60 * SECOND_NS):
            taken.append(delivery.id)
            outbox.mark_delivered(delivery.id, now)


def test_two_instances_claiming_at_once_never_take_the_same_delivery_and_take_all(
    outbox_place: OutboxPlace,
) -> None:
    # Four per alert: a claimer must also never take a head the other has just delivered
    # (PostgreSQL re-reads the row it locks), nor an alert's later news before its head.
    with outbox_place.open(owner="siaga-a") as a, outbox_place.open(owner="siaga-b") as b:
        items = [("bpbd", f"fp{i}", body(f"fp{i}", n)) for n in range(4) for i in range(50)]
        enqueued = a.enqueue_many(items, time.time_ns())
        start = threading.Barrier(2)
        taken: dict[str, list[str]] = {"a": [], "b": []}
        threads = [threading.Thread(target=claim_all, args=(outbox, start, taken[name]))
                   for name, outbox in (("a", a), ("b", b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        both = taken["a"] + taken["b"]
        assert Counter(both) == Counter(dict.fromkeys(enqueued, 1))  # all, and none twice
        assert a.counts_by_outcome()["delivered"] == 200


async def test_two_deliverers_deliver_each_notification_exactly_once(
    shared: OutboxPlace, gated: GatedReceiver
) -> None:
    with shared.open(owner="siaga-a") as a, shared.open(owner="siaga-b") as b:
        items = [("bpbd", f"fp{i}", body(f"fp{i}", 0)) for i in range(40)]
        enqueued = a.enqueue_many(items, time.time_ns())
        first, second = deliverer(a, gated), deliverer(b, gated)
        async with running(first, second):
            # Each deliverer holds at most `concurrency` (2) attempts: four unanswered at
            # once means both are delivering.
            await eventually(lambda: len(gated.requests) == 4, what="both deliverers' attempts")
            gated.gate.set()
            await eventually(lambda: a.pending_count() == 0, what="everything delivered")
        assert Counter(r.delivery for r in gated.requests) == Counter(dict.fromkeys(enqueued, 1))
        assert first.latency.snapshot().count + second.latency.snapshot().count == 40
        assert a.counts_by_outcome() == {"delivered": 40, "retried": 0, "dead": 0}


async def test_a_dead_claimers_delivery_is_delivered_by_another_after_its_lease(
    shared: OutboxPlace, server: RecordingReceiver
) -> None:
    clock = ManualClock()
    with shared.open(clock, owner="ghost") as ghost:
        orphan = ghost.enqueue("bpbd", "fp-orphan", body("fp-orphan", 0), clock())
        (claimed,) = ghost.claim(clock(), 10, 5 * SECOND_NS)
    # The ghost is gone (its connections closed) without finishing: only its lease is left.
    with shared.open(clock, owner="siaga-b") as b:
        survivor = deliverer(b, server, clock)
        async with running(survivor):
            other = b.enqueue("bpbd", "fp-other", body("fp-other", 0), clock())
            survivor.wake()
            await eventually(lambda: b.pending_count() == 1, what="the other alert delivered")
            assert [r.delivery for r in server.requests] == [other]  # the orphan is held
            assert b.next_due_ns(clock()) == claimed.claimed_until_ns
            clock.now_ns = claimed.claimed_until_ns or 0  # the lease runs out
            survivor.wake()
            await eventually(lambda: b.pending_count() == 0, what="the orphan delivered")
        assert [r.delivery for r in server.requests] == [other, orphan]  # the same id
        delivered = b.get(orphan)
        assert delivered is not None
        assert (delivered.state, delivered.attempts, delivered.claimed_by) == (
            "delivered", 1, None)


async def test_an_instance_leaves_a_receiver_it_does_not_know_to_those_that_do(
    shared: OutboxPlace, server: RecordingReceiver
) -> None:
    # A receiver added to siaga.yaml, instances restarted one at a time: the old one must
    # not take the new receiver's deliveries and mark them dead as "no longer configured".
    clock = ManualClock()
    with shared.open(clock, owner="new") as new, shared.open(clock, owner="old") as old:
        fresh = new.enqueue("pusdalops", "fp1", body("fp1", 0), clock())
        known = new.enqueue("bpbd", "fp1", body("fp1", 0), clock())
        old_one = deliverer(old, server, clock)
        async with running(old_one):
            await eventually(lambda: old.get(known).state == "delivered",  # type: ignore[union-attr]
                             what="the old instance's own receiver served")
            assert old.next_due_ns(clock(), scope=old_one._scope(clock())) is None
        assert [r.delivery for r in server.requests] == [known]
        left = old.get(fresh)
        assert left is not None and (left.state, left.attempts) == ("pending", 0)
        receivers = {"pusdalops": Receiver(name="pusdalops", url=server.url)}
        new_one = Deliverer(new, receivers, clock_ns=clock, policy=FAST, rng=random.Random(7))
        async with running(new_one):
            await eventually(lambda: new.pending_count() == 0, what="the new receiver served")
        assert [r.delivery for r in server.requests] == [known, fresh]


async def test_a_receiver_no_instance_knows_is_given_up_once_older_than_any_max_age(
    shared: OutboxPlace, server: RecordingReceiver
) -> None:
    clock = ManualClock()
    with shared.open(clock, owner="siaga-a") as outbox:
        removed = outbox.enqueue("retired", "fp1", body("fp1", 0), clock())
        assert outbox.claim(clock(), 10, SECOND_NS, scope=deliverer(outbox, server, clock)
                            ._scope(clock())) == []
        clock.now_ns += 24 * 3600 * SECOND_NS  # a day: the default max_age, the longest here
        async with running(deliverer(outbox, server, clock)):
            await eventually(lambda: outbox.pending_count() == 0, what="given up")
        gone = outbox.get(removed)
        assert gone is not None and gone.state == "dead"
        assert gone.last_error == "receiver 'retired' is no longer configured"
        assert server.requests == []


async def test_one_alerts_news_reach_a_receiver_in_order_across_two_deliverers(
    shared: OutboxPlace, server: RecordingReceiver
) -> None:
    # Refusals along the way, so that some news waits out a backoff while the other
    # deliverer is free to take the next; it must not.
    server.script.extend([Answer(503), Answer(200)] * 15)
    policy = DeliveryPolicy(backoff_initial_s=0.02, backoff_max_s=0.05, idle_s=30.0,
                            drain_s=0.1, concurrency=4)
    with shared.open(owner="siaga-a") as a, shared.open(owner="siaga-b") as b:
        first, second = deliverer(a, server, policy=policy), deliverer(b, server, policy=policy)
        async with running(first, second):
            for n in range(5):  # each alert's news enqueued one after another, as they happen
                a.enqueue_many([("bpbd", f"fp{i}", body(f"fp{i}", n)) for i in range(6)],
                               time.time_ns())
                (first if n % 2 else second).wake()
            await eventually(lambda: a.pending_count() == 0, what="everything delivered")
    seen: dict[str, list[int]] = {}
    for request in server.requests:  # in order of arrival, refused attempts included
        seen.setdefault(request.json["alerts"][0]["fingerprint"], []).append(request.json["n"])
    assert len(seen) == 6
    for order in seen.values():
        assert order == sorted(order)  # a later notice never before an earlier one's last try
    delivered = Counter((r.json["alerts"][0]["fingerprint"], r.json["n"])
                        for r in server.delivered())
    assert delivered == Counter({(f"fp{i}", n): 1 for i in range(6) for n in range(5)})
    assert sum(1 for r in server.requests if r.status == 503) == 15


async def test_an_outbox_that_cannot_be_used_pauses_delivery_without_ending_it(
    shared: OutboxPlace, server: RecordingReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    # The table renamed away from under the deliverer: every claim fails, as with
    # PostgreSQL away or a full disk, and works again once it is back.
    policy = DeliveryPolicy(backoff_initial_s=0.02, idle_s=30.0, drain_s=0.1,
                            store_retry_s=0.05)
    assert shared.database_url is not None
    with shared.open(owner="siaga-a") as a:
        delivery_id = a.enqueue("bpbd", "fp1", body("fp1", 0), time.time_ns())
        with psycopg.connect(shared.database_url, autocommit=True) as admin:
            admin.execute("ALTER TABLE deliveries RENAME TO deliveries_away")
            async with running(deliverer(a, server, policy=policy)):
                await eventually(lambda: "the outbox cannot be used" in caplog.text,
                                 what="the failing claim reported")
                admin.execute("ALTER TABLE deliveries_away RENAME TO deliveries")
                await eventually(lambda: a.pending_count() == 0, what="delivered once back")
    assert [r.delivery for r in server.requests] == [delivery_id]
    assert caplog.text.count("the outbox cannot be used") == 1  # once per outage
    assert "the outbox works again" in caplog.text


async def test_one_sqlite_instance_delivers_as_before_and_leaves_no_claim(
    tmp_path: Path, server: RecordingReceiver
) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        ids = outbox.enqueue_many([("bpbd", "fp1", body("fp1", n)) for n in range(3)],
                                  time.time_ns())
        async with running(deliverer(outbox, server)):
            await eventually(lambda: outbox.pending_count() == 0, what="everything delivered")
        assert [r.delivery for r in server.requests] == ids
        assert outbox.schema_version == 3
        assert all((d := outbox.get(i)) is not None and d.claimed_by is None for i in ids)
