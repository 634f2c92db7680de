"""Egress delivery locks on the real broker and Redis: a copy whose lock is held elsewhere waits in a
delay queue (no republish loop), and a lock a failed call left on the server does not outlive it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mailmoat_egress.claims import Claims, owner_prefix
from mailmoat_egress.delivery import SessionPool
from mailmoat_egress.service import SERVICE, Egress, dedupe_key, lock_key
from mailmoat_platform import redisclient
from mailmoat_platform.bus import Bus, Publish, stage_queue
from mailmoat_platform.models import Envelope, Route
from mailmoat_platform.runtime import Runtime, Transient
from mailmoat_platform.settings import Settings
from tests.support.sink import SmtpSink
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nTo: a@example.com\r\nMessage-ID: <lock@out.org>\r\n\r\nbody\r\n"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
async def egress(amqp_url: str, redis_url: str, write_policy: Callable[[str], Path]) -> AsyncIterator[Egress]:
    policy = write_policy("organization: {hostname: gw.test}\n")
    settings = Settings(amqp_url=amqp_url, redis_url=redis_url, policy_path=str(policy))
    settings.metrics_ports = {}
    runtime = Runtime(SERVICE, settings)
    await runtime.start()
    egress = Egress(runtime, SessionPool(local_hostname="gw.test"))
    try:
        yield egress
    finally:
        await runtime.shutdown(grace=5)
        await egress.close()


def _envelope(port: int) -> Envelope:
    return Envelope(
        mail_from="s@out.org", rcpt_to=["a@example.com"], itinerary=["routing", "egress"],
        route=Route(name="route:onprem", kind="smarthost", hosts=[f"127.0.0.1:{port}"], tls="none"),
        message_id_header="<lock@out.org>",
    )


def _lock_waits() -> float:
    return REGISTRY.get_sample_value("mailmoat_delivery_lock_waits_total") or 0.0


async def test_copy_whose_lock_is_held_waits_in_the_retry_path(egress: Egress, sink: SmtpSink) -> None:
    """The lock of a consumer that died with 1.8 s left: the copy is handled twice (now, and once the
    lock has lapsed, from the 2 s delay queue), delivered once, never republished in a loop."""
    runtime = egress.runtime
    calls = 0

    async def counted(envelope: Envelope, data: bytes) -> list[Publish]:
        nonlocal calls
        calls += 1
        return await egress.handle(envelope, data)

    await runtime.consume_stage(SERVICE, counted)
    envelope = _envelope(sink.port)
    await runtime.redis.set(lock_key(envelope), "deadhost:1:0", px=1800)
    waits = _lock_waits()
    probe = Bus(runtime.settings.amqp_url)
    await probe.connect()
    try:
        await probe.publish(Publish(stage_queue(SERVICE), envelope, DATA))
        [got] = await asyncio.to_thread(sink.wait_for, 1, 6)
    finally:
        await probe.close()
    assert got.data == DATA
    await asyncio.sleep(0.5)
    assert calls == 2, "once while locked, once when the lock had lapsed"
    assert _lock_waits() - waits == 1
    assert len(sink.messages) == 1
    # The sink has the message before egress has heard the reply; it then records the recipient and
    # releases the lock in one script: wait for the record.
    for _ in range(200):
        if await runtime.redis.smembers(dedupe_key(envelope)):
            break
        await asyncio.sleep(0.05)
    assert not await runtime.redis.exists(lock_key(envelope))


async def test_lock_left_by_a_timed_out_take_is_released(egress: Egress, sink: SmtpSink, redis_url: str) -> None:
    """The take timed out on our side but ran on the server: that lock is released as soon as Redis
    answers again, not after its TTL, and the copy is delivered on the next try."""
    runtime = egress.runtime
    envelope = _envelope(sink.port)
    real = runtime.redis
    with TcpProxy(6379) as proxy:
        runtime.redis = redisclient.from_url(redis_url.replace(":6379/", f":{proxy.port}/"), socket_timeout=0.3)
        try:
            await runtime.redis.ping()  # connected (and the database selected) before the delay
            proxy.delay(0.6)  # the call reaches Redis after our side gave up on it
            with pytest.raises(Transient, match="dedupe store unavailable"):
                await egress.handle(envelope, DATA)
            proxy.delay(0)
            for _ in range(40):
                if egress.claims.orphans_released:
                    break
                await asyncio.sleep(0.05)
        finally:
            await runtime.redis.aclose()
            runtime.redis = real
    assert egress.claims.orphans_released == 1, "the take had run on the server, and its lock was released"
    assert egress.claims.ttl > 2, "released long before it would have lapsed"
    assert not await real.exists(lock_key(envelope))
    assert await egress.handle(envelope, DATA) == []
    assert len(sink.messages) == 1


async def test_heartbeat_keeps_a_short_lock_and_a_dead_owners_lapses(egress: Egress) -> None:
    """Locks live a short TTL: a live owner's heartbeat keeps extending it, a dead owner's lapses."""
    runtime = egress.runtime
    envelope = _envelope(25)
    alive = Claims(runtime.scripts, lambda: runtime.redis, ttl=0.8)
    dead = Claims(runtime.scripts, lambda: runtime.redis, ttl=0.8)
    other = _envelope(25)
    claim = await alive.take(envelope)
    await dead.take(other)
    await dead.close()  # its heartbeat stops, as when the process is killed
    await asyncio.sleep(2.0)
    assert 0 < await runtime.redis.pttl(lock_key(envelope)) <= 800
    assert await runtime.redis.get(lock_key(envelope)) == claim.token.encode()
    assert not await runtime.redis.exists(lock_key(other))
    assert not claim.lost
    await alive.release(claim)
    await alive.close()
    assert not await runtime.redis.exists(lock_key(envelope))


async def test_copy_sent_again_carries_the_same_message_id(egress: Egress, sink: SmtpSink) -> None:
    """RFC 1047's window: the next hop accepted, the record of it was lost (a crash right after the
    250). The copy is sent again byte for byte, so with the same Message-ID: the next hop's duplicate
    suppression (Message-ID based, as Exchange's and Cyrus's) can drop it."""
    envelope = _envelope(sink.port)
    assert await egress.handle(envelope, DATA) == []
    await egress.runtime.redis.delete(dedupe_key(envelope))  # the record a crash would have lost
    assert await egress.handle(envelope, DATA) == []
    first, second = sink.messages
    assert first.data == second.data == DATA
    assert b"Message-ID: <lock@out.org>" in second.data


async def test_lock_of_a_process_that_no_longer_runs_is_taken_over_at_once(egress: Egress, sink: SmtpSink) -> None:
    """egress killed and restarted on the same host: its locks are taken over, not waited out."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    host, _, namespace = owner_prefix().split(":")
    envelope = _envelope(sink.port)
    await egress.runtime.redis.set(lock_key(envelope), f"{host}:{proc.pid}:{namespace}:0badc0de", px=10_000)
    waits = _lock_waits()
    assert await egress.handle(envelope, DATA) == []
    assert len(sink.messages) == 1 and _lock_waits() == waits
    assert not await egress.runtime.redis.exists(lock_key(envelope))
