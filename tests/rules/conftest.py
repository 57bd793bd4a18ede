"""Fixtures of the rules tests: the bundled catalog and rules, the webhook receiver, and an
alert book on a set clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.registry import Registry, bundled_catalog_path, load_catalog
from rules.alertbook import AlertBook
from rules.config import RulesFile, load_rules
from tests.receiver import RecordingReceiver
from tests.rules.books import DEFAULT_RULES, T0, Clock, open_book


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The bundled Jakarta catalog."""
    return load_catalog(bundled_catalog_path())


@pytest.fixture(scope="module")
def rules_file(registry: Registry) -> RulesFile:
    """The bundled rules on the bundled catalog."""
    return load_rules(DEFAULT_RULES, registry)


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
