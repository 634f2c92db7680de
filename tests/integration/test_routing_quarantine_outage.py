"""Routing on the real broker while Redis is unreachable: a message to quarantine waits (retried, never
passed on, never dead-lettered) and is held once Redis is back."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.bus import DEAD_QUEUE, Bus, Publish, stage_queue
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_records.quarantine import QuarantineStore
from mailmoat_routing.service import SERVICE, make_handler
from tests.support.tcpproxy import TcpProxy
from tests.support.traced import wait_traced

pytestmark = pytest.mark.integration

POLICY = """
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem: {hosts: ["127.0.0.1:2526"], tls: none}
"""


async def depth(bus: Bus, queue: str) -> int:
    return await bus.queue_depth(queue)


async def test_quarantine_waits_for_redis(amqp_url: str, redis_url: str, write_policy) -> None:
    target = urlparse(redis_url)
    with TcpProxy(target.port or 6379) as proxy:
        settings = Settings(records="redis", amqp_url=amqp_url, redis_url=f"redis://127.0.0.1:{proxy.port}{target.path}",
                            policy_path=str(write_policy(POLICY)))
        settings.metrics_ports = {}
        runtime = Runtime(SERVICE, settings)
        await runtime.start()
        probe = Bus(amqp_url)
        await probe.connect()
        egress = await probe.declare_stage("egress")
        assert probe.channel is not None
        for name in (egress, DEAD_QUEUE):
            await (await probe.channel.get_queue(name)).purge()
        await runtime.consume_stage(SERVICE, make_handler(runtime))

        proxy.cut()
        envelope = Envelope(mail_from="s@out.org", rcpt_to=["a@example.com"], itinerary=["antispam", "routing",
                                                                                          "egress"])
        envelope.add_verdict(Verdict(stage="antispam", result="hcspam", detail={"scl": 8, "category": "hcspam"}))
        data = b"Subject: hold me\r\n\r\nbody\r\n"
        await probe.publish(Publish(stage_queue("routing"), envelope, data))
        await asyncio.sleep(4)  # several handling attempts fail on Redis
        assert await depth(probe, egress) == 0 and await depth(probe, DEAD_QUEUE) == 0

        proxy.restore()
        client = redisclient.from_url(redis_url)
        store = QuarantineStore(client)
        deadline = time.monotonic() + 30
        while (held := await store.get(envelope.id, data=True)) is None:
            assert time.monotonic() < deadline, "not quarantined after Redis came back"
            await asyncio.sleep(0.1)
        assert held.data == data and held.reason == "hcspam"
        assert await depth(probe, egress) == 0 and await depth(probe, DEAD_QUEUE) == 0
        # Routing writes the QUARANTINE event after the message is held, beside the ack.
        await wait_traced(runtime.trace, envelope.id, "QUARANTINE")
        events = [e.event for e in await runtime.trace.events(envelope.id)]
        assert events.count("QUARANTINE") == 1
        await client.aclose()
        await probe.close()
        await runtime.shutdown()
