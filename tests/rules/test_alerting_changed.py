"""Tests of what the alerting side tells the console: the devices heard from (`changed`), and
the offline judgement it reads (`OfflineChecker.is_offline`)."""

from __future__ import annotations

from pathlib import Path

from devices.kinds import Kind
from devices.readings import Reading, StatusUpdate
from devices.registry import Registry
from rules.alerting import Alerting
from rules.config import RulesFile
from tests.rules.books import T0

S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def gauges(registry: Registry) -> list[str]:
    return [device.id for device in registry.by_kind(Kind.WATER_LEVEL)][:3]


def readings(device_id: str, count: int) -> list[Reading]:
    return [Reading(Kind.WATER_LEVEL, device_id, T0 + n * S, {"level_cm": 100.0 + n}, None)
            for n in range(count)]


async def test_a_batch_message_marks_its_device_changed_once_and_statuses_theirs(
        registry: Registry, tmp_path: Path) -> None:
    first, second, third = gauges(registry)
    async with Alerting(RulesFile(), registry, tmp_path, webhook_url=None,
                        external_url="http://siaga.test") as alerting:
        alerting.observe(readings(first, 100), [], T0)
        alerting.observe(readings(second, 1),
                         [StatusUpdate(Kind.WATER_LEVEL, third, False, T0)], T0)
        taken, alerting.changed = alerting.changed, set()  # as the console's hub takes it
        alerting.observe(readings(first, 1), [], T0 + S)
        assert (taken, alerting.changed) == ({first, second, third}, {first})
        assert alerting.latest[first].values == {"level_cm": 199.0}  # every reading still kept


async def test_is_offline_says_what_the_offline_check_would(registry: Registry,
                                                             tmp_path: Path) -> None:
    first, second, _ = gauges(registry)
    clock = Clock()
    async with Alerting(RulesFile(), registry, tmp_path, webhook_url=None,
                        external_url="http://siaga.test", clock_ns=clock) as alerting:
        alerting.broker_connection_changed(True)
        alerting.observe(readings(first, 1) + readings(second, 1), [], clock.now)
        device, other = registry.get(first), registry.get(second)
        assert device is not None and other is not None
        grace_s = 2 * device.interval_s  # the default grace_factor
        heard = alerting.checker.is_offline(device, clock.now)
        alerting.observe([], [StatusUpdate(Kind.WATER_LEVEL, second, False, clock.now)],
                         clock.now)
        said = alerting.checker.is_offline(other, clock.now)
        late = alerting.checker.is_offline(device, clock.now + int(grace_s * S) + S)
    assert (heard, said, late) == (False, True, True)
