"""Garbage collection for a long-running service process.

CPython's cyclic collector runs after every 700 net allocations of container objects and walks the
young objects, and now and then all of them: for a stage that allocates a few hundred objects per
message, that is one collection every few messages, and a full one walks the ~80,000 objects of the
imported modules, pydantic's validators and the policy each time (about a tenth of a stage's CPU at
full load, measured in bench/README.md). Per-message objects are freed by reference counting; the
collector is only needed for the few that end up in reference cycles.

``settle`` runs once a service is up: one collection, then everything alive is frozen (moved out of
the collector's sight for good: start-up objects live as long as the process), and the young
generation is collected after ``YOUNG_THRESHOLD`` net allocations instead of 700. Cyclic garbage
still gets collected, in fewer, larger passes. So per-message work must not leave reference cycles:
a collection that finds tens of thousands of objects stops the process for tens of milliseconds.
Every collection's pause is observed in ``mailmoat_gc_pause_seconds`` (``watch``).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 20)

GC_PAUSE = Histogram(
    "mailmoat_gc_pause_seconds",
    "Time the cyclic garbage collector stopped the process, per collection, by generation collected.",
    ["service", "generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
_pauses: list[Any] = []
_started: float | None = None


def _timed(phase: str, info: dict[str, Any]) -> None:
    """A ``gc.callbacks`` hook: the time from a collection's start to its stop."""
    global _started
    if phase == "start":
        _started = time.perf_counter()
    elif _started is not None:
        _pauses[info["generation"]].observe(time.perf_counter() - _started)
        _started = None


def watch(service: str) -> None:
    """Observe every collection's pause from now on, labelled with ``service``. Once per process: a process
    that runs several services keeps the first one's name (a pause stops all of them)."""
    if _timed not in gc.callbacks:
        _pauses[:] = [GC_PAUSE.labels(service, str(generation)) for generation in range(3)]
        gc.callbacks.append(_timed)


def settle(service: str) -> None:
    """Freeze what start-up left alive, collect less often, and watch the pauses (call once, when serving)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    watch(service)
