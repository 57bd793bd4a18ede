"""Fixtures of the rules tests: a real webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.receiver import RecordingReceiver


@pytest.fixture
async def server() -> AsyncIterator[RecordingReceiver]:
    receiver = RecordingReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()
