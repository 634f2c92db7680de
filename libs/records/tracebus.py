"""Trace records onto the bus (``records = postgresql``): group-committed publishes to ``mailmoat.trace``.

``TracePublisher.record`` (the ``trace.TraceSink`` call, as on ``TraceStore``) queues one ``TraceRecord`` and waits
until the message carrying it is confirmed by the broker: a stage that awaits it before acking its
input keeps the order "trace published, then ack" (a crash loses no event of an acked message). The
first record starts a flush on the next turn of the event loop; the flush publishes everything queued
meanwhile, in messages of at most ``max_records`` records, and while those confirms are out new records
queue for the next flush. A busy process therefore sends one message for many records (as many as came
in during one broker round trip) and, with no ``linger``, an idle one adds no delay. The stages'
runtime lingers up to 50 ms (``mailmoat_platform.runtime.TRACE_LINGER``), less once a quarter of its
prefetch is waiting (``flush_at``): several records a message instead of one each when mail trickles in
(each message costs the broker a publish and the recorder a delivery), at the price of up to 50 ms more
before a stage acks its input; mail is not held for it (a stage forwards a message beside its trace
publish, ``Runtime.record``; ingress traces in the background). PostgreSQL is not on this path at all:
the recorder writes what the queue holds, at its own pace.

Mail is never held for the trace: a publish that fails (the broker down or refusing) makes ``record``
return False at once. Its records are kept in memory, up to ``max_waiting``, and published again in the
background after 1, 2, 4 … 30 s until the broker takes them (the recorder writes a record given twice
once: its events are keyed by content); a record that finds the buffer full, or is still waiting when
the process ends, is lost to the trace and counted in ``mailmoat_trace_publish_failures_total``.
The publish itself is injected (``send``), so this module needs no bus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from .trace import TRACE_CONTENT_TYPE, TRACE_QUEUE, TRACE_QUEUE_ARGUMENTS, TraceRecord, TraceSink, encode_batch

log = logging.getLogger(__name__)

MAX_RECORDS = 200
"""Records per message at most (a message of 200 records is some 100 KB of JSON)."""
OLDEST_HEADER = "x-mailmoat-trace-oldest-ms"
"""Header of a trace message: when its oldest record was handed to ``record`` (epoch milliseconds)."""

Send = Callable[[bytes, dict[str, object]], Awaitable[None]]
"""Publishes one message body with headers and returns once the broker confirmed it (raises otherwise)."""

PUBLISHES = Counter("mailmoat_trace_publishes_total", "Messages of trace records published to mailmoat.trace")
RECORDS = Counter("mailmoat_trace_records_published_total", "Trace records published to mailmoat.trace")
FAILURES = Counter("mailmoat_trace_publish_failures_total",
                   "Trace records whose publish to mailmoat.trace failed for good (lost to the trace)")
WAITING = Gauge("mailmoat_trace_records_waiting",
                "Trace records held in memory after a failed publish, to be published again")
MAX_WAITING = 20_000
"""Records held for a later publish at most (some 10 MB of JSON); beyond it they are lost."""
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""Seconds before each new attempt to publish the waiting records (the last repeats)."""


@dataclass
class _Pending:
    record: TraceRecord
    queued: float
    done: asyncio.Future[bool]


def chunks(items: list[_Pending], size: int) -> list[list[_Pending]]:
    """``items`` in runs of at most ``size``, in order."""
    return [items[i:i + size] for i in range(0, len(items), size)]


class BusLike(Protocol):
    """What the publisher needs of ``mailmoat_platform.bus.Bus``."""

    async def declare_queue(self, name: str, arguments: dict[str, Any]) -> str: ...

    async def publish_body(self, queue: str, body: bytes, *, headers: dict[str, Any] | None = None,
                           content_type: str | None = None, timeout: float | None = 30.0) -> None: ...


def bus_sender(bus: BusLike, timeout: float = 10.0) -> Send:
    """A ``Send`` publishing to ``mailmoat.trace`` on ``bus`` (declared on first use), confirmed."""

    async def send(body: bytes, headers: dict[str, object]) -> None:
        await bus.declare_queue(TRACE_QUEUE, TRACE_QUEUE_ARGUMENTS)
        await bus.publish_body(TRACE_QUEUE, body, headers=headers, content_type=TRACE_CONTENT_TYPE, timeout=timeout)

    return send


class TracePublisher(TraceSink):
    """The trace of a process with ``records = postgresql``: records published in batches, confirmed."""

    def __init__(self, send: Send, *, max_records: int = MAX_RECORDS, max_waiting: int = MAX_WAITING,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS, linger: float = 0.0, flush_at: int | None = None):
        """``linger``: seconds a flush waits for more records (0: it goes on the next turn of the event loop);
        ``flush_at``: it waits no longer once this many records are queued (default ``max_records``). A caller
        that holds something per record until it is confirmed (a stage its unacked deliveries) bounds what it
        holds with it."""
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._send = send
        self.max_records = max_records
        self.max_waiting = max_waiting
        self.retry_delays = retry_delays
        self.linger = linger
        self.flush_at = max(1, min(flush_at or max_records, max_records))
        self._full: asyncio.Future[None] | None = None
        """Set while a flush lingers: done once ``flush_at`` records are queued."""
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._waiting: list[tuple[TraceRecord, float]] = []
        """Records whose publish failed, with when each was queued: published again by ``_retry``."""
        self._retrier: asyncio.Task[None] | None = None
        self.failures = 0
        """Records lost to the trace (the waiting buffer full, or given up at the end)."""
        self.batches = 0
        """Messages published (records per message = records / batches)."""
        self.records = 0
        self.retention = 0  # the Redis store's attribute; retention is the recorder's business here

    async def add(self, record: TraceRecord) -> bool:
        """Queue the record and wait until the broker confirmed it; False when its publish failed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._pending.append(_Pending(record, time.time(), done))
        full = self._full
        if full is not None and not full.done() and len(self._pending) >= self.flush_at:
            full.set_result(None)
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await asyncio.shield(done)

    async def drain(self) -> None:
        """Wait until every record queued so far is published (or failed), and try once more to publish
        the records waiting after a failure; those the broker still refuses are counted lost."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._retrier is not None:
            self._retrier.cancel()
            self._retrier = None
        if self._waiting and not await self._publish_waiting():
            self._lose(len(self._waiting), "at the end")
            self._waiting = []
            WAITING.set(0)

    @property
    def waiting(self) -> int:
        """Records held for a later publish."""
        return len(self._waiting)

    def _lose(self, count: int, why: str) -> None:
        self.failures += count
        FAILURES.inc(count)
        log.warning("trace: %d records lost (%s)", count, why)

    def _hold(self, run: list[_Pending]) -> None:
        """Keep the records of a failed publish for ``_retry`` (as many as the buffer has room for)."""
        room = max(0, self.max_waiting - len(self._waiting))
        self._waiting.extend((p.record, p.queued) for p in run[:room])
        if len(run) > room:
            self._lose(len(run) - room, f"{self.max_waiting} already waiting after failed publishes")
        WAITING.set(len(self._waiting))
        if self._waiting and (self._retrier is None or self._retrier.done()):
            self._retrier = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        attempt = 0
        while self._waiting:
            await asyncio.sleep(self.retry_delays[min(attempt, len(self.retry_delays) - 1)])
            attempt += 1
            if await self._publish_waiting():
                log.info("trace: records waiting after failed publishes are published")

    async def _publish_waiting(self) -> bool:
        """Publish the waiting records, run by run; False at the first refusal (the rest keep waiting)."""
        while self._waiting:
            run = self._waiting[: self.max_records]
            headers: dict[str, object] = {OLDEST_HEADER: int(min(q for _, q in run) * 1000)}
            try:
                await self._send(encode_batch(r for r, _ in run), headers)
            except Exception as exc:  # still down: keep them
                log.debug("trace: republish of %d records failed: %s", len(run), exc)
                return False
            del self._waiting[: len(run)]
            WAITING.set(len(self._waiting))
            self.batches += 1
            self.records += len(run)
            PUBLISHES.inc()
            RECORDS.inc(len(run))
        return True

    async def _flush(self) -> None:
        if self.linger > 0 and len(self._pending) < self.flush_at:
            await self._linger()  # one message for what comes meanwhile
        while self._pending:
            batch, self._pending = self._pending, []
            await asyncio.gather(*(self._publish(run) for run in chunks(batch, self.max_records)))

    async def _linger(self) -> None:
        """Wait ``linger`` seconds, or less if ``flush_at`` records are queued meanwhile."""
        loop = asyncio.get_running_loop()
        full = self._full = loop.create_future()
        timer = loop.call_later(self.linger, lambda: full.done() or full.set_result(None))
        try:
            await full
        finally:
            timer.cancel()
            self._full = None

    async def _publish(self, run: list[_Pending]) -> None:
        headers: dict[str, object] = {OLDEST_HEADER: int(min(p.queued for p in run) * 1000)}
        try:
            await self._send(encode_batch(p.record for p in run), headers)
        except Exception as exc:  # broker down, nack, timeout: mail goes on, the records wait for a retry
            log.warning("trace publish of %d records failed: %s: %s", len(run), type(exc).__name__, exc)
            self._hold(run)
            ok = False
        else:
            self.batches += 1
            self.records += len(run)
            PUBLISHES.inc()
            RECORDS.inc(len(run))
            ok = True
        for pending in run:
            if not pending.done.done():
                pending.done.set_result(ok)


__all__ = ["MAX_RECORDS", "OLDEST_HEADER", "BusLike", "Send", "TracePublisher", "bus_sender", "chunks"]
