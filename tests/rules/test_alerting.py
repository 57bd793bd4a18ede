"""Tests of the service's alerting side: the StorageUnavailable alert, over real SQLite stores
and a real webhook receiver."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from devices.kinds import Kind
from devices.registry import Registry
from rules.alert import AlertStatus, fingerprint
from rules.alerting import Alerting
from rules.config import RulesFile
from tests.polling import eventually
from tests.receiver import RecordingReceiver

STORAGE_ALERT = fingerprint("StorageUnavailable", "storage")
DISK_FULL = "spool disk error: [Errno 28] No space left on device"


def alerting(registry: Registry, data_dir: Path, webhook_url: str | None = None) -> Alerting:
    return Alerting(RulesFile(), registry, data_dir, webhook_url=webhook_url,
                    external_url="http://siaga.test")


def status(service: Alerting) -> AlertStatus | None:
    view = service.book.get(STORAGE_ALERT)
    return None if view is None else view.alert.status


async def test_storage_unavailable_is_paged_as_critical_and_resolved_when_storage_recovers(
    registry: Registry, tmp_path: Path, receiver: RecordingReceiver,
) -> None:
    async with alerting(registry, tmp_path, receiver.url) as service:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            service.durability_changed(DISK_FULL)
            firing = status(service)
            await eventually(lambda: len(receiver.delivered()) == 1, what="the firing page")
            service.durability_changed(None)
            resolved = status(service)
            await eventually(lambda: len(receiver.delivered()) == 2, what="the resolved page")
            stop.set()
    pages = [request.json["alerts"][0] for request in receiver.delivered()]
    assert (firing, resolved) == (AlertStatus.FIRING, AlertStatus.RESOLVED)
    assert [page["status"] for page in pages] == ["firing", "resolved"]
    assert pages[0]["labels"] == {"alertname": "StorageUnavailable", "severity": "critical"}
    assert pages[0]["annotations"]["reason"] == DISK_FULL
    assert DISK_FULL in pages[0]["annotations"]["description"]


async def test_a_storage_alert_left_firing_by_an_earlier_run_resolves_on_the_first_store(
    registry: Registry, tmp_path: Path,
) -> None:
    async with alerting(registry, tmp_path) as earlier:
        earlier.durability_changed(DISK_FULL)
    async with alerting(registry, tmp_path) as later:
        kept = status(later)  # not resolved at start as the alert of an unknown rule
        later.durability_changed(None)
        assert (kept, status(later)) == (AlertStatus.FIRING, AlertStatus.RESOLVED)


async def test_a_storage_alert_the_alert_book_cannot_write_is_logged_and_the_service_goes_on(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    async with alerting(registry, tmp_path) as service:
        other = sqlite3.connect(tmp_path / "alerts.sqlite", isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with caplog.at_level(logging.ERROR, logger="rules.alerting"):
                service.durability_changed(DISK_FULL)  # waits out the 5 s busy timeout
            other.execute("ROLLBACK")
        finally:
            other.close()
        service.durability_changed(None)
        assert status(service) is AlertStatus.RESOLVED  # recorded, never paged
    assert "could not record the StorageUnavailable alert" in caplog.text
    assert "database is locked" in caplog.text


async def test_devices_are_counted_online_or_offline_by_kind_and_the_unheard_in_neither(
    registry: Registry, tmp_path: Path,
) -> None:
    gauges = [device.id for device in registry if device.kind is Kind.WATER_LEVEL]
    async with alerting(registry, tmp_path) as service:
        now = time.time_ns()
        service.tracker.seen(gauges[0], now)
        service.tracker.seen(gauges[1], now)
        service.tracker.status(gauges[1], False, now)  # its last will: offline, heard or not
        devices = service.metrics().devices
    assert devices[("water-level", "online")] == 1
    assert devices[("water-level", "offline")] == 1
    # Just started: the rest are within their grace, so neither online nor offline yet.
    assert devices[("traffic", "online")] == devices[("traffic", "offline")] == 0
    assert {kind for kind, _ in devices} == {kind.value for kind in Kind}
