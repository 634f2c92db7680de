"""Group commit of Redis script calls (mailmoat_platform.redisbatch) on the real Redis."""

from __future__ import annotations

import asyncio
import os

import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.models import TraceEvent
from mailmoat_platform.redisbatch import ScriptBatcher
from mailmoat_platform.redisclient import ConnectionError as RedisConnectionError
from mailmoat_platform.redisclient import ResponseError
from mailmoat_records.trace import TraceStore
from tests.support.infra import free_port

pytestmark = pytest.mark.integration

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_ON_ZERO = "if ARGV[1] == '0' then return redis.error_reply('zero') end return ARGV[1]"


async def test_concurrent_calls_share_pipelines_and_each_gets_its_reply(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    try:
        # A script text no server has seen: the first pipeline meets NOSCRIPT and loads it.
        script = f"{INCR} -- {os.urandom(8).hex()}"
        batcher = ScriptBatcher(lambda: client)
        replies = await asyncio.gather(*(batcher.call(script, ["batch:n"], [1]) for _ in range(50)))
        assert sorted(replies) == list(range(1, 51))
        assert batcher.calls == 50 and batcher.batches < 50
        assert int(await client.get("batch:n")) == 50, "no call written twice after loading the script"
        alone = await batcher.call(script, ["batch:n"], [5])
        assert alone == 55
    finally:
        await client.aclose()


async def test_one_failing_call_does_not_fail_the_others(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    try:
        batcher = ScriptBatcher(lambda: client)
        results = await asyncio.gather(*(batcher.call(FAIL_ON_ZERO, ["k"], [n]) for n in (1, 0, 2)),
                                       return_exceptions=True)
        assert results[0] == b"1" and results[2] == b"2"
        assert isinstance(results[1], ResponseError)
    finally:
        await client.aclose()


async def test_connection_failure_fails_every_call() -> None:
    client = redisclient.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        batcher = ScriptBatcher(lambda: client)
        results = await asyncio.gather(*(batcher.call(INCR, ["k"], [1]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results)
    finally:
        await client.aclose()


async def test_trace_writes_share_round_trips_with_the_other_scripts_of_the_process(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    try:
        batcher = ScriptBatcher(lambda: client)
        trace = TraceStore(client, batch=batcher)
        event = TraceEvent(event="DELIVER", message_id="shared-batch-1", service="egress", recipients=["a@b.test"])
        # Both scripts loaded first, so that the round below is one pipeline.
        await asyncio.gather(trace.record(event.model_copy(update={"message_id": "shared-batch-0"})),
                             batcher.call(INCR, ["batch:shared"], [0]))
        before = batcher.batches
        written, counted = await asyncio.gather(trace.record(event), batcher.call(INCR, ["batch:shared"], [1]))
        assert written is True and counted == 1
        assert batcher.batches == before + 1, "the trace write and the script went out in one pipeline"
        assert [e.event for e in await trace.events("shared-batch-1")] == ["DELIVER"]
    finally:
        await client.delete("batch:shared", "mailmoat:trace:shared-batch-0", "mailmoat:trace:shared-batch-1")
        await client.aclose()
