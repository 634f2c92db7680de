"""The recorder: trace records from ``mailmoat.trace`` into PostgreSQL, in batches, acked after commit.

Stages publish their trace records in batches (``mailmoat_records.tracebus``) when ``records =
postgresql``. The recorder consumes them (prefetch ``PREFETCH`` messages, each up to 200 records),
writes what it holds with ``TraceWriter`` (up to ``MAX_RECORDS`` records, one transaction; idempotent,
so a redelivered batch adds nothing) and acks those deliveries once the transaction committed.

PostgreSQL down or slow: the write fails or times out, the deliveries stay held and unacked, and the
write is tried again with backoff (0.5 s doubling to 10 s, cut short when the readiness probe, every 2 s,
finds PostgreSQL answering again) until it succeeds; the broker sends nothing
beyond the prefetch meanwhile, so the rest waits in the queue, nothing is lost and mail flows on
(stages never wait on the recorder). Readiness is false while PostgreSQL does not answer or the last
write failed; the lag (``mailmoat_recorder_lag_seconds``: age of the oldest record held) grows, and the alert
``MailmoatRecorderLagging`` fires. A body that is not a batch of records, or a batch PostgreSQL refuses
(written alone, to tell it from its neighbours), goes to ``mailmoat.dead`` with its reason.

It runs the partition job (``db.maintain``: partitions ahead, whole days past the policy's
``trace.retention_days`` dropped) when it starts and every day after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from mailmoat_platform.bus import Delivery
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_records import db
from mailmoat_records.trace import TRACE_QUEUE, TRACE_QUEUE_ARGUMENTS, decode_batch
from mailmoat_records.tracebus import OLDEST_HEADER
from mailmoat_records.tracedb import TraceWriter

from .inbox import Held, Inbox, backoff, records_of

log = logging.getLogger(__name__)

SERVICE = "recorder"
PREFETCH = 256
"""Messages held unacked at most (each up to 200 records, some 100 KB): under load a stage's message carries a
few records, so this many keep full batches waiting while others are written."""
MAX_RECORDS = 2000
"""Records written in one transaction at most."""
CONCURRENCY = 2
"""Transactions in flight at once (the pool has one connection more, for the readiness probe)."""
LINGER = 0.05
"""Seconds a delivery may wait for others before a write starts with fewer than half a batch: under load
a stage's message carries a few records, and a transaction per delivery or two cost PostgreSQL and the
recorder more than the records themselves; the trace appears that much later, mail never waits on it."""
WRITE_TIMEOUT = 30.0
"""Seconds a batch's transaction may take before it counts as failed (PostgreSQL hanging)."""
POOL_TIMEOUT = 5.0
"""Seconds a write waits for a connection while PostgreSQL is down, before it counts as failed."""
MAINTAIN_EVERY = 86400.0
MAINTAIN_RETRY = 60.0

EVENTS = Counter("mailmoat_recorder_events_written_total",
                 "Trace events the recorder committed, by outcome: new, duplicate (written before: a "
                 "redelivery), expired (past retention, skipped)", ["outcome"])
BATCH_SECONDS = Histogram("mailmoat_recorder_batch_seconds", "Seconds to write one batch (one transaction)",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LAG = Gauge("mailmoat_recorder_lag_seconds",
            "Age of the oldest trace record the recorder holds unwritten (0: nothing held)")
HELD = Gauge("mailmoat_recorder_held_records", "Trace records received and not yet written")
LAST_COMMIT = Gauge("mailmoat_recorder_last_commit_timestamp_seconds", "When the last batch was committed")
FAILURES = Counter("mailmoat_recorder_write_failures_total",
                   "Batch writes that failed: database (down, slow: retried) or refused (dead-lettered)",
                   ["reason"])
MAINTAINED = Counter("mailmoat_recorder_partitions_total", "Day partitions the recorder's daily job changed",
                     ["change"])

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.UndefinedTable, OSError,
             TimeoutError)
"""Failures of the database rather than of the batch: the batch is kept and written again (a missing table:
the schema is not migrated yet, ``mailmoat db upgrade`` runs beside it)."""


class Recorder:
    """Consumes ``mailmoat.trace`` and writes it to PostgreSQL."""

    def __init__(self, runtime: Runtime, pool: AsyncConnectionPool, *, max_records: int = MAX_RECORDS,
                 write_timeout: float = WRITE_TIMEOUT, concurrency: int = CONCURRENCY, clock=time.time,
                 linger: float = LINGER,
                 new_pool: Callable[[], Awaitable[AsyncConnectionPool]] | None = None):
        """``new_pool``: makes an opened pool like ``pool``, to replace it once PostgreSQL answers again after a
        failure (the pool's own reconnection waits ever longer between attempts: 1, 2, 4 ... 64 s)."""
        self.runtime = runtime
        self.pool = pool
        self.new_pool = new_pool
        self.writer = TraceWriter(pool, runtime.policy.current.trace.retention_days)
        self.inbox = Inbox()
        self.max_records = max_records
        self.concurrency = max(1, concurrency)
        self.write_timeout = write_timeout
        self.linger = linger
        self.clock = clock
        self.database_up = False
        """The last write (or probe) reached PostgreSQL."""
        self.failures = 0
        self.failing = False
        """The last write failed for the database's sake (readiness is false until one succeeds)."""
        self.committed = 0
        """Batches written (transactions committed)."""
        self._arrived = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._unreachable = False
        """The last write failed for want of a connection (not a missing table): renew the pool when it answers."""
        self._answers = asyncio.Event()
        """Set by the readiness probe when PostgreSQL answers again: a write waiting out its backoff goes now."""
        LAG.set_function(lambda: self.inbox.lag(self.clock()))
        HELD.set_function(self.inbox.held_records)

    # --- receiving ------------------------------------------------------------------------------

    async def on_delivery(self, message: Delivery) -> None:
        """Hold a delivery's records for the writer (a body that is not records: dead-lettered)."""
        try:
            records = decode_batch(message.body)
        except ValueError as exc:
            await self._dead(message, f"{SERVICE}: not a batch of trace records: {str(exc)[:300]}")
            return
        self.inbox.add(Held(message, records, self._since(message)))
        self._arrived.set()

    def _since(self, message: Delivery) -> float:
        """When the delivery's oldest record was handed to the trace (its publish time if not said)."""
        for key in (OLDEST_HEADER, "x-mailmoat-published-ms"):
            value = message.headers.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value / 1000
        return self.clock()

    async def _dead(self, message: Delivery, reason: str) -> None:
        log.error("dead-lettering a trace batch: %s", reason)
        await self.runtime.bus.publish_raw_dead(message.body, reason, dict(message.headers))
        self.runtime.acks.ack(message)

    # --- writing --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write what is held, batch after batch, until cancelled.

        Up to ``concurrency`` transactions at once: while one is in PostgreSQL (its rows sent, waiting for
        the commit) the next batch's rows are made here, so the recorder's Python and PostgreSQL work at
        the same time. With none running, a write starts once half a batch waits or the oldest waiting
        delivery has waited ``linger`` seconds; beside a running one only when half a batch waits, so that
        under load transactions are large (few commits)."""
        running: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]
            self._arrived.set()

        try:
            while True:
                if failed:
                    raise failed[0]
                waiting = self.inbox.records
                if not self.inbox.waiting or (running and (len(running) >= self.concurrency
                                                           or waiting < self.max_records // 2)):
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                waited = self.inbox.waited(time.monotonic())
                if not running and waiting < self.max_records // 2 and waited < self.linger:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):  # more may come meanwhile: one transaction for all
                        await asyncio.wait_for(self._arrived.wait(), self.linger - waited)
                    continue
                task = asyncio.create_task(self._write(self.inbox.take(self.max_records)))
                running.add(task)
                task.add_done_callback(finished)
                await asyncio.sleep(0)  # let it make its rows before the next batch is looked at
        finally:
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _write(self, batch: list[Held]) -> None:
        """Write ``batch`` in one transaction and ack it; on a database failure hold it and try again
        (backoff); a batch PostgreSQL refuses is written delivery by delivery, the refused ones
        dead-lettered."""
        attempt = 0
        while True:
            try:
                await self._commit(batch)
                return
            except TRANSIENT as exc:
                attempt += 1
                self.failures += 1
                FAILURES.labels("database").inc()
                if self.database_up or attempt == 1:
                    log.warning("trace batch of %d records not written (%s: %s); holding it and trying again",
                                len(records_of(batch)), type(exc).__name__, exc)
                self.database_up = False
                self.failing = True
                self._unreachable = not isinstance(exc, psycopg.errors.UndefinedTable)
                self._answers.clear()
                with contextlib.suppress(TimeoutError):  # the backoff, cut short once the probe is answered
                    await asyncio.wait_for(self._answers.wait(), backoff(attempt))
            except psycopg.Error as exc:
                FAILURES.labels("refused").inc()
                if len(batch) == 1:
                    self.inbox.done(batch)
                    await self._dead(batch[0].message, f"{SERVICE}: PostgreSQL refused the batch: "
                                                       f"{type(exc).__name__}: {str(exc)[:300]}")
                    return
                log.warning("PostgreSQL refused a trace batch (%s); writing its %d messages one by one",
                            type(exc).__name__, len(batch))
                for held in batch:
                    await self._write([held])
                return

    async def _commit(self, batch: list[Held]) -> None:
        self.writer.retention_days = self.runtime.policy.current.trace.retention_days
        started = time.perf_counter()
        result = await asyncio.wait_for(self.writer.write(records_of(batch)), self.write_timeout)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        LAST_COMMIT.set(self.clock())
        if not self.database_up:
            log.info("PostgreSQL answers: trace batches written again")
        self.database_up = True
        self.failing = False
        self.committed += 1
        EVENTS.labels("new").inc(result.added)
        EVENTS.labels("expired").inc(result.expired)
        EVENTS.labels("duplicate").inc(max(0, result.given - result.added - result.expired))
        for held in batch:
            self.runtime.acks.ack(held.message)
        self.inbox.done(batch)

    # --- the daily partition job ----------------------------------------------------------------

    async def maintain_forever(self) -> None:
        """``db.maintain`` now and every day (every minute until it succeeds)."""
        while True:
            try:
                created, dropped = await self.maintain()
                log.info("partitions: %d created, %d dropped", len(created), len(dropped))
                await asyncio.sleep(MAINTAIN_EVERY)
            except (*TRANSIENT, psycopg.Error) as exc:
                log.warning("partition job failed (%s: %s); again in %.0f s", type(exc).__name__, exc, MAINTAIN_RETRY)
                await asyncio.sleep(MAINTAIN_RETRY)

    async def maintain(self) -> tuple[list[str], list[str]]:
        async with self.pool.connection() as conn:
            created, dropped = await db.maintain(conn, self.runtime.policy.current.trace.retention_days)
        MAINTAINED.labels("created").inc(len(created))
        MAINTAINED.labels("dropped").inc(len(dropped))
        self.writer.forget_partitions()  # some it knew of may be gone
        return created, dropped

    async def probe(self) -> None:
        """Readiness: a connection of the pool answers. While writes fail, PostgreSQL is asked on a connection of
        the probe's own, and once it answers the pool is replaced by a fresh one and the waiting write goes."""
        if self.failing and self._unreachable and self.new_pool is not None:
            conn = await psycopg.AsyncConnection.connect(self.pool.conninfo, connect_timeout=2, autocommit=True)
            try:
                await conn.execute("SELECT 1")
            finally:
                await conn.close()
            if self.failing and self._unreachable:
                self._unreachable = False  # one new pool per outage
                await self._renew_pool(self.new_pool)
                self._answers.set()
            return
        async with self.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
        if self.failing:
            self._answers.set()

    async def _renew_pool(self, new_pool: Callable[[], Awaitable[AsyncConnectionPool]]) -> None:
        old, self.pool = self.pool, await new_pool()
        self.writer.pool = self.pool
        self.writer.forget_partitions()

        async def close() -> None:  # a write still on one of its connections finishes first
            with contextlib.suppress(Exception):
                await old.close(timeout=self.write_timeout)

        self._closing = asyncio.create_task(close())


async def start(settings: Settings, worker: int = 0, *, max_records: int = MAX_RECORDS,
                prefetch: int = PREFETCH, concurrency: int = CONCURRENCY) -> tuple[Recorder, list[asyncio.Task[None]]]:
    """A started recorder (HTTP, bus, pool, consumer, writer and partition job) and its tasks."""
    runtime = Runtime(SERVICE, settings, worker=worker, prefetch=prefetch)

    async def new_pool() -> AsyncConnectionPool:
        pool = db.open_pool(settings.database_url, min_size=1, max_size=concurrency + 1, name=SERVICE,
                            timeout=POOL_TIMEOUT)
        await pool.open(wait=False)
        return pool

    recorder = Recorder(runtime, await new_pool(), max_records=max_records, concurrency=concurrency,
                        new_pool=new_pool)
    runtime.add_dependency("postgresql", recorder.probe, interval=2.0, timeout=3.0)
    runtime.add_ready_check(lambda: runtime.bus.consuming([TRACE_QUEUE]) and not recorder.failing)
    await runtime.start()
    tasks = [asyncio.create_task(recorder.run()), asyncio.create_task(recorder.maintain_forever())]

    async def stop() -> None:
        # Deliveries not written yet stay unacked: the broker delivers them again to the next recorder.
        with contextlib.suppress(Exception):
            await runtime.bus.stop_consuming()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runtime.acks.drain()
        await recorder.pool.close()

    runtime.on_stop(stop)
    await runtime.bus.declare_queue(TRACE_QUEUE, TRACE_QUEUE_ARGUMENTS)
    await runtime.bus.consume(TRACE_QUEUE, recorder.on_delivery)
    return recorder, tasks


async def main(settings: Settings, worker: int = 0) -> None:
    recorder, _ = await start(settings, worker)
    await recorder.runtime.serve_forever()
