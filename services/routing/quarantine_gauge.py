"""The quarantine's size on /metrics: messages and bytes held, by reason.

Read from the counts the quarantine store keeps in Redis (two hash reads, expired holds pruned
first), or in PostgreSQL from one grouped count (expired holds deleted first: this loop is the
quarantine's expiry job as well), by the routing service only: every ``INTERVAL`` seconds, and at
once after this process held a message. Every routing replica reports the same totals: aggregate
with ``max``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Gauge

from mailmoat_records.quarantine import HeldStore

log = logging.getLogger(__name__)

INTERVAL = 30.0
"""Seconds between two reads of the counts (deletes, releases by the command line, expiry)."""

MESSAGES = Gauge("mailmoat_quarantine_messages",
                 "Messages held in the quarantine, by reason (every routing replica reports the same totals).",
                 ["reason"], multiprocess_mode="max")
BYTES = Gauge("mailmoat_quarantine_bytes",
              "Bytes of the messages held in the quarantine, by reason (every routing replica reports the "
              "same totals).", ["reason"], multiprocess_mode="max")


class QuarantineGauge:
    """Keeps the gauges at the store's totals."""

    def __init__(self, store: HeldStore, interval: float = INTERVAL):
        self.store = store
        self.interval = interval
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """This process held a message: read the counts now rather than at the next interval."""
        self._changed.set()

    async def refresh(self) -> None:
        for reason, (messages, size) in (await self.store.totals()).items():
            MESSAGES.labels(reason).set(messages)
            BYTES.labels(reason).set(size)

    async def run_forever(self) -> None:
        while True:
            self._changed.clear()
            try:
                await self.refresh()
            except Exception as exc:  # Redis or PostgreSQL down: the gauges keep their last values until it answers
                log.warning("could not read the quarantine's size: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.interval)
