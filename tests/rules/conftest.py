"""Fixtures of the rules tests: a real webhook receiver, and an alert book on a set clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rules.alertbook import AlertBook
from tests.receiver import RecordingReceiver
from tests.rules.books import T0, Clock, open_book


@pytest.fixture
async def server() -> AsyncIterator[RecordingReceiver]:
    receiver = RecordingReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def book(tmp_path: Path, clock: Clock) -> Iterator[AlertBook]:
    with open_book(tmp_path, clock) as opened:
        yield opened
