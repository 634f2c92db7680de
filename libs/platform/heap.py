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
still gets collected, in fewer, larger passes.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 20)


def settle() -> None:
    """Freeze what start-up left alive and collect less often (call once, when serving)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
