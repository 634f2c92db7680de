"""The console's queues and policy on real components: rule hits counted from the trace in PostgreSQL (test mode
included, a range excluding the rest); deferral records read from Redis and an action published on the real broker
to mailmoat.egress.control."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_console.policypages import PolicyPages
from mailmoat_console.queues import ConsoleQueues
from mailmoat_platform import redisclient
from mailmoat_platform.bus import Bus
from mailmoat_platform.models import Envelope, Route, TraceEvent
from mailmoat_records import db
from mailmoat_records.deferred import CONTROL_ARGUMENTS, CONTROL_QUEUE, Control, DeferredStore, deferral_of
from mailmoat_records.trace import TraceRecord
from mailmoat_records.tracedb import TraceWriter

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator:
    db.upgrade(database_url)
    async with db.open_pool(database_url, max_size=2) as opened:
        async with opened.connection() as conn:
            await conn.execute("DELETE FROM trace_events WHERE event = 'RULE'")
        yield opened


def rule_event(rule: str, mode: str, at: datetime, **data) -> TraceRecord:
    message_id = uuid.uuid4().hex
    return TraceRecord(events=[TraceEvent(event="RULE", message_id=message_id, service="routing", at=at,
                                          recipients=["a@example.com"], detail=f"rule {rule}",
                                          data={"rule": rule, "mode": mode, "actions": ["prepend_subject"], **data})])


async def test_rule_hits_from_the_trace_test_mode_included(pool, tmp_path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await TraceWriter(pool).write([
        rule_event("tag-external", "enforce", now - timedelta(hours=1)),
        rule_event("tag-external", "enforce", now - timedelta(hours=2)),
        rule_event("cards-out", "test", now - timedelta(hours=3)),
        rule_event("tag-external", "enforce", now - timedelta(days=20)),  # outside the range asked
        rule_event("cards-out", "", now - timedelta(hours=1), parent_id="x") ,  # a sender notice: not a hit
    ])
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: cards-out\n    mode: test\n    conditions: {subject_contains: [card]}\n"
                      "    actions: {prepend_subject: '[card] '}\n"
                      "  - name: never-hit\n    conditions: {subject_contains: [zzz]}\n"
                      "    actions: {prepend_subject: '[z] '}\n")
    pages = PolicyPages(str(policy), pool)
    assert (await pages.in_force()).error == ""
    hits = {(h.rule, h.mode): h for h in await pages.rule_hits(now - timedelta(days=7), now + timedelta(minutes=1))}
    assert {k: h.hits for k, h in hits.items()} == {("tag-external", "enforce"): 2, ("cards-out", "test"): 1,
                                                    ("never-hit", "enforce"): 0}
    assert hits[("cards-out", "test")].in_policy and hits[("cards-out", "test")].mode_now == "test"
    assert not hits[("tag-external", "enforce")].in_policy
    assert hits[("tag-external", "enforce")].last == now - timedelta(hours=1)


async def test_deferrals_read_and_an_action_published(redis_url: str, amqp_url: str) -> None:
    client = redisclient.from_url(redis_url)
    probe = Bus(amqp_url)
    await probe.connect()
    await probe.declare_queue(CONTROL_QUEUE, CONTROL_ARGUMENTS)
    assert probe.channel is not None
    control_queue = await probe.channel.get_queue(CONTROL_QUEUE)
    await control_queue.purge()
    queues = ConsoleQueues(lambda: client, lambda: Bus(amqp_url))
    try:
        envelope = Envelope(mail_from="s@out.org", rcpt_to=["a@dest.test", "b@dest.test"], itinerary=["egress"],
                            route=Route(name="mx", kind="mx", domain="dest.test"), attempts=3,
                            last_error="451 4.3.0 try later")
        await DeferredStore(client).record(deferral_of(envelope, "mailmoat.egress.retry.900s", 900), 900)
        [group] = await queues.destinations()
        assert group.destination == "dest.test" and group.recipients == 2
        [copy] = group.copies
        assert copy.last_error == "451 4.3.0 try later" and copy.attempts == 3 and copy.route == "mx"
        assert await queues.ask("bounce", envelope.id, "mx", "admin root") is not None
        assert await queues.ask("delete", "no-such-id", "mx", "admin root") is None
        for _ in range(100):
            message = await control_queue.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no control message published")
        assert Control.decode(message.body) == Control("bounce", envelope.id, "mx", "admin root",
                                                       json.loads(message.body)["at"])
        assert await control_queue.get(no_ack=True, fail=False) is None  # nothing sent for a copy not deferred
    finally:
        await queues.close()
        await probe.close()
        await client.aclose()
