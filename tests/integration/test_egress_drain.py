"""SIGTERM drain of the egress process, against the real broker, Redis and a slow SMTP next hop: the
transactions under way finish and are recorded, copies still waiting for a session go back to the
queue unsent, and after a restart every copy has been delivered exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import redis

from mailmoat_egress.service import dedupe_key
from mailmoat_platform.bus import Bus, Publish, stage_queue
from mailmoat_platform.models import Envelope, Route
from tests.support.gateway import Gateway
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

SESSIONS = 20
"""Sessions egress opens to one destination at most (``SessionPool.max_per_destination``)."""
COPIES = SESSIONS + 4


def _copy(port: int, n: int) -> tuple[Envelope, bytes]:
    data = f"From: s@out.org\r\nTo: a@example.com\r\nMessage-ID: <drain-{n}@out.org>\r\n\r\nbody {n}\r\n".encode()
    envelope = Envelope(
        mail_from="s@out.org", rcpt_to=["a@example.com"], itinerary=["routing", "egress"],
        route=Route(name="route:onprem", kind="smarthost", hosts=[f"127.0.0.1:{port}"], tls="none"),
        message_id_header=f"<drain-{n}@out.org>",
    )
    return envelope, data


async def _publish(amqp_url: str, copies: list[tuple[Envelope, bytes]]) -> None:
    bus = Bus(amqp_url)
    await bus.connect()
    try:
        await bus.publish_many([Publish(stage_queue("egress"), e, d) for e, d in copies])
    finally:
        await bus.close()


async def _depth(amqp_url: str) -> int:
    bus = Bus(amqp_url)
    await bus.connect()
    try:
        return await bus.queue_depth(stage_queue("egress"))
    finally:
        await bus.close()


def test_sigterm_finishes_transactions_and_hands_back_the_rest(
    amqp_url: str, redis_url: str, write_policy, tmp_path: Path
) -> None:
    policy = write_policy("organization: {hostname: gw.test}\ndelivery: {command_timeout: 10}\n")
    with SmtpSink() as sink, Gateway(tmp_path / "gw", amqp_url, redis_url, policy) as gateway:
        copies = [_copy(sink.port, n) for n in range(COPIES)]
        sink.delay = 1.0  # the next hop has the message a second before it answers 250
        gateway.start(("egress",))
        asyncio.run(_publish(amqp_url, copies))
        sink.wait_for(SESSIONS, 10)  # every session is in a transaction; 4 copies wait for one
        started = time.monotonic()
        status = gateway.kill("egress", sig=signal.SIGTERM, timeout=15)
        took = time.monotonic() - started
        assert status == 0, gateway.tail("egress")
        assert took < 5, f"drained in {took:.1f}s"
        assert len(sink.messages) == SESSIONS, "nothing new was started after SIGTERM"
        store = redis.Redis.from_url(redis_url)
        delivered = {m.data for m in sink.messages}
        recorded = [e for e, d in copies if d in delivered and store.smembers(dedupe_key(e))]
        assert len(recorded) == SESSIONS, "every transaction that finished was recorded before exit"
        assert asyncio.run(_depth(amqp_url)) == COPIES - SESSIONS, "the waiting copies were handed back"

        sink.delay = 0
        gateway.start_service("egress")
        sink.wait_for(COPIES, 15)
        time.sleep(1.0)  # time for a duplicate to show up
        ids = sorted(m.data for m in sink.messages)
        assert ids == sorted(d for _, d in copies), "each copy delivered exactly once"
