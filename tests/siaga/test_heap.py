"""`siaga run` takes start-up's objects out of the collector's passes before it starts
(`settle_heap`; tests/integration/test_json_log.py sees it happen in a real process)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

import siaga.app
from siaga.app import SETTLED_GC_THRESHOLDS, settle_heap


@pytest.fixture
def restored() -> Iterator[None]:
    """This test process's collector as it was: unfrozen, with its own thresholds."""
    gc.unfreeze()
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def tracked(target: object) -> bool:
    """Whether a collection would walk `target` (the frozen generation is not listed)."""
    return any(candidate is target for candidate in gc.get_objects())


def test_start_ups_objects_are_frozen_and_young_ones_collected_less_often(
        restored: None) -> None:
    module_namespace = vars(sys.modules["siaga.app"])
    assert tracked(module_namespace) and tracked(siaga.app.Service)
    assert gc.get_threshold() != SETTLED_GC_THRESHOLDS
    settle_heap()
    assert not tracked(module_namespace) and not tracked(siaga.app.Service)
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == SETTLED_GC_THRESHOLDS
    later: list[object] = [[]]
    assert tracked(later)  # what the service makes from now on is collected as before
