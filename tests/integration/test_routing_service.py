"""The routing service on the real broker: one copy per route to egress, ROUTE/EXPAND traced."""

from __future__ import annotations

import pytest

from mailmoat_platform.bus import Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_routing.service import SERVICE, make_handler
from tests.support.traced import wait_traced

pytestmark = pytest.mark.integration

POLICY = """
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem: {hosts: ["127.0.0.1:2526"], tls: none}
"""


async def test_split_by_route_and_traced(amqp_url, redis_url, write_policy) -> None:
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(write_policy(POLICY)))
    settings.metrics_ports = {}
    runtime = Runtime(SERVICE, settings)
    await runtime.start()
    probe = Bus(amqp_url)
    await probe.connect()
    egress = await probe.declare_stage("egress")
    assert probe.channel is not None
    await (await probe.channel.get_queue(egress)).purge()
    await runtime.consume_stage(SERVICE, make_handler(runtime))

    envelope = Envelope(
        mail_from="s@out.org", rcpt_to=["a@example.com", "x@partner.org", "b@example.com"],
        itinerary=["routing", "egress"], message_id_header="<m1@out.org>",
    )
    data = b"Subject: hi\r\n\r\nbody\r\n"
    await probe.publish(Publish(stage_queue("routing"), envelope, data))

    queue = await probe.channel.get_queue(egress)
    copies = []
    for _ in range(200):
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            copies.append(decode(message.body))
            if len(copies) == 2:
                break
        else:
            import asyncio

            await asyncio.sleep(0.05)
    assert sorted((e.route.name, tuple(e.rcpt_to)) for e, _ in copies) == [
        ("mx:partner.org", ("x@partner.org",)),
        ("route:onprem", ("a@example.com", "b@example.com")),
    ]
    assert all(d == data and e.id == envelope.id for e, d in copies)
    await wait_traced(runtime.trace, envelope.id, "ROUTE")  # stored beside the publish to egress, not before it
    events = await runtime.trace.events(envelope.id)
    assert [e.event for e in events] == ["EXPAND", "ROUTE", "ROUTE"]
    await probe.close()
    await runtime.shutdown()
