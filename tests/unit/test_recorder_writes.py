"""The recorder's write loop with a fake database: acks only after a commit, holds and retries while the
database fails or hangs, tells a refused batch's messages apart and dead-letters the bad one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from mailmoat_platform.models import TraceEvent
from mailmoat_recorder import service
from mailmoat_recorder.inbox import Held
from mailmoat_records.trace import TraceRecord, encode_batch
from mailmoat_records.tracedb import WriteResult


class FakeWriter:
    def __init__(self, outcomes: list[Any]):
        self.outcomes = outcomes  # per call: an exception to raise, "hang", or None (commit)
        self.calls: list[list[str]] = []
        self.retention_days = 90
        self.pool: Any = None

    def forget_partitions(self) -> None:
        pass

    async def write(self, records: list[TraceRecord]) -> WriteResult:
        self.calls.append([r.events[0].message_id for r in records])
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome == "hang":
            await asyncio.sleep(3600)
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            outcome(records)
        events = sum(len(r.events) for r in records)
        return WriteResult(events, events, 0)


class FakeRuntime:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.dead: list[tuple[bytes, str]] = []
        self.policy = SimpleNamespace(current=SimpleNamespace(trace=SimpleNamespace(retention_days=30)))
        self.acks = SimpleNamespace(ack=lambda message: self.acked.append(message.name))
        self.bus = SimpleNamespace(publish_raw_dead=self._dead)

    async def _dead(self, body: bytes, reason: str, headers: dict[str, Any]) -> None:
        self.dead.append((body, reason))


def _delivery(name: str) -> SimpleNamespace:
    record = TraceRecord(events=[TraceEvent(event="RECEIVE", message_id=name, service="ingress")])
    return SimpleNamespace(name=name, body=encode_batch([record]), headers={})


def _recorder(outcomes: list[Any], monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[service.Recorder, FakeRuntime]:
    monkeypatch.setattr(service, "backoff", lambda attempt: 0.0)
    runtime = FakeRuntime()
    recorder = service.Recorder(runtime, pool=None, **kw)  # type: ignore[arg-type]
    recorder.writer = FakeWriter(outcomes)  # type: ignore[assignment]
    return recorder, runtime


async def _deliver(recorder: service.Recorder, *names: str) -> list[Held]:
    for name in names:
        await recorder.on_delivery(_delivery(name))  # type: ignore[arg-type]
    return recorder.inbox.take(recorder.max_records)


async def _until(done: Callable[[], object], turns: int = 2000) -> None:
    """Let the loop run until ``done()`` holds: turns of the loop, not wall time, so that a loaded machine
    (the process descheduled for a while) neither fails the test nor cuts the wait short."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not done after {turns} turns of the loop")


async def _turns(count: int = 200) -> None:
    """Let the loop run ``count`` turns: what is done without a timer is done by then."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_batch_is_acked_after_its_commit_and_retried_while_the_database_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    down = psycopg.OperationalError("connection refused")
    seen: list[list[str]] = []
    recorder, runtime = _recorder([down, down, lambda records: seen.append(list(runtime.acked))], monkeypatch)
    batch = await _deliver(recorder, "A", "B")
    await recorder._write(batch)
    assert recorder.writer.calls == [["A", "B"]] * 3  # type: ignore[attr-defined]
    assert seen == [[]]  # nothing acked before the commit
    assert runtime.acked == ["A", "B"] and len(recorder.inbox) == 0
    assert recorder.failures == 2 and not recorder.failing and recorder.committed == 1
    assert recorder.writer.retention_days == 30  # type: ignore[attr-defined]  # the policy's, per batch


async def test_a_hanging_database_counts_as_failed_and_the_batch_stays_held(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, runtime = _recorder(["hang", "hang"], monkeypatch, write_timeout=0.05)
    batch = await _deliver(recorder, "A")
    task = asyncio.create_task(recorder._write(batch))
    for _ in range(500):  # bounded: the second try starts once the first timed out (0.05 s)
        if len(recorder.writer.calls) >= 2:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert recorder.failing and runtime.acked == [] and len(recorder.inbox) == 1
    await asyncio.wait_for(task, 5)  # the third try commits
    assert runtime.acked == ["A"] and not recorder.failing


async def test_a_missing_table_waits_for_the_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, runtime = _recorder([psycopg.errors.UndefinedTable("relation trace_events does not exist")],
                                  monkeypatch)
    await recorder._write(await _deliver(recorder, "A"))
    assert runtime.acked == ["A"] and runtime.dead == []


async def test_a_refused_batch_is_written_message_by_message_and_the_bad_one_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    refused = psycopg.errors.NumericValueOutOfRange("out of range")
    recorder, runtime = _recorder([refused, None, refused, None], monkeypatch)
    await recorder._write(await _deliver(recorder, "A", "B", "C"))
    assert recorder.writer.calls == [["A", "B", "C"], ["A"], ["B"], ["C"]]  # type: ignore[attr-defined]
    assert sorted(runtime.acked) == ["A", "B", "C"]  # B acked once dead-lettered
    assert [reason for _, reason in runtime.dead] == ["recorder: PostgreSQL refused the batch: "
                                                      "NumericValueOutOfRange: out of range"]
    assert len(recorder.inbox) == 0


async def test_a_body_that_is_not_records_is_dead_lettered_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, runtime = _recorder([], monkeypatch)
    await recorder.on_delivery(SimpleNamespace(name="X", body=b"[{]", headers={}))  # type: ignore[arg-type]
    assert runtime.acked == ["X"] and runtime.dead[0][0] == b"[{]" and len(recorder.inbox) == 0


async def test_lag_uses_the_oldest_record_header(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, _ = _recorder([], monkeypatch)
    recorder.clock = lambda: 1000.0
    delivery = _delivery("A")
    delivery.headers = {"x-mailmoat-trace-oldest-ms": 940_000}
    await recorder.on_delivery(delivery)  # type: ignore[arg-type]
    assert recorder.inbox.lag(1000.0) == 60.0


async def test_an_idle_recorder_waits_the_linger_for_more_deliveries_then_writes_them_in_one_transaction(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, runtime = _recorder([None, None], monkeypatch, max_records=100, linger=0.3)
    loop = asyncio.create_task(recorder.run())
    try:
        await recorder.on_delivery(_delivery("A"))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        await recorder.on_delivery(_delivery("B"))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert recorder.writer.calls == []  # type: ignore[attr-defined]  # A has waited 0.1 s of 0.3
        for _ in range(100):  # bounded: A's linger ends 0.3 s after it arrived
            if runtime.acked:  # after the write's call returned (wait_for runs it as a task of its own)
                break
            await asyncio.sleep(0.02)
        assert recorder.writer.calls == [["A", "B"]]  # type: ignore[attr-defined]
        assert runtime.acked == ["A", "B"]
        for name in [f"M{i}" for i in range(50)]:  # half a batch: written without waiting out the linger
            await recorder.on_delivery(_delivery(name))  # type: ignore[arg-type]
        await _until(lambda: len(recorder.writer.calls) == 2)  # type: ignore[attr-defined]  # turns, not the linger
        assert len(recorder.writer.calls) == 2 and len(recorder.writer.calls[1]) == 50  # type: ignore[attr-defined]
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_the_loop_writes_at_once_without_a_linger_and_a_second_batch_beside_a_slow_one_only_when_half_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No linger: the first delivery is written at once. While that write hangs, a second transaction
    starts only once half a batch waits (larger transactions under load), never more than ``concurrency``."""
    recorder, runtime = _recorder(["hang", None, None], monkeypatch, max_records=4, concurrency=2, linger=0.0)
    loop = asyncio.create_task(recorder.run())
    try:
        await recorder.on_delivery(_delivery("A"))  # type: ignore[arg-type]
        await _until(lambda: recorder.writer.calls)  # type: ignore[attr-defined]
        assert recorder.writer.calls == [["A"]]  # type: ignore[attr-defined]
        await recorder.on_delivery(_delivery("B"))  # type: ignore[arg-type]
        await _turns()
        assert recorder.writer.calls == [["A"]]  # type: ignore[attr-defined]  # one record < half of 4
        await recorder.on_delivery(_delivery("C"))  # type: ignore[arg-type]
        await _until(lambda: runtime.acked)
        assert recorder.writer.calls == [["A"], ["B", "C"]]  # type: ignore[attr-defined]
        assert runtime.acked == ["B", "C"]  # acked after their own commit; A is still being written
        for name in "DEFGH":
            await recorder.on_delivery(_delivery(name))  # type: ignore[arg-type]
        await _until(lambda: len(runtime.acked) > 2)
        await _turns()
        assert recorder.writer.calls[2] == ["D", "E", "F", "G"]  # type: ignore[attr-defined]
        assert "A" not in runtime.acked and len(recorder.inbox) == 2  # A being written, H waiting
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_a_write_waiting_out_its_backoff_goes_at_once_when_the_probe_finds_the_database_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, runtime = _recorder([psycopg.OperationalError("down")], monkeypatch)
    monkeypatch.setattr(service, "backoff", lambda attempt: 3600.0)

    class Answering:
        def connection(self, timeout: float = 0.0) -> Any:
            conn = SimpleNamespace(execute=lambda sql: asyncio.sleep(0))

            class Context:
                async def __aenter__(self) -> Any:
                    return conn

                async def __aexit__(self, *exc: object) -> None:
                    return None

            return Context()

    recorder.pool = Answering()  # type: ignore[assignment]
    task = asyncio.create_task(recorder._write(await _deliver(recorder, "A")))
    await _until(lambda: recorder.failing)
    assert recorder.failing and runtime.acked == []
    await recorder.probe()
    await asyncio.wait_for(task, 2)  # not the hour of its backoff
    assert runtime.acked == ["A"] and not recorder.failing


async def test_once_postgresql_answers_after_an_outage_a_fresh_pool_replaces_the_one_in_reconnection_backoff(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, runtime = _recorder([psycopg.OperationalError("down")], monkeypatch)
    monkeypatch.setattr(service, "backoff", lambda attempt: 3600.0)
    closed: list[str] = []

    class Pool:
        def __init__(self, name: str) -> None:
            self.name = name
            self.conninfo = "postgresql://x"

        async def close(self, timeout: float = 0.0) -> None:
            closed.append(self.name)

    class Conn:
        async def execute(self, query: str) -> None:
            return None

        async def close(self) -> None:
            return None

    async def connect(*args: Any, **kw: Any) -> Conn:
        return Conn()

    async def new_pool() -> Any:
        return Pool("fresh")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    recorder.pool, recorder.new_pool = Pool("stale"), new_pool  # type: ignore[assignment]
    task = asyncio.create_task(recorder._write(await _deliver(recorder, "A")))
    await _until(lambda: recorder.failing)
    await recorder.probe()  # PostgreSQL answers on the probe's own connection
    await asyncio.wait_for(task, 2)
    assert recorder.pool.name == "fresh" and runtime.acked == ["A"]  # type: ignore[attr-defined]
    await _until(lambda: closed)
    assert closed == ["stale"]
