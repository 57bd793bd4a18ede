"""The outbox store: one alert's deliveries in order, outcomes recorded, nothing lost.

On both backends (`outbox_place`, tests/rules/conftest.py): SQLite in a temporary data dir,
and a fresh PostgreSQL database per test on the session's server (started only when a
PostgreSQL test runs).
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from rules.delivery import DeliveryPolicy
from rules.outbox import Outbox
from rules.routing import Receiver
from siaga.sandbox.postgres import PostgreSQL
from siaga_core.errors import ConfigurationError
from tests.rules.books import T0, OutboxPlace, fresh_database

NOW = T0  # also the clock of `OutboxPlace.open` when a test gives none
SECOND = 1_000_000_000
LEASE = 30 * SECOND


@pytest.fixture
def outbox(outbox_place: OutboxPlace) -> Iterator[Outbox]:
    with outbox_place.open(owner="siaga-a") as store:
        yield store


def ids(outbox: Outbox, now_ns: int = NOW, limit: int = 100) -> list[str]:
    return [d.id for d in outbox.due(now_ns, limit)]


def claimed(outbox: Outbox, now_ns: int = NOW, limit: int = 100, lease_ns: int = LEASE
            ) -> list[str]:
    return [d.id for d in outbox.claim(now_ns, limit, lease_ns)]


def test_an_enqueued_delivery_is_due_at_once_with_a_fresh_id(outbox: Outbox) -> None:
    delivery_id = outbox.enqueue("bpbd", "fp1", b"{}", NOW)
    assert uuid.UUID(hex=delivery_id).version == 4
    (due,) = outbox.due(NOW, 10)
    assert (due.id, due.receiver, due.fingerprint, due.body) == (delivery_id, "bpbd", "fp1", b"{}")
    assert (due.state, due.attempts, due.created_ns) == ("pending", 0, NOW)


def test_only_the_oldest_delivery_of_an_alert_is_due(outbox: Outbox) -> None:
    first = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    outbox.enqueue("bpbd", "fp1", b"2", NOW)
    other_alert = outbox.enqueue("bpbd", "fp2", b"3", NOW)
    other_receiver = outbox.enqueue("monitoring", "fp1", b"4", NOW)
    assert ids(outbox) == [first, other_alert, other_receiver]


def test_the_next_delivery_of_an_alert_waits_until_the_earlier_is_delivered(
    outbox: Outbox,
) -> None:
    first = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    second = outbox.enqueue("bpbd", "fp1", b"2", NOW)
    outbox.mark_retry(first, NOW + 10 * SECOND, "503")
    assert ids(outbox) == []  # the first is backing off and the second waits behind it
    outbox.mark_delivered(first, NOW + 10 * SECOND)
    assert ids(outbox) == [second]


def test_a_dead_delivery_lets_the_next_one_of_its_alert_go(outbox: Outbox) -> None:
    first = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    second = outbox.enqueue("bpbd", "fp1", b"2", NOW)
    outbox.mark_dead(first, "404 Not Found")
    assert ids(outbox) == [second]


def test_a_retry_is_due_at_its_time_with_attempts_and_error_kept(outbox: Outbox) -> None:
    delivery_id = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    outbox.mark_retry(delivery_id, NOW + 5 * SECOND, "503 Service Unavailable")
    assert ids(outbox, NOW + 5 * SECOND - 1) == []
    (due,) = outbox.due(NOW + 5 * SECOND, 10)
    assert (due.attempts, due.last_error, due.next_attempt_ns) == (
        1, "503 Service Unavailable", NOW + 5 * SECOND)


def test_due_deliveries_come_earliest_first_up_to_the_limit(outbox: Outbox) -> None:
    late = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    early = outbox.enqueue("bpbd", "fp2", b"2", NOW)
    outbox.mark_retry(late, NOW + 2, "x")
    outbox.mark_retry(early, NOW + 1, "x")
    assert ids(outbox, NOW + 2) == [early, late]
    assert ids(outbox, NOW + 2, limit=1) == [early]


def test_claimed_deliveries_are_left_out_and_their_alert_waits(outbox: Outbox) -> None:
    in_flight = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    outbox.enqueue("bpbd", "fp1", b"2", NOW)
    other = outbox.enqueue("bpbd", "fp2", b"3", NOW)
    assert claimed(outbox, limit=1) == [in_flight]
    assert ids(outbox) == [other]
    assert claimed(outbox) == [other]
    assert claimed(outbox) == []  # the second of fp1 waits behind its claimed head


def test_this_instances_attempts_in_flight_are_left_out_and_their_alert_waits(
    outbox: Outbox,
) -> None:
    # A claim that ran out under a stuck attempt, or that its attempt has just cleared: the
    # instance still has the attempt in flight and names it.
    in_flight = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    outbox.enqueue("bpbd", "fp1", b"2", NOW)
    other = outbox.enqueue("bpbd", "fp2", b"3", NOW)
    assert claimed(outbox, limit=1) == [in_flight]
    outbox.mark_retry(in_flight, NOW, "503")  # due again at once, and unclaimed
    assert outbox.next_due_ns(NOW, exclude=(in_flight,)) == NOW
    assert [d.id for d in outbox.claim(NOW, 10, LEASE, exclude=(in_flight,))] == [other]
    assert outbox.next_due_ns(NOW, exclude=(in_flight, other)) is None
    assert claimed(outbox) == [in_flight]


def test_a_claim_says_who_holds_the_delivery_and_until_when(outbox_place: OutboxPlace) -> None:
    with outbox_place.open(owner="siaga-a") as a:
        delivery_id = a.enqueue("bpbd", "fp1", b"1", NOW)
        (taken,) = a.claim(NOW, 10, LEASE)
        stored = a.get(delivery_id)
    assert (taken.id, taken.claimed_by, taken.claimed_until_ns) == (
        delivery_id, "siaga-a", NOW + LEASE)
    assert stored is not None
    assert (stored.claimed_by, stored.claimed_until_ns) == ("siaga-a", NOW + LEASE)


def test_a_claim_that_runs_out_lets_another_instance_take_the_same_delivery(
    outbox_place: OutboxPlace,
) -> None:
    with outbox_place.open(owner="siaga-a") as a, outbox_place.open(owner="siaga-b") as b:
        delivery_id = a.enqueue("bpbd", "fp1", b"1", NOW)
        assert claimed(a, lease_ns=5 * SECOND) == [delivery_id]
        assert claimed(b, NOW + 5 * SECOND - 1) == []  # a's lease is still live
        (retaken,) = b.claim(NOW + 5 * SECOND, 10, LEASE)
    assert (retaken.id, retaken.claimed_by, retaken.attempts) == (delivery_id, "siaga-b", 0)


def test_next_due_counts_a_claimed_head_at_the_end_of_its_lease(outbox: Outbox) -> None:
    outbox.enqueue("bpbd", "fp1", b"1", NOW)
    assert claimed(outbox, lease_ns=7 * SECOND)
    assert outbox.next_due_ns(NOW) == NOW + 7 * SECOND
    assert outbox.next_due_ns(NOW + 7 * SECOND) == NOW  # run out: due as it always was


def test_finishing_a_delivery_clears_its_claim(outbox: Outbox) -> None:
    first = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    second = outbox.enqueue("bpbd", "fp2", b"2", NOW)
    assert sorted(claimed(outbox)) == sorted([first, second])
    outbox.mark_retry(first, NOW + SECOND, "503")
    outbox.mark_delivered(second, NOW)
    for delivery_id in (first, second):
        delivery = outbox.get(delivery_id)
        assert delivery is not None
        assert (delivery.claimed_by, delivery.claimed_until_ns) == (None, None)
    assert claimed(outbox, NOW + SECOND) == [first]


def test_a_late_finisher_whose_delivery_another_instance_claimed_changes_nothing(
    outbox_place: OutboxPlace,
) -> None:
    with outbox_place.open(owner="siaga-a") as a, outbox_place.open(owner="siaga-b") as b:
        delivery_id = a.enqueue("bpbd", "fp1", b"1", NOW)
        assert claimed(a, lease_ns=SECOND) == [delivery_id]
        assert claimed(b, NOW + SECOND) == [delivery_id]
        a.mark_delivered(delivery_id, NOW + 2 * SECOND)  # a's attempt outlived its lease
        a.mark_retry(delivery_id, NOW + 9 * SECOND, "late")
        a.mark_dead(delivery_id, "late", NOW + 2 * SECOND)
        still = b.get(delivery_id)
        assert still is not None
        assert (still.state, still.attempts, still.claimed_by) == ("pending", 0, "siaga-b")
        b.mark_delivered(delivery_id, NOW + 3 * SECOND)  # b's own attempt decides
        assert b.counts_by_outcome() == {"delivered": 1, "retried": 0, "dead": 0}


def test_a_late_finisher_whose_lease_ran_out_unclaimed_still_records_its_attempt(
    outbox: Outbox,
) -> None:
    delivery_id = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    assert claimed(outbox, lease_ns=SECOND) == [delivery_id]
    outbox.mark_delivered(delivery_id, NOW + 5 * SECOND)  # nobody took it meanwhile
    assert outbox.counts_by_outcome()["delivered"] == 1


def test_release_gives_back_only_this_owners_claims(outbox_place: OutboxPlace) -> None:
    with outbox_place.open(owner="siaga-a") as a, outbox_place.open(owner="siaga-b") as b:
        mine = a.enqueue("bpbd", "fp1", b"1", NOW)
        theirs = a.enqueue("bpbd", "fp2", b"2", NOW)
        assert claimed(a, limit=1) == [mine]
        assert claimed(b) == [theirs]
        assert a.release([mine, theirs]) == 1
        assert ids(b) == [mine]  # due again at once, not at the end of the lease
        assert a.release([]) == 0


def test_next_due_is_the_earliest_waiting_attempt(outbox: Outbox) -> None:
    assert outbox.next_due_ns() is None
    delivery_id = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    outbox.mark_retry(delivery_id, NOW + 3 * SECOND, "x")
    assert outbox.next_due_ns() == NOW + 3 * SECOND


def test_dead_deliveries_are_listed_newest_first_with_their_reason(outbox: Outbox) -> None:
    older = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    newer = outbox.enqueue("bpbd", "fp2", b"2", NOW)
    outbox.mark_dead(older, "404 Not Found (not retried)", NOW + 1)
    outbox.mark_dead(newer, "older than max_age 24h", NOW + 2, attempted=False)
    dead = outbox.dead()
    assert [(d.id, d.last_error, d.attempts, d.finished_ns) for d in dead] == [
        (newer, "older than max_age 24h", 0, NOW + 2),
        (older, "404 Not Found (not retried)", 1, NOW + 1),
    ]


def test_outcomes_are_counted_for_metrics(outbox: Outbox) -> None:
    assert outbox.counts_by_outcome() == {"delivered": 0, "retried": 0, "dead": 0}
    a, b, _ = (outbox.enqueue("r", f"fp{i}", b"", NOW) for i in range(3))
    outbox.mark_retry(a, NOW, "503")
    outbox.mark_retry(a, NOW, "503")
    outbox.mark_delivered(a, NOW)
    outbox.mark_dead(b, "404")
    assert outbox.counts_by_outcome() == {"delivered": 1, "retried": 2, "dead": 1}
    assert outbox.pending_count() == 1


def test_a_finished_delivery_is_not_marked_again(outbox: Outbox) -> None:
    delivery_id = outbox.enqueue("r", "fp", b"", NOW)
    outbox.mark_delivered(delivery_id, NOW)
    outbox.mark_dead(delivery_id, "late news")
    outbox.mark_retry(delivery_id, NOW, "late news")
    delivery = outbox.get(delivery_id)
    assert delivery is not None
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("delivered", 1, None)
    assert outbox.counts_by_outcome() == {"delivered": 1, "retried": 0, "dead": 0}


def test_several_receivers_are_enqueued_together(outbox: Outbox) -> None:
    made = outbox.enqueue_many([("bpbd", "fp", b"1"), ("monitoring", "fp", b"2")], NOW)
    assert len(set(made)) == 2
    assert sorted(ids(outbox)) == sorted(made)


def test_a_file_from_before_schema_versions_opens_with_its_deliveries(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as before:
        pending = before.enqueue("bpbd", "fp1", b"body", NOW)
    with closing(sqlite3.connect(path)) as db:  # as a release before versions left it
        db.execute("ALTER TABLE deliveries DROP COLUMN claimed_by")
        db.execute("ALTER TABLE deliveries DROP COLUMN claimed_until")
        db.execute("ALTER TABLE deliveries DROP COLUMN not_before")
        db.execute("PRAGMA user_version = 0")  # every file written before versions says 0
    with Outbox(path) as after:
        assert (after.schema_version, ids(after)) == (3, [pending])


def test_a_file_at_version_1_gains_claims_and_keeps_its_deliveries(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as before:
        pending = before.enqueue("bpbd", "fp1", b"body", NOW)
    with closing(sqlite3.connect(path)) as db:  # the file as the release before claims left it
        db.execute("ALTER TABLE deliveries DROP COLUMN claimed_by")
        db.execute("ALTER TABLE deliveries DROP COLUMN claimed_until")
        db.execute("ALTER TABLE deliveries DROP COLUMN not_before")
        db.execute("PRAGMA user_version = 1")
    with Outbox(path, owner="siaga-a") as after:
        assert after.schema_version == 3
        (taken,) = after.claim(NOW, 10, LEASE)
    assert (taken.id, taken.body, taken.claimed_by) == (pending, b"body", "siaga-a")


def test_claims_found_in_a_sqlite_file_at_open_are_a_dead_runs_and_given_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, owner="before") as before:
        pending = before.enqueue("bpbd", "fp1", b"body", NOW)
        assert claimed(before) == [pending]  # and then the process was killed
    with Outbox(path, owner="after") as after:
        assert claimed(after) == [pending]  # at once, not at the end of the lease


def test_a_postgresql_outbox_opens_at_its_newest_schema_version(
    postgres: PostgreSQL, tmp_path: Path
) -> None:
    with fresh_database(postgres, "outbox") as url:
        place = OutboxPlace(tmp_path / "unused.sqlite", url)
        with place.open() as first, place.open() as second:  # the second finds it made
            assert (first.schema_version, second.schema_version) == (2, 2)
            assert first.describe().startswith("PostgreSQL ")
    assert not (tmp_path / "unused.sqlite").exists()


def test_a_malformed_database_url_is_a_configuration_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match=r"alerting\.database_url"):
        Outbox(tmp_path / "outbox.sqlite", database_url="mysql://siaga@db/siaga")
    assert not (tmp_path / "outbox.sqlite").exists()  # no SQLite made on the side


def test_each_outbox_has_its_own_owner_id_by_default(tmp_path: Path) -> None:
    with Outbox(tmp_path / "a.sqlite") as a, Outbox(tmp_path / "b.sqlite") as b:
        assert a.owner != b.owner


def test_everything_survives_a_reopen(outbox_place: OutboxPlace) -> None:
    with outbox_place.open() as before:
        pending = before.enqueue("bpbd", "fp1", b"body", NOW)
        before.mark_retry(pending, NOW + SECOND, "connection refused")
        dead = before.enqueue("bpbd", "fp2", b"body", NOW)
        before.mark_dead(dead, "404", NOW)
    with outbox_place.open() as after:
        (due,) = after.due(NOW + SECOND, 10)
        assert (due.id, due.body, due.attempts) == (pending, b"body", 1)
        assert [d.id for d in after.dead()] == [dead]
        assert after.counts_by_outcome() == {"delivered": 0, "retried": 1, "dead": 1}


def test_pruning_forgets_old_delivered_deliveries_only(outbox: Outbox) -> None:
    old, recent, dead, pending = (outbox.enqueue("r", f"fp{i}", b"", NOW) for i in range(4))
    outbox.mark_delivered(old, NOW)
    outbox.mark_delivered(recent, NOW + 10)
    outbox.mark_dead(dead, "404", NOW)
    assert outbox.prune(NOW + 5) == 1
    assert outbox.get(old) is None
    assert all(outbox.get(x) is not None for x in (recent, dead, pending))
    assert outbox.counts_by_outcome()["delivered"] == 2  # counters outlive the rows


def test_backoff_doubles_from_the_initial_wait_up_to_the_cap_with_full_jitter() -> None:
    policy = DeliveryPolicy(backoff_initial_s=1.0, backoff_max_s=300.0)
    rng = random.Random(7)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (5, 16.0), (9, 256.0), (10, 300.0),
                              (1000, 300.0)]:
        waits = [policy.backoff_s(attempts, rng) for _ in range(200)]
        assert all(0.0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.9  # jitter reaches the top of the range ...
        assert min(waits) < ceiling * 0.1  # ... and the bottom


def test_a_policy_needs_room_for_one_attempt() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        DeliveryPolicy(concurrency=0)
    with pytest.raises(ValueError, match="lease_margin_s"):
        DeliveryPolicy(lease_margin_s=0)


def test_a_lease_covers_one_attempt_to_the_slowest_receiver_and_the_margin() -> None:
    policy = DeliveryPolicy(lease_margin_s=10.0)
    receivers = [Receiver(name="a", url="http://127.0.0.1:9/", timeout_s=5.0),
                 Receiver(name="b", url="http://127.0.0.1:9/", timeout_s=25.0)]
    assert policy.lease_ns(receivers) == 35 * SECOND
    assert policy.lease_ns([]) == 10 * SECOND


def test_hurry_makes_a_receivers_waiting_deliveries_due_now(outbox: Outbox) -> None:
    waiting = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    other_receiver = outbox.enqueue("dinas", "fp2", b"2", NOW)
    for delivery_id in (waiting, other_receiver):
        outbox.mark_retry(delivery_id, NOW + 60 * SECOND, "connection refused")
    assert outbox.hurry("bpbd", NOW + SECOND) == 1
    assert ids(outbox, NOW + SECOND) == [waiting]


def test_hurry_leaves_what_a_receiver_asked_to_wait_for_waiting(outbox: Outbox) -> None:
    # A 429 with Retry-After: 120 on one alert, another alert delivered meanwhile: the first
    # was made due at once and met the limit again (a review's reproduction).
    limited = outbox.enqueue("bpbd", "fp1", b"1", NOW)
    backed_off = outbox.enqueue("bpbd", "fp2", b"2", NOW)
    outbox.mark_retry(limited, NOW + 120 * SECOND, "HTTP 429", not_before_ns=NOW + 120 * SECOND)
    outbox.mark_retry(backed_off, NOW + 300 * SECOND, "HTTP 503",
                      not_before_ns=NOW + 30 * SECOND)  # the backoff outgrew its Retry-After
    assert outbox.hurry("bpbd", NOW + SECOND) == 1
    assert ids(outbox, NOW + SECOND) == []
    assert ids(outbox, NOW + 30 * SECOND) == [backed_off]
    assert ids(outbox, NOW + 120 * SECOND) == [backed_off, limited]
