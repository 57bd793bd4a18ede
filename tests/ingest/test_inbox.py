"""The inbox both inputs share: order, payload bytes, waking, and forgetting a lost connection's."""

from __future__ import annotations

import asyncio

from ingest.inbox import Inbox, Message


def message(mid: int, payload: bytes = b"{}", generation: int = 0) -> Message:
    return Message("siaga/water-level/manggarai/telemetry", payload, mid, 1, generation, 0)


def test_messages_are_taken_oldest_first_and_their_bytes_counted() -> None:
    inbox = Inbox()
    for mid, payload in enumerate((b"a", b"bb", b"ccc")):
        inbox.put(message(mid, payload))
    assert (len(inbox), inbox.bytes) == (3, 6)
    assert [m.mid for m in inbox.take(2)] == [0, 1]
    assert (len(inbox), inbox.bytes) == (1, 3)
    assert [m.mid for m in inbox.take(10)] == [2]
    assert (len(inbox), inbox.bytes) == (0, 0)


def test_a_lost_connections_messages_are_forgotten_with_their_bytes() -> None:
    inbox = Inbox()
    inbox.put(message(1, b"old!", generation=1))
    inbox.put(message(1, b"new", generation=2))
    inbox.keep_generation(2)
    assert [(m.generation, m.payload) for m in inbox.take(10)] == [(2, b"new")]
    assert inbox.bytes == 0


async def test_wait_returns_when_woken_and_times_out_when_empty() -> None:
    inbox = Inbox()
    waiting = asyncio.create_task(inbox.wait(30))
    await asyncio.sleep(0)  # let it start waiting: this test is about the wake-up itself
    inbox.put(message(1))
    inbox.wake()
    await asyncio.wait_for(waiting, 5)
    assert len(inbox.take(1)) == 1
    await inbox.wait(0.01)  # empty: returns after its time-out, without raising
    assert len(inbox) == 0
