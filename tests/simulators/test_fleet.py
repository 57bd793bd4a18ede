"""Scenario playback: pacing by speed, counting by kind and fault, and per-device connections."""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.kinds import Kind
from devices.topics import TopicScheme
from siaga.sandbox.mosquitto import Mosquitto
from siaga_core.mqttloop import BrokerAddress
from simulators.connection import BrokerUnavailable, Connection
from simulators.fleet import Fleet, FleetConfig, FleetConfigError
from simulators.pool import Pool, PoolConfig
from simulators.runner import ProgressPrinter, placed
from simulators.scenario import load_scenario
from simulators.summary import Count, Summary
from tests.integration.support import simulator_address
from tests.polling import eventually
from tests.simulators.collector import Collector
from tests.simulators.fakes import FakeClock, FakeSource, Opener, device, emission

T0 = 1_577_836_800.0  # 2020-01-01T00:00:00Z


async def test_an_emission_goes_out_when_its_simulated_time_is_due_at_the_speed() -> None:
    clock = FakeClock()
    opener = Opener(clock)
    source = FakeSource([device("gauge")], [emission(T0), emission(T0 + 60),
                                            emission(T0 + 3600)])
    await Fleet(source, FleetConfig(speed=60), clock=clock, open_outlets=opener).run()
    sent = opener.opened[0].all_sent()
    assert [s.at - 1000.0 for s in sent] == pytest.approx([0.0, 1.0, 60.0])


async def test_pacing_counts_from_start_s_not_from_the_first_emission() -> None:
    clock = FakeClock()
    opener = Opener(clock)
    source = FakeSource([device("gauge")], [emission(T0 + 600)])
    fleet = Fleet(source, FleetConfig(speed=60), clock=clock, open_outlets=opener, start_s=T0)
    await fleet.run()
    assert opener.opened[0].all_sent()[0].at - 1000.0 == pytest.approx(10.0)


async def test_a_scenario_placed_at_the_present_plays_in_real_time_whatever_the_speed() -> None:
    clock = FakeClock(epoch=T0)
    opener = Opener(clock)
    source = FakeSource([device("gauge")], [emission(T0), emission(T0 + 60)])
    await Fleet(source, FleetConfig(speed=3600), clock=clock, open_outlets=opener).run()
    assert [s.at - 1000.0 for s in opener.opened[0].all_sent()] == pytest.approx([0.0, 60.0])


async def test_a_scenario_placed_in_the_past_catches_up_then_goes_live() -> None:
    clock = FakeClock(epoch=T0 + 100)
    opener = Opener(clock)
    source = FakeSource([device("gauge")], [emission(T0), emission(T0 + 50),
                                            emission(T0 + 200)])
    await Fleet(source, FleetConfig(speed=10), clock=clock, open_outlets=opener).run()
    sent = [s.at - 1000.0 for s in opener.opened[0].all_sent()]
    assert sent == pytest.approx([0.0, 5.0, 100.0])  # paced, paced, then held until its time


async def test_ahead_s_none_lets_simulated_time_run_into_the_future() -> None:
    clock = FakeClock(epoch=T0)
    opener = Opener(clock)
    source = FakeSource([device("gauge")], [emission(T0), emission(T0 + 3600)])
    await Fleet(source, FleetConfig(speed=3600, ahead_s=None), clock=clock,
                open_outlets=opener).run()
    assert [s.at - 1000.0 for s in opener.opened[0].all_sent()] == pytest.approx([0.0, 1.0])


async def test_as_fast_as_possible_never_sleeps() -> None:
    clock = FakeClock()
    source = FakeSource([device("gauge")], [emission(T0 + i * 3600) for i in range(50)])
    summary = await Fleet(source, FleetConfig(speed=None), clock=clock,
                          open_outlets=Opener(clock)).run()
    assert clock.sleeps == []
    assert summary.messages == 50


async def test_sleeps_are_sliced_so_a_stop_is_noticed_within_a_quarter_second() -> None:
    clock = FakeClock()
    source = FakeSource([device("gauge")], [emission(T0), emission(T0 + 3600)])
    await Fleet(source, FleetConfig(speed=1000), clock=clock, open_outlets=Opener(clock)).run()
    assert sum(clock.sleeps) == pytest.approx(3.6)
    assert max(clock.sleeps) <= 0.25


async def test_duration_ends_the_run_on_the_wall_clock() -> None:
    clock = FakeClock()
    source = FakeSource([device("gauge")], [emission(T0 + i * 10) for i in range(10)])
    summary = await Fleet(source, FleetConfig(speed=1, duration_s=35), clock=clock,
                          open_outlets=Opener(clock)).run()
    assert summary.messages == 4  # at 0, 10, 20 and 30 s


async def test_until_s_and_start_s_cut_the_simulated_time_played() -> None:
    clock = FakeClock()
    source = FakeSource([device("gauge")], [emission(T0 + i * 60) for i in range(10)])
    summary = await Fleet(source, FleetConfig(speed=None), clock=clock,
                          open_outlets=Opener(clock), start_s=T0 + 120,
                          until_s=T0 + 300).run()
    assert summary.messages == 3
    assert summary.sim_time_s == T0 + 240


async def test_setting_stop_ends_the_run() -> None:
    clock = FakeClock()
    stop = asyncio.Event()
    source = FakeSource([device("gauge")], [emission(T0 + i) for i in range(100)])
    fleet = Fleet(source, FleetConfig(speed=1, on_progress=lambda _: stop.set()),
                  clock=clock, open_outlets=Opener(clock))
    summary = await fleet.run(stop)
    assert 0 < summary.messages < 100


async def test_the_summary_counts_messages_and_readings_by_kind_and_fault() -> None:
    clock = FakeClock()
    devices = [device("gauge"), device("monitor", Kind.AIR_QUALITY)]
    source = FakeSource(devices, [
        emission(T0, "gauge"),
        emission(T0 + 1, "gauge", fault="duplicate"),
        emission(T0 + 2, "gauge", fault="store-and-forward", readings=12),
        emission(T0 + 3, "monitor", Kind.AIR_QUALITY, fault="malformed", readings=0),
        emission(T0 + 4, "monitor", Kind.AIR_QUALITY),
    ])
    summary = await Fleet(source, FleetConfig(speed=None), clock=clock,
                          open_outlets=Opener(clock)).run()
    assert summary.by_kind() == {"water-level": Count(3, 14), "air-quality": Count(2, 1)}
    assert summary.by_fault() == {"none": Count(2, 2), "duplicate": Count(1, 1),
                                  "store-and-forward": Count(1, 12), "malformed": Count(1, 0)}
    assert summary.sent_with([None, "duplicate"]) == Count(3, 3)
    assert summary.acknowledged == summary.sent
    assert (summary.messages, summary.readings) == (5, 15)


async def test_acknowledged_counts_only_what_the_broker_acknowledged() -> None:
    clock = FakeClock()
    opener = Opener(clock, acks=False)
    source = FakeSource([device("gauge")], [emission(T0 + i) for i in range(5)])
    summary = await Fleet(source, FleetConfig(speed=None), clock=clock,
                          open_outlets=opener).run()
    assert (summary.messages, summary.acknowledged_messages) == (5, 0)


async def test_each_device_publishes_over_its_own_connection() -> None:
    clock = FakeClock()
    opener = Opener(clock)
    source = FakeSource([device("a"), device("b")],
                        [emission(T0, "a"), emission(T0 + 1, "b"), emission(T0 + 2, "a"),
                         emission(T0 + 3, "stranger")])
    await Fleet(source, FleetConfig(speed=None), clock=clock, open_outlets=opener).run()
    outlets = opener.opened[0]
    assert [len(outlets.by_device[name].sent) for name in ("a", "b")] == [2, 1]
    assert len(outlets.fallback.sent) == 1


async def test_a_full_window_waits_for_acknowledgements_before_publishing_more() -> None:
    clock = FakeClock()
    opener = Opener(clock, window=3)
    source = FakeSource([device("gauge")], [emission(T0 + i) for i in range(20)])
    summary = await Fleet(source, FleetConfig(speed=None), clock=clock,
                          open_outlets=opener).run()
    assert opener.opened[0].by_device["gauge"].max_in_flight == 3
    assert summary.acknowledged_messages == 20


async def test_progress_is_reported_once_per_interval() -> None:
    clock = FakeClock()
    seen: list[Summary] = []
    source = FakeSource([device("gauge")], [emission(T0 + i * 10) for i in range(31)])
    await Fleet(source, FleetConfig(speed=10, progress_every_s=1.0, on_progress=seen.append),
                clock=clock, open_outlets=Opener(clock)).run()
    assert 28 <= len(seen) <= 31  # 30 s of wall time
    reached = [s.sim_time_s or 0.0 for s in seen]
    assert reached == sorted(reached) and reached[0] > T0


def test_placing_a_scenario_moves_its_start_and_measures_until_from_there() -> None:
    scenario = load_scenario("flood-2020-01-01")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    moved, start_s, until_s = placed(scenario, start, timedelta(hours=26))
    assert (moved.start, start_s, until_s) == (start, start.timestamp(),
                                               start.timestamp() + 26 * 3600)
    assert placed(scenario)[2] == scenario.end_s
    with pytest.raises(ValueError, match="after the start"):
        placed(scenario, until=scenario.start - timedelta(hours=1))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def summary_at(elapsed_s: float, messages: int) -> Summary:
    key = ("traffic", None)
    return Summary({key: Count(messages, messages)}, {key: Count(messages, messages)}, 0, 0,
                   elapsed_s, T0)


def test_progress_redraws_one_line_on_a_terminal_every_second() -> None:
    out = Terminal()
    printer = ProgressPrinter(out)
    printer(summary_at(1.0, 100))
    printer(summary_at(2.0, 400))
    printer.finish()
    assert printer.every_s == 1.0
    assert out.getvalue().count("\r") == 2 and out.getvalue().endswith("\n")
    assert "sim 2020-01-01 07:00 WIB" in out.getvalue()
    assert "300 messages/s" in out.getvalue()  # the rate since the line before


def test_progress_in_a_log_is_a_line_every_ten_seconds() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out)
    printer(summary_at(10.0, 100))
    assert printer.every_s == 10.0
    assert out.getvalue().startswith("[00:10] ") and out.getvalue().endswith("\n")
    assert "\r" not in out.getvalue()


@pytest.mark.parametrize("overrides", [
    {"speed": 0.0}, {"speed": float("nan")}, {"speed": -1.0}, {"qos": 2}, {"window": 0},
    {"window": 70_000}, {"duration_s": -1.0}, {"address": BrokerAddress(port=0)},
    {"progress_every_s": 0.0}])
def test_a_config_out_of_range_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(FleetConfigError):
        FleetConfig(**overrides)


def test_the_summary_reads_as_totals_then_kinds_then_faults() -> None:
    key = ("water-level", "spike")
    text = str(Summary({key: Count(2, 2)}, {key: Count(2, 2)}, 4, 0, 2.0, T0, True))
    assert "2 of 2 messages acknowledged" in text
    assert "simulated time reached 2020-01-01 07:00 WIB" in text
    lines = [line.split() for line in text.splitlines()]
    assert lines[2:] == [["messages", "readings"], ["by", "kind"], ["water-level", "2", "2"],
                         ["by", "fault"], ["spike", "2", "2"]]


# --- against a real Mosquitto -----------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test alone, so tests sharing the broker never see each other."""
    return f"simtest{uuid.uuid4().hex[:8]}"


@pytest.fixture
def collect(mosquitto: Mosquitto, prefix: str) -> Iterator[Callable[[], Collector]]:
    collectors: list[Collector] = []

    def start() -> Collector:
        collectors.append(Collector(mosquitto, prefix))
        return collectors[-1]

    yield start
    for collector in collectors:
        collector.close()


def pool_of(mosquitto: Mosquitto, prefix: str, names: list[str], **config: Any) -> Pool:
    address = simulator_address(mosquitto)
    return Pool([device(name) for name in names],
                PoolConfig(address, client_prefix=f"{prefix}-", **config), TopicScheme(prefix))


def statuses(collector: Collector) -> dict[str, tuple[bytes, bool]]:
    """Device id -> its last status payload and whether it came as a retained message."""
    return {topic.split("/")[2]: (payload, retained)
            for topic, payload, retained in collector.received("status")}


@pytest.mark.integration
async def test_each_device_connection_says_online_retained(
    mosquitto: Mosquitto, prefix: str, collect: Callable[[], Collector]
) -> None:
    async with pool_of(mosquitto, prefix, ["pos-a", "pos-b"]) as pool:
        assert [c.client_id for c in pool.connections] == [
            f"{prefix}-pos-a", f"{prefix}-pos-b", f"{prefix}-stray"]
        late = collect()  # joins after the devices: gets what the broker retained
        await eventually(lambda: len(statuses(late)) == 2, what="two retained statuses")
        assert statuses(late) == {"pos-a": (b"online", True), "pos-b": (b"online", True)}


@pytest.mark.integration
async def test_a_dropped_device_connection_leaves_its_last_will_offline(
    mosquitto: Mosquitto, prefix: str, collect: Callable[[], Collector]
) -> None:
    async with pool_of(mosquitto, prefix, ["pos-a", "pos-b"]) as pool:
        watcher = collect()
        await eventually(lambda: len(statuses(watcher)) == 2, what="two statuses")
        await pool.drop("pos-a")  # the socket closes without DISCONNECT
        await eventually(lambda: statuses(watcher)["pos-a"][0] == b"offline",
                         what="pos-a offline")
        late = collect()
        await eventually(lambda: len(statuses(late)) == 2, what="two retained statuses")
        assert statuses(late) == {"pos-a": (b"offline", True), "pos-b": (b"online", True)}


@pytest.mark.integration
async def test_a_clean_close_says_offline_retained(
    mosquitto: Mosquitto, prefix: str, collect: Callable[[], Collector]
) -> None:
    async with pool_of(mosquitto, prefix, ["pos-a"]):
        pass
    late = collect()
    await eventually(lambda: len(statuses(late)) == 1, what="one retained status")
    assert statuses(late) == {"pos-a": (b"offline", True)}


@pytest.mark.integration
async def test_every_acknowledged_message_of_a_playback_arrives(
    mosquitto: Mosquitto, prefix: str, collect: Callable[[], Collector]
) -> None:
    collector = collect()
    names = [f"pos-{index}" for index in range(5)]
    source = FakeSource([device(name) for name in names], [
        emission(T0 + i, names[i % 5], prefix=prefix) for i in range(2000)])
    config = FleetConfig(simulator_address(mosquitto), prefix, speed=None,
                         window=16, client_prefix=f"{prefix}-")
    summary = await Fleet(source, config).run()
    assert summary.acknowledged_messages == summary.messages == 2000
    assert summary.status_messages == 10  # online and offline per device
    await eventually(lambda: len(collector.received("telemetry")) == 2000,
                     what="2000 telemetry messages")


@pytest.mark.integration
async def test_a_shared_connection_says_every_devices_status(
    mosquitto: Mosquitto, prefix: str, collect: Callable[[], Collector]
) -> None:
    async with pool_of(mosquitto, prefix, ["pos-a", "pos-b"], shared=True) as pool:
        assert [c.client_id for c in pool.connections] == [f"{prefix}-shared"]
        late = collect()
        await eventually(lambda: len(statuses(late)) == 2, what="two retained statuses")
        assert set(statuses(late).values()) == {(b"online", True)}
    later = collect()
    await eventually(lambda: len(statuses(later)) == 2, what="two retained statuses")
    assert set(statuses(later).values()) == {(b"offline", True)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_an_unreachable_broker_raises_broker_unavailable() -> None:
    connection = Connection(BrokerAddress("127.0.0.1", free_port()), "nobody", window=10)
    with pytest.raises(BrokerUnavailable):
        await connection.open()


async def test_an_unreachable_broker_fails_a_pool_of_devices_with_one_error() -> None:
    address = BrokerAddress("127.0.0.1", free_port())
    pool = Pool([device("pos-a"), device("pos-b")], PoolConfig(address), TopicScheme())
    with pytest.raises(BrokerUnavailable, match="cannot reach"):
        await pool.__aenter__()
