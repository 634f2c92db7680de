"""The recorder against the real RabbitMQ and PostgreSQL: stages' trace records through mailmoat.trace into
the trace tables; a redelivered batch written once; PostgreSQL unreachable -> nothing acked, nothing lost,
caught up once it returns."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import psycopg
import pytest

from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_recorder import service as recorder_service
from mailmoat_recorder.service import Recorder
from mailmoat_records import db
from mailmoat_records.trace import TRACE_QUEUE
from mailmoat_records.tracebus import TracePublisher
from mailmoat_records.tracedb import TraceReader
from tests.support.infra import REDIS_TEST_URL
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
def settings(amqp_url: str, migrated: str, tmp_path: Path) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text("{}\n")
    return Settings(amqp_url=amqp_url, redis_url=REDIS_TEST_URL, database_url=migrated, records="postgresql",
                    policy_path=str(policy), metrics_ports={}, log_format="text")


@pytest.fixture
async def stage(settings: Settings) -> AsyncIterator[Runtime]:
    """A stage's runtime with records = postgresql (its trace goes to mailmoat.trace)."""
    runtime = Runtime("routing", settings)
    await runtime.start()
    yield runtime
    await runtime.shutdown(grace=1)


async def _until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Wait (bounded) until ``check()`` (a bool, or an awaitable of one) is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def _stored(url: str, message_ids: list[str]) -> int:
    """Events of these messages in the table (asynchronously: the recorder shares this event loop)."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT count(*) FROM trace_events WHERE message_id = ANY(%s)", (message_ids,))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _stored_is(url: str, message_ids: list[str], count: int) -> bool:
    return await _stored(url, message_ids) == count


async def _depth(amqp_url: str) -> tuple[int, int]:
    """(messages ready, consumers) of mailmoat.trace."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        result = (await channel.declare_queue(TRACE_QUEUE, passive=True)).declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    finally:
        await connection.close()


async def _publish(stage: Runtime, count: int, events: int = 3) -> list[str]:
    """``count`` messages' records (RECEIVE with look-up values, then more events), each its own publish."""
    assert isinstance(stage.trace, TracePublisher)
    ids = []
    for n in range(count):
        mid = new_message_id()
        ids.append(mid)
        ok = await stage.trace.record(
            [TraceEvent(event="RECEIVE", message_id=mid, service="ingress", recipients=[f"r{n}@example.org"],
                        detail="from 192.0.2.9")]
            + [TraceEvent(event="AGENTINFO", message_id=mid, service="routing", detail=f"step {i}")
               for i in range(events - 1)],
            sender=f"Sender{n}@Example.COM", recipients=[f"r{n}@example.org"], message_id_header=f"<m{n}@x>",
            client_ip="192.0.2.9")
        assert ok
    return ids


async def _stop(recorder: Recorder) -> None:
    await recorder.runtime.shutdown(grace=1)


async def test_stage_trace_goes_through_the_queue_into_postgresql(settings: Settings, stage: Runtime) -> None:
    ids = await _publish(stage, 5)
    recorder, _ = await recorder_service.start(settings)
    try:
        await _until(lambda: _stored_is(settings.database_url, ids, 15), "all 15 events stored")
        await _until(lambda: recorder.runtime.ready(), "recorder ready")
        async with db.open_pool(settings.database_url, max_size=1) as pool:
            reader = TraceReader(pool)
            page = await reader.find("sender3@example.com")
            assert [m.message_id for m in page.messages] == [ids[3]]
            assert page.messages[0].recipients == ["r3@example.org"] and page.messages[0].client_ip == "192.0.2.9"
            events = await reader.events(ids[3])
            assert [e.event for e in events] == ["RECEIVE", "AGENTINFO", "AGENTINFO"]
        # The rows are visible once PostgreSQL has committed, a moment before the recorder hears so and
        # takes the batch out of its inbox.
        await _until(lambda: len(recorder.inbox) == 0, "the written batches out of the inbox")
        assert recorder.inbox.lag(time.time()) == 0.0 and len(recorder.inbox) == 0
    finally:
        await _stop(recorder)
    assert (await _depth(settings.amqp_url))[0] == 0  # every delivery acked


async def test_a_batch_redelivered_after_its_commit_is_written_once(settings: Settings, stage: Runtime) -> None:
    first, _ = await recorder_service.start(settings)
    first.runtime.acks.ack = lambda message: None  # type: ignore[method-assign]  # dies between commit and ack
    ids = await _publish(stage, 4, events=2)
    try:
        await _until(lambda: _stored_is(settings.database_url, ids, 8), "first write")
    finally:
        await _stop(first)  # its channel closes: the broker returns the unacked deliveries to the queue
    assert (await _depth(settings.amqp_url))[0] >= 1
    second, _ = await recorder_service.start(settings)
    try:
        await _until(lambda: second.committed >= 1 and len(second.inbox) == 0, "rewritten")
        await _until(lambda: _ready_zero(settings.amqp_url), "queue empty")
        assert await _stored(settings.database_url, ids) == 8  # nothing twice
    finally:
        await _stop(second)
    assert (await _depth(settings.amqp_url))[0] == 0


async def _ready_zero(amqp_url: str) -> bool:
    return (await _depth(amqp_url))[0] == 0


async def test_postgresql_unreachable_holds_everything_then_catches_up(settings: Settings, stage: Runtime) -> None:
    parts = urlsplit(settings.database_url)
    with TcpProxy(parts.port or 5432, parts.hostname or "127.0.0.1") as proxy:
        proxied = parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}").geturl()
        settings.database_url = proxied
        recorder, _ = await recorder_service.start(settings)
        try:
            await _until(lambda: recorder.runtime.ready(), "recorder ready")
            proxy.cut()
            ids = await _publish(stage, 6, events=2)  # the stage's publishes never wait on PostgreSQL
            await _until(lambda: len(recorder.inbox) == 6 and recorder.failures > 0,
                         "the recorder holds all six, failing to write")
            await _until(lambda: not recorder.runtime.ready(), "not ready while PostgreSQL is away")
            assert recorder.committed == 0
            assert await _stored(parts.geturl(), ids) == 0
            assert recorder.inbox.lag(time.time()) > 0
            assert (await _depth(settings.amqp_url))[0] == 0  # delivered to the recorder, unacked: held, not lost
            proxy.restore()
            await _until(lambda: _stored_is(parts.geturl(), ids, 12), "caught up", timeout=60)
            await _until(lambda: len(recorder.inbox) == 0, "nothing held")
            await _until(lambda: recorder.runtime.ready(), "ready again")
        finally:
            await _stop(recorder)
    assert (await _depth(settings.amqp_url))[0] == 0  # all acked after the commit: nothing left, nothing lost


async def test_a_body_that_is_not_records_is_dead_lettered(settings: Settings, stage: Runtime) -> None:
    from mailmoat_platform.bus import DEAD_QUEUE
    from mailmoat_records.trace import TRACE_QUEUE_ARGUMENTS

    await stage.bus.declare_queue(TRACE_QUEUE, TRACE_QUEUE_ARGUMENTS)
    await stage.bus.publish_body(TRACE_QUEUE, b"not json")
    ids = await _publish(stage, 1)
    recorder, _ = await recorder_service.start(settings)
    try:
        await _until(lambda: _stored_is(settings.database_url, ids, 3), "the good batch stored")
    finally:
        await _stop(recorder)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        message = await queue.get(timeout=5)
        assert message is not None and message.body == b"not json"
        assert "not a batch of trace records" in message.headers["x-mailmoat-dead-reason"]
        await message.ack()
    finally:
        await connection.close()


async def test_a_stage_acks_its_input_only_after_its_trace_is_confirmed(settings: Settings, stage: Runtime) -> None:
    from mailmoat_platform.bus import Bus, Publish, stage_queue
    from mailmoat_platform.models import Envelope

    assert isinstance(stage.trace, TracePublisher)
    publisher = stage.trace
    confirmed_at_ack: list[int] = []
    ack = stage.acks.ack

    def watched(message: object) -> None:
        confirmed_at_ack.append(publisher.records)  # records whose publish the broker confirmed by now
        ack(message)  # type: ignore[arg-type]

    stage.acks.ack = watched  # type: ignore[method-assign]

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        await publisher.record(TraceEvent(event="AGENTINFO", message_id=envelope.id, service="routing",
                                          detail="seen"))
        return [Publish(stage_queue("egress"), envelope, data)]

    before = (await _depth(settings.amqp_url))[0]
    await stage.consume_stage("routing", handler)
    source = Bus(settings.amqp_url)
    await source.connect()
    try:
        envelope = Envelope(mail_from="s@example.org", rcpt_to=["a@example.com"], itinerary=["routing", "egress"])
        await source.publish(Publish(stage_queue("routing"), envelope, b"Subject: x\r\n\r\n"))
        await _until(lambda: confirmed_at_ack, "the input acked")
    finally:
        await source.close()
    assert confirmed_at_ack == [1]
    assert (await _depth(settings.amqp_url))[0] == before + 1  # the trace batch waits for a recorder
