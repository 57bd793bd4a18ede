"""Messages received and waiting for the pipeline: what both inputs (MQTT, AMQP) hand over.

The pipeline sees one `Inbox` protocol (`ingest.pipeline.Inbox`); both subscribers keep their
waiting messages here, with their payload bytes counted, so the waiting, taking and
forgetting are written once. Event-loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import NamedTuple

INBOX_MAX = 20_000  # messages waiting for the pipeline before the socket is left unread
INBOX_MAX_BYTES = 16 * 2**20  # ... or this much payload (batched messages are large)


class Message(NamedTuple):
    topic: str
    payload: bytes
    mid: int  # the MQTT packet id, or the AMQP delivery tag
    qos: int
    generation: int  # which connection delivered it; acks are valid only on that one
    received_ns: int


class Inbox:
    """Waiting messages, oldest first, and how many payload bytes they hold.

    Bounded by its subscriber, which stops reading its socket once the inbox is `full`
    (`max_messages` or `max_bytes`) and reads again once the pipeline has taken half of
    it (`half_empty`): TCP flow control and the broker's window then hold the rest, so a
    burst of large batched messages cannot fill memory.
    """

    __slots__ = ("_arrived", "_max_bytes", "_max_messages", "_messages", "bytes")

    def __init__(self, max_messages: int = INBOX_MAX, max_bytes: int = INBOX_MAX_BYTES) -> None:
        self._messages: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def full(self) -> bool:
        return len(self._messages) >= self._max_messages or self.bytes >= self._max_bytes

    @property
    def half_empty(self) -> bool:
        return (len(self._messages) <= self._max_messages // 2
                and self.bytes <= self._max_bytes // 2)

    def put(self, message: Message) -> None:
        """Add a message; waiters are told by `wake` (once per read, not per message)."""
        self._messages.append(message)
        self.bytes += len(message.payload)

    def wake(self) -> None:
        """Tell a waiting `wait` that messages are here, if any are."""
        if self._messages:
            self._arrived.set()

    async def wait(self, seconds: float) -> None:
        """Return once messages are waiting, or after `seconds`."""
        if self._messages:
            return
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), seconds)

    def take(self, limit: int) -> list[Message]:
        """Take up to `limit` waiting messages, oldest first."""
        messages = self._messages
        taken = [messages.popleft() for _ in range(min(limit, len(messages)))]
        self.bytes -= sum(len(message.payload) for message in taken)
        return taken

    def keep_generation(self, generation: int) -> None:
        """Forget what older connections delivered: it comes again on the new one."""
        self._messages = deque(m for m in self._messages if m.generation == generation)
        self.bytes = sum(len(message.payload) for message in self._messages)
