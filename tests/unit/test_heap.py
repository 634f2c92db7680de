"""The service heap settings: start-up objects frozen, the young generation collected less often,
cyclic garbage made later still collected."""

from __future__ import annotations

import gc
import weakref

from mailmoat_platform import heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settle_freezes_start_up_objects_and_still_collects_later_cycles() -> None:
    thresholds = gc.get_threshold()
    try:
        survivor = _Node()
        heap.settle("unit-test")
        assert gc.get_freeze_count() > 0 and heap._timed in gc.callbacks
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *heap.OLDER_THRESHOLDS)
        assert not any(o is survivor for o in gc.get_objects()), "a start-up object is still scanned"
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle only the collector can free
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if heap._timed in gc.callbacks:
            gc.callbacks.remove(heap._timed)
