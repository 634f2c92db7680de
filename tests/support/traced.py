"""A message's trace in Redis (``records = redis``), waited for.

What a test can see of a stage's work comes before that stage's trace is stored: a filter stage and
routing write their trace beside the publish to the next stage (``Runtime.record``), the runtime records
``DEADLETTER`` after the dead-letter publish. A test that saw the message go on reads the trace once it
is there (bounded), then asserts on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mailmoat_platform.models import TraceEvent
from mailmoat_records.trace import TraceStore


async def wait_traced(trace: TraceStore, message_id: str, until: str | Callable[[list[TraceEvent]], bool],
                      timeout: float = 10.0) -> list[TraceEvent]:
    """The trace events of ``message_id`` once ``until`` holds for them: an event of that name, or a
    predicate of the events. AssertionError, with the events found, after ``timeout`` seconds."""

    def done(events: list[TraceEvent]) -> bool:
        if isinstance(until, str):
            return any(e.event == until for e in events)
        return until(events)

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        events = await trace.events(message_id)
        if done(events):
            return events
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"the trace of {message_id} not there within {timeout}s: "
                                 f"{[e.event for e in events]}")
        await asyncio.sleep(0.05)
