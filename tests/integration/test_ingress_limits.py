"""Rate limits and greylisting against the real Redis: shared between limiters, expiring, failing open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY

from mailmoat_ingress.greylist import Greylist
from mailmoat_ingress.ratelimit import RateLimiter
from mailmoat_platform import redisclient
from mailmoat_policy import parse_policy
from tests.support.infra import free_port
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

POLICY = parse_policy("""
organization: {internal_networks: [10.0.0.0/8]}
connection_filter:
  ip_allow: [192.0.2.10]
  rate_limits: {connections: 2, messages_per_minute: 3, recipients_per_minute: 4, connection_ttl: 10}
  greylisting: {enabled: true, delay: 60, retry_window: 3600}
""")


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redisclient.Redis]:
    client = redisclient.from_url(redis_url)
    yield client
    await client.aclose()


def errors(check: str) -> float:
    return REGISTRY.get_sample_value("mailmoat_ingress_limit_errors_total", {"check": check}) or 0.0


async def test_two_limiters_share_the_connection_limit_and_release_on_close(client: redisclient.Redis) -> None:
    one, two = RateLimiter(client, process_id="one"), RateLimiter(client, process_id="two")
    reply, first = await one.open_connection(POLICY, "192.0.2.1")
    assert reply is None and first is not None
    reply, second = await two.open_connection(POLICY, "192.0.2.1")
    assert reply is None and second is not None
    reply, third = await one.open_connection(POLICY, "192.0.2.1")
    assert reply == "421 4.7.0 Too many connections from [192.0.2.1], try again later" and third is None
    assert (await two.open_connection(POLICY, "192.0.2.2"))[0] is None  # another client counts apart
    assert (await one.open_connection(POLICY, "10.1.1.1"))[1] is None  # internal: not counted at all
    assert (await one.open_connection(POLICY, "192.0.2.10"))[1] is None  # allow-listed
    await two.close_connection(second)
    reply, again = await one.open_connection(POLICY, "192.0.2.1")
    assert reply is None and again is not None
    assert await client.zcard("mailmoat:rl:conn:192.0.2.1/32") == 2


async def test_slots_of_a_dead_process_expire_and_live_ones_are_refreshed(client: redisclient.Redis) -> None:
    clock = Clock()
    dead, alive = RateLimiter(client, process_id="dead", clock=clock), RateLimiter(client, process_id="alive",
                                                                                 clock=clock)
    assert (await dead.open_connection(POLICY, "192.0.2.1"))[1] is not None
    assert (await alive.open_connection(POLICY, "192.0.2.1"))[1] is not None
    assert (await alive.open_connection(POLICY, "192.0.2.1"))[0] is not None  # full
    clock.now += 8
    await alive.refresh()  # the dead process refreshes nothing
    clock.now += 5  # past the dead slot's expiry (ttl 10), within the refreshed one
    reply, slot = await alive.open_connection(POLICY, "192.0.2.1")
    assert reply is None and slot is not None
    assert await client.ttl("mailmoat:rl:conn:192.0.2.1/32") > 0


async def test_message_and_recipient_windows_expire_by_themselves(client: redisclient.Redis) -> None:
    one, two = RateLimiter(client), RateLimiter(client)
    results = [await (one if i % 2 else two).count_message(POLICY, "192.0.2.1") for i in range(5)]
    assert results[:3] == [None, None, None]
    assert results[3:] == ["450 4.7.1 Too many messages from [192.0.2.1], try again later"] * 2
    assert 0 < await client.ttl("mailmoat:rl:messages:192.0.2.1/32") <= 60
    recipients = [await one.count_recipient(POLICY, "2001:db8::1") for _ in range(4)]
    assert recipients == [None] * 4
    assert await two.count_recipient(POLICY, "2001:db8::2") == (
        "450 4.7.1 Too many recipients from [2001:db8::2], try again later")  # the same /64
    assert await one.count_message(POLICY, "10.0.0.1") is None
    assert not await client.exists("mailmoat:rl:messages:10.0.0.1/32")


async def test_redis_unreachable_fails_open_and_counts() -> None:
    down = redisclient.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    limiter, greylist = RateLimiter(down), Greylist(down)
    before = errors("connections"), errors("messages"), errors("greylist")
    assert await limiter.open_connection(POLICY, "192.0.2.1") == (None, None)
    assert await limiter.count_message(POLICY, "192.0.2.1") is None
    assert await greylist.check(POLICY, "192.0.2.1", "a@x.test", "b@y.test") is None
    assert (errors("connections"), errors("messages"), errors("greylist")) == tuple(b + 1 for b in before)
    await down.aclose()


SLOW = parse_policy("""
connection_filter:
  rate_limits: {connections: 2, connection_ttl: 600, redis_timeout: 0.1}
""")


async def _until_empty(client: redisclient.Redis, key: str, timeout: float = 5.0) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while (count := await client.zcard(key)) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return count


async def test_a_check_that_ends_without_a_slot_takes_back_what_its_script_adds(
        client: redisclient.Redis, redis_url: str) -> None:
    """Redis slower than ``redis_timeout`` (the client is let through) and a caller cancelled during the check
    (the client left): the script still runs once Redis gets it, and its slot would count against the client
    until it expired (10 minutes here). The check takes it back instead."""
    url = urlsplit(redis_url)
    key = "mailmoat:rl:conn:192.0.2.7/32"
    with TcpProxy(url.port or 6379, url.hostname or "127.0.0.1") as proxy:
        slow = redisclient.from_url(url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl())
        limiter = RateLimiter(slow, process_id="slow")
        try:
            reply, slot = await limiter.open_connection(SLOW, "192.0.2.7")  # the script loaded
            assert reply is None and slot is not None and await client.zcard(key) == 1
            await limiter.close_connection(slot)
            assert await client.zcard(key) == 0
            proxy.delay(0.2)  # a round trip now takes 0.4 s, four times redis_timeout
            assert await limiter.open_connection(SLOW, "192.0.2.7") == (None, None)  # let through, not checked
            check = asyncio.ensure_future(limiter.open_connection(SLOW, "192.0.2.7"))
            await asyncio.sleep(0.05)
            check.cancel()  # as aiosmtpd cancels the session of a client that left
            with pytest.raises(asyncio.CancelledError):
                await check
            await asyncio.sleep(1.0)  # both scripts have run in Redis
            proxy.delay(0)
            assert await _until_empty(client, key) == 0
            assert not limiter.slots
        finally:
            await slow.aclose()


async def test_greylisting_defers_then_accepts_after_the_delay_and_remembers(client: redisclient.Redis) -> None:
    clock = Clock()
    grey = Greylist(client, clock=clock)
    other = Greylist(client, clock=clock)  # another process
    deferred = "451 4.7.1 Greylisted, please try again later"
    assert await grey.check(POLICY, "192.0.2.1", "a@x.test", "b@y.test") == deferred
    clock.now += 30
    assert await other.check(POLICY, "192.0.2.200", "A@X.test", "b@y.test") == deferred  # same /24, too early
    assert await grey.check(POLICY, "192.0.2.1", "a@x.test", "c@y.test") == deferred  # another recipient
    clock.now += 31
    assert await other.check(POLICY, "192.0.2.1", "a@x.test", "b@y.test") is None
    ttl = await client.ttl(next(iter(await client.keys("mailmoat:grey:ok:*"))))
    assert 36 * 86400 - 5 < ttl <= 36 * 86400
    clock.now += 86400 * 10
    assert await grey.check(POLICY, "192.0.2.1", "a@x.test", "b@y.test") is None  # known
    assert await grey.check(POLICY, "198.51.100.1", "a@x.test", "b@y.test") == deferred  # another network
    assert await grey.check(POLICY, "10.0.0.1", "a@x.test", "b@y.test") is None  # internal
    assert await grey.check(POLICY, "192.0.2.10", "new@x.test", "b@y.test") is None  # allow-listed
