"""What the recorder holds: deliveries of trace records received and not yet written (pure, no I/O).

Each delivery of ``mailmoat.trace`` carries a batch of records (``tracebus``). The recorder keeps them
here until a transaction has written them; ``take`` hands the writer whole deliveries, oldest first, up
to a number of records (a delivery is never split: its ack covers all of its records). The lag is the
age of the oldest record held, whether it waits here or is being written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mailmoat_records.trace import TraceRecord


@dataclass
class Held:
    """One delivery: its records, when its oldest record was handed to the trace (epoch seconds)."""

    message: Any
    """The bus delivery (acked once the records are written)."""
    records: list[TraceRecord]
    since: float
    events: int = field(init=False)
    arrived: float = field(default_factory=time.monotonic)
    """When the recorder received it (this host's monotonic clock)."""

    def __post_init__(self) -> None:
        self.events = sum(len(r.events) for r in self.records)


class Inbox:
    """Deliveries waiting to be written, and those being written."""

    def __init__(self) -> None:
        self.waiting: list[Held] = []
        self.writing: list[Held] = []
        self._records = 0

    def add(self, held: Held) -> None:
        self.waiting.append(held)
        self._records += len(held.records)

    @property
    def records(self) -> int:
        """Records waiting (not being written)."""
        return self._records

    def waited(self, now: float) -> float:
        """Seconds the oldest waiting delivery has been here (monotonic ``now``); 0 when none waits."""
        return max(0.0, now - self.waiting[0].arrived) if self.waiting else 0.0

    def take(self, max_records: int) -> list[Held]:
        """Whole deliveries from the oldest, at least one, until ``max_records`` would be exceeded; they
        count as being written until ``done``."""
        taken: list[Held] = []
        count = 0
        while self.waiting and (not taken or count + len(self.waiting[0].records) <= max_records):
            held = self.waiting.pop(0)
            taken.append(held)
            count += len(held.records)
        self._records -= count
        self.writing.extend(taken)
        return taken

    def done(self, held: Iterable[Held]) -> None:
        """These deliveries are written (or dead-lettered): no longer held."""
        gone = {id(h) for h in held}
        self.writing = [h for h in self.writing if id(h) not in gone]

    def __len__(self) -> int:
        return len(self.waiting) + len(self.writing)

    def held_records(self) -> int:
        return sum(len(h.records) for h in (*self.waiting, *self.writing))

    def lag(self, now: float) -> float:
        """Seconds since the oldest record held was handed to the trace; 0 when nothing is held."""
        times = [h.since for h in (*self.waiting, *self.writing)]
        return max(0.0, now - min(times)) if times else 0.0


def backoff(attempt: int, first: float = 0.5, cap: float = 10.0) -> float:
    """Seconds before write attempt ``attempt`` + 1 after ``attempt`` failures in a row: 0.5, 1, 2 ... 10."""
    return min(cap, first * 2 ** max(0, attempt - 1)) if attempt > 0 else 0.0


def records_of(held: Iterable[Held]) -> list[TraceRecord]:
    return [record for h in held for record in h.records]


__all__ = ["Held", "Inbox", "backoff", "records_of"]
