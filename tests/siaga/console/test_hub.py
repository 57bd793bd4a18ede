"""Tests of the console's hub over a real Alerting and citizens' desk: statuses per tick, the
offline sweep, values, alerts and reports as events, and the ring that streams catch up from."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.deadletters import format_time
from reports.model import Report, State
from rules.silences import parse_matcher
from siaga.console.hub import MAX_CHANGED_PER_TICK, RING_EVENTS, RING_MAX_BYTES, TimeFormat
from siaga.settings import ConsoleSettings
from tests.polling import eventually
from tests.siaga.console.hubrig import REGISTRY, T0, Clock, S, open_rig, parse, published, running

GAUGE = "pa-manggarai"


async def test_a_reading_above_siaga1_publishes_the_gauges_new_status_at_the_next_tick(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.read(GAUGE, 990)
        await rig.hub.tick()
        [event] = published(rig.hub, name="devices")
    assert event.id == f"{rig.hub.epoch}-1"
    [entry] = event.data
    assert entry["id"] == GAUGE and entry["status"] == "siaga-1"
    assert entry["value"] == {"field": "level_cm", "v": 990}
    assert entry["ts"] == entry["last_seen"] == "2023-11-14T22:13:20.000Z"


async def test_a_reading_that_leaves_the_status_as_it_was_publishes_no_devices_event(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.read(GAUGE, 800)
        await rig.hub.tick()
        seen = rig.hub.seq
        rig.clock.now += S
        rig.read(GAUGE, 810)
        await rig.hub.tick()
        assert published(rig.hub, seen, "devices") == []
        assert rig.hub.status(GAUGE) == "siaga-3"


async def test_the_map_keeps_a_ladder_alerts_level_while_the_water_is_within_its_margin(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.read(GAUGE, 860)
        await rig.hub.tick()
        rig.clock.now += S
        rig.read(GAUGE, 845)  # under Siaga 2 (851) but not by the clear margin (10)
        await rig.hub.tick()
        held = rig.hub.status(GAUGE)
        rig.clock.now += S
        rig.read(GAUGE, 835)
        await rig.hub.tick()
        assert (held, rig.hub.status(GAUGE)) == ("siaga-2", "siaga-3")


async def test_a_gauge_silent_past_its_grace_turns_offline_at_the_next_sweep(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.read(GAUGE, 700)
        await rig.hub.tick()
        rig.clock.now += 119 * S  # grace: 2 x 60 s
        await rig.hub.tick()
        before = rig.hub.status(GAUGE)
        rig.clock.now += 2 * S
        seen = rig.hub.seq
        await rig.hub.tick()
        [event] = published(rig.hub, seen, "devices")
    assert before == "ok"
    assert {entry["id"]: entry["status"] for entry in event.data}[GAUGE] == "offline"


async def test_a_status_message_saying_offline_turns_the_gauge_grey_at_the_next_tick(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.read(GAUGE, 700)
        await rig.hub.tick()
        rig.status_says(GAUGE, online=False)
        seen = rig.hub.seq
        await rig.hub.tick()
        [event] = published(rig.hub, seen, "devices")
    assert [(entry["id"], entry["status"]) for entry in event.data] == [(GAUGE, "offline")]


async def test_values_are_sent_every_values_every_s_for_the_devices_read_since(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path, ConsoleSettings(values_every_s=10)) as rig:
        await rig.hub.tick()  # the first tick sends what it has (nothing yet) and starts the 10 s
        rig.read(GAUGE, 700)
        rig.read("pa-karet", 300)
        await rig.hub.tick()
        early = published(rig.hub, name="values")
        rig.clock.now += 5 * S
        rig.read(GAUGE, 705)
        rig.clock.now += 5 * S
        await rig.hub.tick()
        [values] = published(rig.hub, name="values")
    assert early == []
    assert values.data == {GAUGE: ["2023-11-14T22:13:25.000Z", 705],
                           "pa-karet": ["2023-11-14T22:13:20.000Z", 300]}


async def test_an_alert_change_is_published_as_its_api_json(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig):
        rig.read(GAUGE, 990)
        await eventually(lambda: published(rig.hub, name="alert"), what="an alert event")
        [event] = published(rig.hub, name="alert")
    assert event.data["rule"] == "FloodLevel" and event.data["subject"] == GAUGE
    assert event.data["status"] == "firing" and event.data["labels"]["level"] == "siaga-1"
    assert event.data["acknowledged"] is None


async def test_an_acknowledgement_in_a_worker_thread_is_published(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig):
        rig.read(GAUGE, 990)
        await eventually(lambda: published(rig.hub, name="alert"), what="the firing alert")
        fingerprint = published(rig.hub, name="alert")[0].data["fingerprint"]
        seen = rig.hub.seq
        await asyncio.to_thread(rig.alerting.book.acknowledge, fingerprint, "rina", "on it")
        await eventually(lambda: published(rig.hub, seen, "alert"), what="the ack's event")
        [event] = published(rig.hub, seen, "alert")
    assert event.data["acknowledged"]["by"] == "rina"


async def test_a_new_silence_republishes_the_alerts_it_covers(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig):
        rig.read(GAUGE, 990)
        await eventually(lambda: published(rig.hub, name="alert"), what="the firing alert")
        seen = rig.hub.seq
        silence = await asyncio.to_thread(
            rig.alerting.book.add_silence, [parse_matcher(f"device_id={GAUGE}")],
            rig.clock.now, rig.clock.now + 3600 * S, "rina", "gauge maintenance", rig.clock.now)
        await eventually(lambda: published(rig.hub, seen, "alert"), what="the silenced alert")
        [event] = published(rig.hub, seen, "alert")
    assert event.data["silenced_by"] == silence.id


async def test_a_stored_report_and_an_officers_update_are_published(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig):
        report = await rig.report()
        await eventually(lambda: published(rig.hub, name="report"), what="the report event")
        seen = rig.hub.seq
        await rig.desk.update(report.id, State.IN_PROGRESS, "tim menuju lokasi", "budi",
                              None)
        await eventually(lambda: published(rig.hub, seen, "report"), what="the update's event")
        [stored] = published(rig.hub, name="report")[:1]
        [updated] = published(rig.hub, seen, "report")
    assert stored.data == {"id": report.id, "category": "banjir", "lat": -6.1754,
                           "long": 106.8272, "status": "open", "state": "open",
                           "requested_at": "2023-11-14T22:13:20.000Z",
                           "description": "Air setinggi lutut"}
    assert (updated.data["id"], updated.data["state"]) == (report.id, "in-progress")


async def test_a_tick_takes_at_most_its_cap_of_changed_devices_and_leaves_the_rest(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        rig.alerting.changed.update(f"unknown-{n}" for n in range(MAX_CHANGED_PER_TICK + 700))
        await rig.hub.tick()
        left = len(rig.alerting.changed)
        await rig.hub.tick()
    assert (left, len(rig.alerting.changed)) == (700, 0)


async def test_a_stream_resumes_after_an_id_of_this_run_and_resets_otherwise(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        hub = rig.hub
        for n in range(3):
            hub.publish("values", {"n": n})
        resumed = hub.resume(f"{hub.epoch}-1")
        assert hub.resume(None) == (3, False)
        assert hub.resume(f"{hub.epoch}-1") == (1, False)
        assert hub.resume(f"{hub.epoch}-0") == (0, False)  # nothing seen yet: all of it
        assert hub.resume(f"0badc0de-{1}")[1] is True  # an earlier run's id
        assert hub.resume(f"{hub.epoch}-9")[1] is True  # an id from the future
        assert hub.resume("garbage")[1] is True
    found = hub.events_after(resumed[0])
    assert found is not None and found[0] == 3
    assert [event.data for event in parse(b"".join(found[1]))] == [{"n": 1}, {"n": 2}]


async def test_an_id_the_ring_no_longer_holds_means_reload(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        hub = rig.hub
        for n in range(RING_EVENTS + 2):
            hub.publish("values", {"n": n})
        assert hub.resume(f"{hub.epoch}-1")[1] is True
        assert hub.events_after(1) is None
        assert hub.resume(f"{hub.epoch}-2") == (2, False)  # the oldest still held follows


async def test_the_ring_is_bounded_by_bytes_as_well_as_events(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        hub = rig.hub
        large = {"pad": "x" * (1024 * 1024)}
        for _ in range(RING_MAX_BYTES // (1024 * 1024) + 4):
            hub.publish("devices", large)
        assert hub.events_after(1) is None
        kept = hub.events_after(hub.seq - 3)
    assert kept is not None and len(kept[1]) == 3


async def test_the_hub_counts_streams_up_to_max_streams_and_none_after_close(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path, ConsoleSettings(max_streams=2)) as rig:
        hub = rig.hub
        joined = [hub.join(), hub.join(), hub.join()]
        hub.leave()
        again = hub.join()
        wake = hub.wake
        hub.close()
        assert (joined, again, hub.join(), wake.is_set()) == ([True, True, False], True, False,
                                                              True)


async def test_the_hubs_loop_ticks_on_its_own_and_stops_with_stop(tmp_path: Path) -> None:
    async with open_rig(tmp_path, clock=Clock()) as rig:
        async with running(rig):
            rig.read(GAUGE, 900)
            await eventually(lambda: rig.hub.status(GAUGE) == "siaga-2", what="siaga-2")
        assert rig.hub.closed


async def test_a_report_listener_that_raises_leaves_the_report_stored_and_answered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with open_rig(tmp_path) as rig:
        told: list[str] = []

        def broken(_report: Report) -> None:
            raise RuntimeError("a listener's bug")

        rig.desk.listen(broken)
        unsubscribe = rig.desk.listen(lambda report: told.append(report.id))
        report = await rig.report()
        unsubscribe()
        await rig.report()
        stored = await rig.desk.get(report.id)
    assert told == [report.id]  # after the unsubscribe, no more
    assert stored.id == report.id
    assert "a report listener failed" in caplog.text


def test_the_hubs_times_read_as_the_apis() -> None:
    times = TimeFormat()
    moments = [T0, T0 + 999_999_999, T0 + 1_000_000, T0 - 1, 0, T0 + 86_400 * S + 5]
    assert [times(ns) for ns in moments * 2] == [format_time(ns) for ns in moments * 2]


async def test_a_device_never_heard_from_stays_no_data_however_long_it_is_silent(
        tmp_path: Path) -> None:
    # SPEC section 8: `no-data` for a device not heard from since the service started,
    # although the rules judge it offline once its grace has passed.
    async with open_rig(tmp_path) as rig:
        await rig.hub.tick()
        rig.clock.now += 3600 * S  # far past the 2 x 60 s grace
        await rig.hub.tick()
        gauge = REGISTRY.get(GAUGE)
        assert gauge is not None
        judged = rig.alerting.checker.is_offline(gauge, rig.clock.now)
        silent = rig.hub.status(GAUGE)
        rig.read(GAUGE, 700)
        await rig.hub.tick()
        assert (judged, silent, rig.hub.status(GAUGE)) == (True, "no-data", "ok")
