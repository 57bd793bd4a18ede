"""Fixtures of the application's tests: the operator API over real stores (see apirig.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.siaga.apirig import Api, World, open_world, running_api


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path) as opened:
        yield opened


@pytest.fixture
async def api(world: World) -> AsyncIterator[Api]:
    async with running_api(world) as running:
        yield running
