"""Tests of `GET /console/stream` over loopback HTTP: the events as EventSource reads them,
catching up after an id, the cap on streams, shutdown, heartbeats, a burst larger than the
socket's buffers, the stalled console and the one that went away."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from siaga.console import stream
from siaga.settings import ConsoleSettings
from tests.polling import eventually
from tests.siaga.console.hubrig import Event, SseReader, open_rig, running, serving

GAUGE = "pa-manggarai"
PATH = "/console/stream"


def named(name: str) -> object:
    return lambda events: any(event.name == name for event in events)


async def test_a_stream_says_retry_then_sends_a_gauges_new_status(tmp_path: Path) -> None:
    async with (open_rig(tmp_path) as rig, running(rig), serving(rig) as served,
                served.session.get(served.url + PATH) as response):
        reader = SseReader(response)
        await reader.until(lambda _events: b"retry: 1000\n\n" in reader.raw)
        rig.read(GAUGE, 990)
        events = await reader.until(named("devices"))
        headers = response.headers
    assert reader.raw.startswith(b"retry: 1000\n\n")
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-store"
    [devices] = [event for event in events if event.name == "devices"]
    assert devices.data[0]["id"] == GAUGE and devices.data[0]["status"] == "siaga-1"
    assert devices.id is not None and devices.id.startswith(rig.hub.epoch + "-")


async def test_a_console_reconnecting_with_last_event_id_gets_what_it_missed(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig), serving(rig) as served:
        missed_after = rig.hub.last_id
        for n in range(3):
            rig.hub.publish("values", {"n": n})
        headers = {"Last-Event-ID": missed_after}
        async with served.session.get(served.url + PATH, headers=headers) as response:
            reader = SseReader(response)
            events = await reader.until(lambda events: len(events) >= 3)
    assert [event.data for event in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [event.name for event in events] == ["values"] * 3


async def test_the_header_wins_over_the_query_as_the_browser_sends_a_newer_id(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig), serving(rig) as served:
        first = rig.hub.last_id
        rig.hub.publish("values", {"n": 0})
        newer = rig.hub.last_id
        rig.hub.publish("values", {"n": 1})
        url = f"{served.url}{PATH}?last_event_id={first}"
        async with served.session.get(url, headers={"Last-Event-ID": newer}) as response:
            events = await SseReader(response).until(lambda events: len(events) >= 1)
    assert [event.data for event in events] == [{"n": 1}]


async def test_an_id_of_an_earlier_run_makes_the_console_reload(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig), serving(rig) as served:
        url = f"{served.url}{PATH}?last_event_id=0badc0de-41"
        async with served.session.get(url) as response:
            reader = SseReader(response)
            [reset] = await reader.until(named("reset"))
            rig.hub.publish("values", {"n": 1})
            events = await reader.until(named("values"))
    assert reset == Event(rig.hub.epoch + "-0", "reset", {})
    assert [event.name for event in events] == ["reset", "values"]


async def test_a_console_beyond_max_streams_is_told_to_come_back(tmp_path: Path) -> None:
    async with (open_rig(tmp_path, ConsoleSettings(max_streams=1)) as rig, running(rig),
                serving(rig) as served):
        async with served.session.get(served.url + PATH) as first:
            await SseReader(first).until(lambda _events: True)
            async with served.session.get(served.url + PATH) as second:
                refused = (second.status, second.headers.get("Retry-After"),
                           await second.json())
        await eventually(lambda: rig.hub.streams == 0, what="the first stream's end")
        async with served.session.get(served.url + PATH) as third:
            admitted = third.status
    assert refused == (503, "5", {"error": "too many consoles are open (console.max_streams); "
                                           "try again shortly"})
    assert admitted == 200


async def test_closing_the_hub_ends_every_open_stream(tmp_path: Path) -> None:
    async with (open_rig(tmp_path) as rig, running(rig), serving(rig) as served,
                served.session.get(served.url + PATH) as one,
                served.session.get(served.url + PATH) as two):
        await eventually(lambda: rig.hub.streams == 2, what="two open streams")
        rig.hub.close()
        async with asyncio.timeout(5):
            ends = [await one.content.read(), await two.content.read()]
    assert all(end.startswith(b"retry: 1000") for end in ends)
    assert rig.hub.streams == 0


async def test_a_quiet_stream_sends_heartbeats(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "HEARTBEAT_S", 0.05)  # the real 15 s, shortened for the test
    async with (open_rig(tmp_path) as rig, running(rig), serving(rig) as served,
                served.session.get(served.url + PATH) as response):
        reader = SseReader(response)
        events = await reader.until(lambda events: len(events) >= 2)
    assert reader.raw.startswith(b"retry: 1000\n\nevent: hb\ndata: {}\n\n")
    assert events == [Event(None, "hb", {})] * 2  # no id: the page's last id stays


async def test_a_console_reading_a_burst_larger_than_the_buffers_gets_all_of_it(
        tmp_path: Path) -> None:
    async with (open_rig(tmp_path) as rig, running(rig), serving(rig) as served,
                served.session.get(served.url + PATH) as response):
        reader = SseReader(response)
        await reader.until(lambda _events: reader.raw.startswith(b"retry"))
        start = rig.hub.seq
        for n in range(80):  # one wake with 20 MiB to send: past the kernel's buffers
            # `n` last, so each event ends differently and the end of the last is unique.
            rig.hub.publish("devices", {"pad": "x" * (256 * 1024), "n": n})
        rig.hub.notify()
        found = rig.hub.events_after(start)
        assert found is not None
        sent = b"".join(found[1])
        received = bytearray(reader.raw)
        async with asyncio.timeout(20):
            while not received.endswith(sent[-64:]):
                chunk = await response.content.readany()
                if not chunk:
                    break  # dropped: the comparison below says how far it got
                received += chunk
    assert len(received) >= len(sent), f"{len(received)} of {len(sent)} bytes, then dropped"
    assert received.endswith(sent)


async def test_head_of_the_stream_is_refused_and_takes_no_place(tmp_path: Path) -> None:
    async with (open_rig(tmp_path) as rig, running(rig), serving(rig) as served,
                served.session.head(served.url + PATH) as response):
        status = response.status
        streams = rig.hub.streams
    assert (status, streams) == (405, 0)


async def test_a_console_that_went_away_frees_its_place_although_nothing_is_sent(
        tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig, running(rig), serving(rig) as served:
        async with served.session.get(served.url + PATH) as response:
            reader = SseReader(response)
            await reader.until(lambda _events: reader.raw.startswith(b"retry"))
            assert rig.hub.streams == 1
        # Closed by the client; no event and no heartbeat (15 s) is due to find it gone.
        await eventually(lambda: rig.hub.streams == 0, within=5 * stream.GONE_CHECK_S,
                         what="the stream's place freed")


async def test_a_console_that_stops_reading_is_dropped_not_waited_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="siaga.console.stream")
    monkeypatch.setattr(stream, "DRAIN_S", 1.0)  # the real 10 s, shortened for the test
    async with open_rig(tmp_path) as rig, running(rig), serving(rig) as served:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, (served.host, served.port))
        await loop.sock_sendall(client, f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            await eventually(lambda: rig.hub.streams == 1, what="the stream open")
            large = {"pad": "x" * (256 * 1024)}
            for _ in range(80):  # 20 MiB: past the kernel's buffers and our 1 MiB
                rig.hub.publish("devices", large)
                rig.hub.notify()
                await asyncio.sleep(0)  # let the stream write (this is not a wait on time)
            await eventually(lambda: rig.hub.streams == 0, within=10 * stream.DRAIN_S,
                             what="the stalled console dropped")
            # A console that reads is served meanwhile and after.
            async with served.session.get(served.url + PATH) as response:
                reader = SseReader(response)
                await reader.until(lambda _events: reader.raw.startswith(b"retry"))
                rig.hub.publish("values", {"n": 1})
                rig.hub.notify()
                events = await reader.until(named("values"))
        finally:
            client.close()
    assert events[-1].data == {"n": 1}
    [dropped] = [record.getMessage() for record in caplog.records]
    assert "dropped" in dropped and int(dropped.split(": ")[1].split()[0]) > stream.MAX_BUFFERED
