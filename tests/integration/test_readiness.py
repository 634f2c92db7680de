"""Readiness that tells the truth, over HTTP against the real broker and Redis: a stage is not ready
while a dependency it needs hangs (egress and Redis, through a proxy) or while a delivery is held
without an outcome longer than the stall bound, and ``mailmoat_oldest_unacked_seconds`` shows it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from mailmoat_egress.delivery import SessionPool
from mailmoat_egress.service import SERVICE, Egress
from mailmoat_platform.bus import Bus, Publish, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

BOUND = 5.0
"""Seconds within which readiness must follow what happened."""


def _settings(amqp_url: str, redis_url: str, policy: Path) -> Settings:
    settings = Settings(amqp_url=amqp_url, redis_url=redis_url, policy_path=str(policy), log_format="text")
    settings.metrics_ports = {}
    return settings


async def _get(runtime: Runtime, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{runtime.http_port}{path}", timeout=aiohttp.ClientTimeout(total=2)
    ) as response:
        return response.status, await response.text()


async def _until_status(runtime: Runtime, status: int, within: float = BOUND) -> float:
    """Seconds until /readyz answers ``status``; AssertionError after ``within``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < within:
        if (await _get(runtime, "/readyz"))[0] == status:
            return loop.time() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz did not answer {status} within {within}s")


async def _oldest_unacked(runtime: Runtime) -> float:
    _, text = await _get(runtime, "/metrics")
    match = re.search(rf'^mailmoat_oldest_unacked_seconds{{service="{runtime.service}"}} (\S+)$', text, re.M)
    assert match is not None, "no mailmoat_oldest_unacked_seconds series"
    return float(match.group(1))


@pytest.fixture
async def hung_redis_egress(amqp_url: str, redis_url: str,
                            write_policy: Callable[[str], Path]) -> AsyncIterator[tuple[Runtime, TcpProxy]]:
    target = urlsplit(redis_url)
    with TcpProxy(target.port or 6379) as proxy:
        proxied = f"redis://127.0.0.1:{proxy.port}{target.path}"
        runtime = Runtime(SERVICE, _settings(amqp_url, proxied, write_policy("organization: {hostname: gw.test}\n")))
        await runtime.start()
        egress = Egress(runtime, SessionPool(local_hostname="gw.test"))
        await runtime.consume_stage(SERVICE, egress.handle)
        try:
            yield runtime, proxy
        finally:
            proxy.restore()
            await runtime.shutdown(grace=2)
            await egress.close()


async def test_egress_is_not_ready_while_redis_hangs_and_ready_again_after(hung_redis_egress) -> None:
    runtime, proxy = hung_redis_egress
    await _until_status(runtime, 200)
    proxy.delay(3600)  # Redis accepts and never answers
    took = await _until_status(runtime, 503)
    assert (await _get(runtime, "/healthz"))[0] == 200  # alive: nothing to restart, only to wait for
    proxy.restore()
    back = await _until_status(runtime, 200)
    print(f"not ready {took:.1f}s after Redis hung, ready {back:.1f}s after it answered again")


async def test_egress_is_not_ready_while_redis_refuses(hung_redis_egress) -> None:
    runtime, proxy = hung_redis_egress
    await _until_status(runtime, 200)
    proxy.cut()
    await _until_status(runtime, 503)
    proxy.restore()
    await _until_status(runtime, 200)


async def test_a_stalled_handler_makes_the_stage_not_ready_and_the_metric_rises(
    amqp_url: str, redis_url: str, write_policy: Callable[[str], Path]
) -> None:
    runtime = Runtime("stalltest", _settings(amqp_url, redis_url, write_policy("organization: {hostname: gw.test}\n")))
    runtime.stall_after = 1.0
    await runtime.start()
    release = asyncio.Event()

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        await release.wait()
        return []

    probe = Bus(amqp_url)
    await probe.connect()
    try:
        await runtime.consume_stage("stalltest", handler)
        await _until_status(runtime, 200)
        assert await _oldest_unacked(runtime) == 0
        await probe.publish(Publish(stage_queue("stalltest"), Envelope(rcpt_to=["a@example.com"],
                                                                         itinerary=["stalltest"]), b"x"))
        await _until_status(runtime, 503, within=1.0 + BOUND)
        first = await _oldest_unacked(runtime)
        assert first > 1.0
        await asyncio.sleep(0.5)
        assert await _oldest_unacked(runtime) >= first + 0.4
        release.set()
        await _until_status(runtime, 200)
        assert await _oldest_unacked(runtime) == 0
    finally:
        release.set()
        await probe.close()
        await runtime.shutdown(grace=2)
