"""`siaga run` takes start-up's objects out of the full collections once it is ready."""

from __future__ import annotations

import asyncio
import gc

from siaga.app import SETTLED_GC_THRESHOLDS, settle_heap


async def test_start_ups_objects_are_frozen_once_the_service_is_ready() -> None:
    gc.unfreeze()  # whatever an earlier test left; this process's heap is ours to restore
    thresholds = gc.get_threshold()
    ready = asyncio.Event()
    settling = asyncio.create_task(settle_heap(ready))
    try:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert gc.get_freeze_count() == 0, "frozen before the service was ready"
        ready.set()
        await asyncio.wait_for(settling, 10)
        # Every object alive now was alive before the freeze, the modules first of all.
        assert gc.get_freeze_count() > 1000
        assert gc.get_freeze_count() >= len(gc.get_objects()) // 2
        assert gc.get_threshold() == SETTLED_GC_THRESHOLDS != thresholds
    finally:
        settling.cancel()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_a_service_that_stops_before_ready_freezes_nothing() -> None:
    gc.unfreeze()
    settling = asyncio.create_task(settle_heap(asyncio.Event()))
    await asyncio.sleep(0)
    settling.cancel()
    await asyncio.wait([settling])
    assert settling.cancelled()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() != SETTLED_GC_THRESHOLDS
