"""Every collection of the cyclic garbage collector is observed in ``mailmoat_gc_pause_seconds``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from mailmoat_platform import heap

SERVICE = "unit-test"


def _sample(name: str, generation: int) -> float:
    labels = {"service": SERVICE, "generation": str(generation)}
    return REGISTRY.get_sample_value(f"mailmoat_gc_pause_seconds_{name}", labels) or 0.0


def _count(generation: int) -> float:
    return _sample("count", generation)


def _total(generation: int) -> float:
    return _sample("sum", generation)


def _unwatch() -> None:
    if heap._timed in gc.callbacks:
        gc.callbacks.remove(heap._timed)


@pytest.fixture(autouse=True)
def unwatched() -> Iterator[None]:
    """Each test starts and ends with the process's collector not watched."""
    _unwatch()
    yield
    _unwatch()


def test_each_collection_is_observed_once_by_its_generation() -> None:
    heap.watch(SERVICE)
    heap.watch("another")  # a second call adds no second hook and keeps the first name
    assert gc.callbacks.count(heap._timed) == 1
    gc.disable()  # only the collections asked for below
    try:
        before = [_count(g) for g in range(3)]
        total = _total(2)
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        gc.enable()
    assert [_count(g) for g in range(3)] == [before[0] + 1, before[1], before[2] + 2]
    assert _total(2) > total  # a real duration, however short


def test_a_stop_without_its_start_is_not_observed() -> None:
    heap.watch(SERVICE)
    gc.disable()  # no collection of the test's own between the calls below
    try:
        count = _count(1)
        heap._started = None
        heap._timed("stop", {"generation": 1, "collected": 0, "uncollectable": 0})
        assert _count(1) == count
    finally:
        gc.enable()
