"""The alerting side of a cluster's instances (issue 18), two `Alerting`s on one real
PostgreSQL in one event loop: one leads the city-wide checks, and it judges silence from
what every instance heard (the board), not only from its own partitions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Registry
from rules.alert import AlertStatus, fingerprint
from rules.alerting import Alerting, Cluster
from rules.config import RulesFile
from siaga_core.errors import StorageError
from tests.polling import eventually
from tests.rules.books import Clock

HOUR = 3600 * 10**9
WITHIN_S = 30


@asynccontextmanager
async def two_instances(rules_file: RulesFile, registry: Registry, tmp_path: Path,
                        database: str, clock: Clock) -> AsyncIterator[tuple[Alerting, Alerting]]:
    """Two running instances; the leader first."""
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        pair = [await stack.enter_async_context(Alerting(
            rules_file, registry, tmp_path / name, webhook_url=None,
            external_url="http://siaga.test", clock_ns=clock, cluster=Cluster(database)))
            for name in ("a", "b")]
        group = await stack.enter_async_context(asyncio.TaskGroup())
        for instance in pair:
            instance.broker_connection_changed(True)
            group.create_task(instance.run(stop))
        try:
            await eventually(lambda: sum(i.leading for i in pair) == 1, WITHIN_S, "one leader")
            leader = next(i for i in pair if i.leading)
            yield leader, next(i for i in pair if i is not leader)
        finally:
            stop.set()


def gauge(device_id: str, at_ns: int, level_cm: float) -> Reading:
    return Reading(Kind.WATER_LEVEL, device_id, at_ns, {"level_cm": level_cm}, None)


async def test_the_leader_judges_silence_from_what_the_other_instance_heard(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str,
        clock: Clock) -> None:
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (leader, other):
        clock.now += 3 * HOUR  # past every gauge's grace (2 x 1 h): all are silent ...
        other.observe([gauge("manggarai", clock.now, 500)], [], clock.now)  # ... but one
        await other._share_seen()
        await leader._check_offline()
        manggarai = registry.get("manggarai")
        depok = registry.get("depok")
        assert manggarai is not None and depok is not None
        assert not leader.checker.is_offline(manggarai, clock.now)  # heard by the other
        assert leader.checker.is_offline(depok, clock.now)  # heard by nobody
        # Only the leader counts devices for /metrics: summed, the city is counted once.
        assert leader.metrics().devices[("water-level", "online")] == 1
        assert other.metrics().devices == {}


async def test_the_non_leader_raises_no_city_wide_alert(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str,
        clock: Clock) -> None:
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (leader, other):
        clock.now += 3 * HOUR
        await other._check_offline()
        assert other.book.counts_by_status().get("firing", 0) == 0
        await leader._check_offline()
        assert leader.book.counts_by_status().get("firing", 0) > 0  # the city's silence
        # One book: the other instance sees what the leader raised.
        assert other.book.counts_by_status() == leader.book.counts_by_status()


async def test_a_device_moving_to_another_instance_carries_its_alert_over(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str,
        clock: Clock) -> None:
    flood = fingerprint("FloodLevel", "manggarai")
    minute = 60 * 10**9
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (one, two):
        # The second instance read manggarai once (quiet), then its partition moved away.
        two.observe([gauge("manggarai", clock.now - minute, 500)], [], clock.now)
        one.ownership_changed()
        one.observe([gauge("manggarai", clock.now, 960)], [], clock.now)  # Siaga 1: new
        two.ownership_changed()  # ... and back: the second must not trust what it held
        two.observe([gauge("manggarai", clock.now + minute, 960)], [], clock.now)
        view = two.book.get(flood)
        assert view is not None and view.alert.status is AlertStatus.FIRING
        firing = [entry for entry in two.book.history(flood) if entry.change == "firing"]
        assert len(firing) == 1  # raised once, by the first instance; carried on by the other
        two.observe([gauge("manggarai", clock.now + 2 * minute, 500)], [], clock.now)
        view = two.book.get(flood)
        assert view is not None and view.alert.status is AlertStatus.RESOLVED


async def test_a_partition_moving_in_leaves_the_devices_that_stayed_untouched(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str,
        clock: Clock) -> None:
    minute = 60 * 10**9
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (one, _):
        one.observe([gauge("manggarai", clock.now, 960)], [], clock.now)
        one.engine.annotate("FloodLevel", "manggarai", {"reports": "2 residents' reports"})
        one.ownership_changed()  # another partition came in; manggarai never left
        one.observe([gauge("manggarai", clock.now + minute, 960)], [], clock.now)
        kept = one.engine.current("FloodLevel", "manggarai")
        assert kept is not None and kept.annotations.get("reports") == "2 residents' reports"


async def test_a_leader_cut_off_from_its_broker_hands_the_city_to_an_instance_that_reads(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str,
        clock: Clock) -> None:
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (leader, other):
        # The leader alone loses RabbitMQ; its partitions go to the other instance, and
        # PostgreSQL is fine. Judged by its own lost connection, it would page the whole city
        # as unreachable and nothing else (the review's reproduction).
        leader.broker_connection_changed(False)
        await eventually(lambda: other.leading and not leader.leading, WITHIN_S,
                         "the instance that reads leading")
        clock.now += 3 * HOUR  # every gauge silent but manggarai, which the other hears
        other.observe([gauge("manggarai", clock.now, 100)], [], clock.now)
        await other._share_seen()
        await other._check_offline()
        firing = {(view.alert.rule, view.alert.subject, view.alert.labels.get("connection"))
                  for view in other.book.alerts(AlertStatus.FIRING)}
        assert {"DeviceOffline", "AreaOffline"} <= {rule for rule, _, _ in firing}  # silence
        assert ("DeviceOffline", "manggarai", None) not in firing  # heard by the other
        assert not [entry for entry in firing if entry[2] is not None]  # no "cannot reach"


async def test_a_step_the_book_refused_is_taken_again_at_the_leaders_next_check(
        rules_file: RulesFile, registry: Registry, tmp_path: Path, database: str,
        clock: Clock) -> None:
    silent = fingerprint("DeviceOffline", "manggarai")
    minute = 60 * 10**9
    async with two_instances(rules_file, registry, tmp_path, database, clock) as (leader, other):
        clock.now += 3 * HOUR  # every device heard by the other instance but manggarai
        other.devices_seen.update((device.id, clock.now) for device in registry
                                  if device.id != "manggarai")
        await other._share_seen()
        await leader._check_offline()
        view = leader.book.get(silent)
        assert view is not None and view.alert.status is AlertStatus.FIRING
        clock.now += minute  # manggarai is heard again; the book refuses the resolution once
        other.devices_seen.update((device.id, clock.now) for device in registry)
        await other._share_seen()
        original = leader.book.apply

        def refusing(transition, now_ns=None):  # type: ignore[no-untyped-def]
            if transition.alert.fingerprint == silent:
                leader.book.apply = original  # type: ignore[method-assign]
                raise StorageError("PostgreSQL: server closed the connection unexpectedly")
            return original(transition, now_ns)

        leader.book.apply = refusing  # type: ignore[method-assign]
        with pytest.raises(StorageError):  # the scheduler logs it
            await leader._check_offline()
        clock.now += minute
        await leader._check_offline()
        view = leader.book.get(silent)
        assert view is not None and view.alert.status is AlertStatus.RESOLVED
