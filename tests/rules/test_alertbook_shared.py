"""One alert book shared by several Siaga instances: each notification sent once.

Two `AlertBook`s on one book stand for two instances. On PostgreSQL (what instances share)
they take turns on an alert with an advisory lock; the same tests run on one SQLite file,
whose single writer makes them take turns too. The races are real threads released
together by a barrier, repeated so that they overlap.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from rules.alert import Alert, AlertStatus, Notification, fingerprint
from rules.alertbook import AlertBook
from rules.silences import Matcher
from siaga_core.errors import ConfigurationError
from tests.rules.books import (
    FLOOD,
    HOUR,
    MAX_AGE,
    MINUTE,
    REPEAT,
    T0,
    BookPlace,
    Clock,
    fire,
    flood,
    move,
    resolve,
)

T = TypeVar("T")
RACES = 20  # rounds of each race: enough for two threads to meet inside one transaction


class Sent:
    """What every instance handed its dispatcher, in order (threads append to it)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()

    def __call__(self, told: Notification) -> None:
        with self._lock:
            self.notifications.append(told)

    def reasons(self) -> list[str]:
        return [told.reason for told in self.notifications]


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def instances(book_place: BookPlace, clock: Clock, sent: Sent
              ) -> Iterator[tuple[AlertBook, AlertBook]]:
    """Two instances on one book, both sending to `sent`."""
    with ExitStack() as stack:
        first = stack.enter_context(book_place.open(clock, send=sent))
        second = stack.enter_context(book_place.open(clock, send=sent))
        yield first, second


def together(first: Callable[[], T], second: Callable[[], T]) -> tuple[T, T]:
    """Run both at once in two threads, released by one barrier; both results (or raise)."""
    barrier = threading.Barrier(2)

    def released(work: Callable[[], T]) -> T:
        barrier.wait()
        return work()

    with ThreadPoolExecutor(max_workers=2) as pool:
        one, two = pool.submit(released, first), pool.submit(released, second)
        return one.result(), two.result()


def test_a_firing_reraised_by_a_second_instance_is_not_paged_again_but_its_resolution_is(
    instances: tuple[AlertBook, AlertBook], sent: Sent, clock: Clock
) -> None:
    first, second = instances
    assert first.apply(fire(T0)) is not None
    clock.now = T0 + MINUTE
    # The second instance took the partition over and its engine raises the alert again.
    assert second.apply(fire(T0 + MINUTE)) is None
    resolved = second.apply(resolve(T0 + MINUTE))
    assert resolved is not None and resolved.reason == "resolved"
    assert sent.reasons() == ["new", "resolved"]
    assert [(h.reason, h.paged) for h in first.history(FLOOD)] == [
        ("resolved", True), ("unchanged", False), ("new", True)]


def test_two_instances_applying_one_new_firing_at_once_page_once(
    instances: tuple[AlertBook, AlertBook], sent: Sent
) -> None:
    first, second = instances
    devices = [f"pos-{number:02d}" for number in range(RACES)]
    for device in devices:
        transition = fire(T0, device=device)
        told = together(partial(first.apply, transition), partial(second.apply, transition))
        assert sum(notification is not None for notification in told) == 1
    paged = Counter(told.fingerprint for told in sent.notifications)
    assert paged == {fingerprint("FloodLevel", device): 1 for device in devices}
    assert first.counts_by_status()["firing"] == RACES


def test_two_instances_running_the_repeats_at_once_send_each_repeat_once(
    instances: tuple[AlertBook, AlertBook], sent: Sent
) -> None:
    first, second = instances
    devices = [f"pos-{number}" for number in range(5)]
    for device in devices:
        assert first.apply(fire(T0, device=device)) is not None
    for interval in range(1, RACES + 1):
        now = T0 + interval * REPEAT
        one, two = together(partial(first.due_repeats, now), partial(second.due_repeats, now))
        assert sorted(told.labels["device_id"] for told in [*one, *two]) == devices
    repeats = Counter(told.labels["device_id"] for told in sent.notifications
                      if told.reason == "repeat")
    assert repeats == dict.fromkeys(devices, RACES)


def test_two_instances_refreshing_after_a_silence_ends_tell_each_withheld_alert_once(
    instances: tuple[AlertBook, AlertBook], sent: Sent
) -> None:
    first, second = instances
    for number in range(RACES):
        device = f"pos-{number:02d}"
        silence = first.add_silence([Matcher("device_id", device)], T0, T0 + HOUR, "budi")
        assert second.apply(fire(T0, device=device)) is None  # withheld: silenced
        first.expire_silence(silence.id)
        one, two = together(first.refresh_after_silence_change,
                            second.refresh_after_silence_change)
        assert [told.labels["device_id"] for told in [*one, *two]] == [device]
    assert sent.reasons() == ["new"] * RACES


def test_restore_of_subjects_gives_only_their_pending_and_firing_alerts(
    book_place: BookPlace, clock: Clock
) -> None:
    with book_place.open(clock) as book:
        for device in ("manggarai", "depok", "katulampa"):
            book.apply(fire(T0, device=device))
        book.apply(move("pending", flood(AlertStatus.PENDING, device="bogor"), None))
        book.apply(move("resolved", flood(AlertStatus.RESOLVED, device="katulampa"),
                        AlertStatus.FIRING))
        chosen = book.restore(["depok", "bogor", "katulampa", "nowhere"])
        assert sorted((a.subject, a.status) for a in chosen) == [
            ("bogor", AlertStatus.PENDING), ("depok", AlertStatus.FIRING)]
        assert book.restore([]) == []
        assert {a.subject for a in book.restore()} == {"manggarai", "depok", "bogor"}


def test_restore_of_many_subjects_keeps_the_order_of_a_whole_restore(
    book_place: BookPlace, clock: Clock
) -> None:
    subjects = [f"pos-{number:04d}" for number in range(2000)]  # more than one query's worth
    with book_place.open(clock) as book:
        for number in range(0, 2000, 150):
            book.apply(fire(T0 + (number % 7) * MINUTE, device=subjects[number]))
        book.apply(fire(T0, device="elsewhere"))
        whole = [a for a in book.restore() if a.subject != "elsewhere"]
        assert book.restore(subjects) == whole
        assert len(whole) == 14


@pytest.mark.parametrize("url", [
    "mysql://siaga:hunter2@db.example/alerts",
    "postgresql://siaga:hunt%zzer2@db.example/alerts",
    "postgresql://siaga:hunter2@db.example/alerts?no_such_option=1",
])
def test_a_malformed_database_url_names_the_setting_and_never_the_password(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        AlertBook(tmp_path / "alerts.db", page_max_age_ns=MAX_AGE, repeat_interval_ns=REPEAT,
                  database_url=url)
    assert "alerting.database_url" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "hunt%zzer2" not in str(raised.value)
    assert not (tmp_path / "alerts.db").exists()  # nor did it fall back on SQLite


def test_last_judged_is_the_newest_change_of_a_devices_own_rules_in_any_status(
    book_place: BookPlace, clock: Clock
) -> None:
    with book_place.open(clock) as book:
        book.apply(fire(T0, device="depok"))
        book.apply(fire(T0 + 2 * MINUTE, device="manggarai"))
        # Manggarai's alert ended at minute 5: a resolved alert still says how far it got.
        book.apply(move("resolved", flood(AlertStatus.RESOLVED, at=T0 + 5 * MINUTE),
                        AlertStatus.FIRING))
        assert book.last_judged(["manggarai", "depok", "bogor"], {"FloodLevel"}) == {
            "manggarai": T0 + 5 * MINUTE, "depok": T0}
        # Other rules' alerts (a wall-clock check's, a neighbour's) do not count.
        assert book.last_judged(["manggarai"], {"DeviceOffline"}) == {}
        assert book.last_judged([], {"FloodLevel"}) == {}


def test_an_older_copy_of_an_alert_is_not_written_back_nor_paged(
    book_place: BookPlace, clock: Clock
) -> None:
    # Instance B holds manggarai as firing from its start; instance A, which reads the
    # gauge, resolved it since. B notes a resident's report on its copy: nothing happens.
    with book_place.open(clock) as a, book_place.open(clock) as b:
        a.apply(fire(T0))
        a.apply(resolve(T0 + 5 * MINUTE))
        assert b.observe(flood(at=T0 + MINUTE), note="citizen report 7 linked") is None
        view = a.get(fingerprint("FloodLevel", "manggarai"))
        assert view is not None and view.alert.status is AlertStatus.RESOLVED
        assert [entry.change for entry in a.history()] == ["resolved", "firing"]


def test_a_change_older_than_the_books_is_dropped(book_place: BookPlace, clock: Clock) -> None:
    sent = Sent()
    with book_place.open(clock, send=sent) as a, book_place.open(clock, send=sent) as b:
        a.apply(fire(T0 + 2 * MINUTE, level="siaga-2"))
        # B had lost the partition without noticing: its change from before is stale.
        assert b.apply(fire(T0 + MINUTE, level="siaga-3")) is None
        assert sent.reasons() == ["new"]
        view = a.get(fingerprint("FloodLevel", "manggarai"))
        assert view is not None and view.alert.labels["level"] == "siaga-2"


def hotspot(subject: str, at: int, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    """An alert of a rule whose subjects are a camera's own (`camera-id/...`)."""
    return replace(flood(status, at=at), fingerprint=fingerprint("ViolationHotspot", subject),
                   rule="ViolationHotspot", subject=subject)


def test_under_gives_the_alerts_under_a_prefix_in_any_status_and_no_others(
    book_place: BookPlace, clock: Clock
) -> None:
    with book_place.open(clock) as book:
        # `_` is a LIKE wildcard: "cam_a/" must not find "camxa/".
        for subject in ("cam_a/illegal-parking/bus-stop", "cam_a/plate=B1",
                        "camxa/illegal-parking/bus-stop", "cam_ab/illegal-parking/x"):
            book.apply(move("firing", hotspot(subject, T0), AlertStatus.PENDING))
        book.apply(move("resolved", hotspot("cam_a/plate=B1", T0 + MINUTE, AlertStatus.RESOLVED),
                        AlertStatus.FIRING))
        book.apply(fire(T0, device="cam_a"))  # another rule's alert on the camera itself
        found = book.under(["cam_a/"], {"ViolationHotspot"})
        assert sorted((alert.subject, alert.status.value) for alert in found) == [
            ("cam_a/illegal-parking/bus-stop", "firing"), ("cam_a/plate=B1", "resolved")]
        assert book.under(["cam%/"], {"ViolationHotspot"}) == []
        assert len(book.under(["cam_a/", "camxa/"], {"ViolationHotspot"})) == 3
        assert book.under([], {"ViolationHotspot"}) == book.under(["cam_a/"], set()) == []
