"""Fixtures of the rules tests: the webhook receiver, and an alert book on a set clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rules.alertbook import AlertBook
from tests.receiver import RecordingReceiver
from tests.rules.books import T0, Clock, open_book


@pytest.fixture
def server(receiver: RecordingReceiver) -> RecordingReceiver:
    """The rules tests' name for the real webhook receiver of tests/conftest.py."""
    return receiver


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def book(tmp_path: Path, clock: Clock) -> Iterator[AlertBook]:
    with open_book(tmp_path, clock) as opened:
        yield opened
