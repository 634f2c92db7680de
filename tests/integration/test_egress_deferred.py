"""Deferred copies on the real broker and Redis: egress records each deferral, and a control message takes the copy
out of its (long) delay queue to retry it now, bounce it with a DSN or delete it."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailmoat_egress.control import ControlConsumer
from mailmoat_egress.delivery import SessionPool
from mailmoat_egress.service import SERVICE, Egress
from mailmoat_platform.bus import DEAD_QUEUE, Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope, Route
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_records.deferred import (
    CONTROL_ARGUMENTS,
    CONTROL_QUEUE,
    INDEX,
    Control,
    Deferral,
    DeferredStore,
    deferral_of,
)
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nTo: a@example.com\r\nSubject: deferred\r\nMessage-ID: <d1@out.org>\r\n\r\nbody\r\n"
DELAY = 600


@dataclass
class Harness:
    runtime: Runtime
    egress: Egress
    probe: Bus
    store: DeferredStore

    async def send(self, envelope: Envelope) -> None:
        await self.probe.publish(Publish(stage_queue("egress"), envelope, DATA))

    async def control(self, action: str, envelope: Envelope) -> None:
        assert envelope.route is not None
        await self.probe.publish_body(CONTROL_QUEUE, Control(action, envelope.id, envelope.route.name,
                                                             "admin alice").encode())

    async def deferral(self, envelope: Envelope, timeout: float = 15.0) -> Deferral:
        assert envelope.route is not None
        for _ in range(int(timeout / 0.05)):
            found = await self.store.get(envelope.id, envelope.route.name)
            if found is not None:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"no deferral recorded for {envelope.id}")

    async def cleared(self, envelope: Envelope, timeout: float = 15.0) -> None:
        """Wait (bounded) until the copy's deferral record is gone: a delete or bounce on arrival clears it
        after its trace events are written."""
        assert envelope.route is not None
        for _ in range(int(timeout / 0.05)):
            if await self.store.get(envelope.id, envelope.route.name) is None:
                return
            await asyncio.sleep(0.05)

    async def events(self, message_id: str, wanted: str, timeout: float = 15.0) -> list[str]:
        for _ in range(int(timeout / 0.05)):
            events = [e.event for e in await self.runtime.trace.events(message_id)]
            if wanted in events:
                return events
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {wanted} event for {message_id}")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
async def harness(amqp_url, redis_url, write_policy: Callable[[str], Path], sink) -> AsyncIterator[Harness]:
    policy = write_policy(f"""
    organization: {{hostname: gw.test}}
    delivery: {{retry_delays: [{DELAY}], expire_after: 86400, connect_timeout: 5, command_timeout: 10}}
    """)
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(policy))
    settings.metrics_ports = {}
    runtime = Runtime(SERVICE, settings)
    await runtime.start()
    probe = Bus(amqp_url)
    await probe.connect()
    assert probe.channel is not None
    names = [await probe.declare_stage("egress"), await probe.declare_stage("routing"), DEAD_QUEUE,
             await probe.declare_retry("egress", DELAY), await probe.declare_queue(CONTROL_QUEUE, CONTROL_ARGUMENTS)]
    for name in names:
        await (await probe.channel.get_queue(name)).purge()
    egress = Egress(runtime, SessionPool(local_hostname="gw.test"))
    await runtime.consume_stage(SERVICE, egress.handle)
    await ControlConsumer(runtime.bus, lambda: egress.deferrals.store, SERVICE).start()
    try:
        yield Harness(runtime, egress, probe, DeferredStore(runtime.redis))
    finally:
        await probe.close()
        await runtime.shutdown(grace=5)
        await egress.close()


def _envelope(sink: SmtpSink, rcpt: list[str] | None = None) -> Envelope:
    return Envelope(mail_from="s@out.org", rcpt_to=rcpt or ["a@example.com"], itinerary=["routing", "egress"],
                    route=Route(name="route:onprem", kind="smarthost", hosts=[f"127.0.0.1:{sink.port}"]),
                    message_id_header="<d1@out.org>")


async def test_deferral_recorded_then_retry_now_delivers_and_clears(harness: Harness, sink: SmtpSink) -> None:
    sink.reply_next("451 4.3.0 mailbox busy")
    envelope = _envelope(sink)
    await harness.send(envelope)
    deferral = await harness.deferral(envelope)
    assert deferral.recipients == ["a@example.com"] and deferral.attempts == 1
    assert deferral.destination == "route:onprem" and deferral.queue == f"mailmoat.egress.retry.{DELAY}s"
    assert "451 4.3.0 mailbox busy" in deferral.last_error
    assert DELAY - 30 < deferral.next_attempt - deferral.first_attempt <= DELAY + 1
    assert [d.id for d in await harness.store.all()] == [envelope.id]
    assert 0 < await harness.runtime.redis.ttl(f"mailmoat:deferred:{envelope.id}:route:onprem") <= DELAY + 6 * 3600
    assert await harness.runtime.redis.ttl(INDEX) > 0
    await harness.control("retry", envelope)
    [got] = await asyncio.to_thread(sink.wait_for, 1, 15)
    assert got.data == DATA
    assert await harness.events(envelope.id, "DELIVER") == ["DEFER", "DELIVER"]
    for _ in range(100):
        if await harness.store.get(envelope.id, "route:onprem") is None:
            break
        await asyncio.sleep(0.05)
    assert await harness.store.get(envelope.id, "route:onprem") is None
    assert await harness.store.all() == []


async def test_delete_traced_and_never_delivered(harness: Harness, sink: SmtpSink) -> None:
    sink.reply_next("452 4.2.2 over quota")
    other = _envelope(sink, ["b@example.com"])
    envelope = _envelope(sink)
    sink.reply_next("452 4.2.2 over quota")
    await harness.send(other)
    await harness.deferral(other)
    await harness.send(envelope)
    await harness.deferral(envelope)
    await harness.control("delete", envelope)
    events = await harness.events(envelope.id, "DELETE")
    assert events == ["DEFER", "DELETE"]
    [deleted] = [e for e in await harness.runtime.trace.events(envelope.id) if e.event == "DELETE"]
    assert "admin alice" in deleted.detail and deleted.recipients == ["a@example.com"]
    await harness.cleared(envelope)  # the record is cleared after the DELETE event is written
    assert await harness.store.get(envelope.id, "route:onprem") is None
    assert [d.id for d in await harness.store.all()] == [other.id]  # the copy ahead of it still waits
    assert sink.messages == []


async def test_bounce_sends_a_dsn_to_the_sender(harness: Harness, sink: SmtpSink) -> None:
    sink.reply_next("451 4.7.1 greylisted")
    envelope = _envelope(sink)
    await harness.send(envelope)
    await harness.deferral(envelope)
    await harness.control("bounce", envelope)
    assert harness.probe.channel is not None
    routing = await harness.probe.channel.get_queue(stage_queue("routing"))
    for _ in range(300):
        message = await routing.get(no_ack=True, fail=False)
        if message is not None:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no DSN published to routing")
    dsn, data = decode(message.body)
    assert dsn.kind == "dsn" and dsn.parent_id == envelope.id and dsn.rcpt_to == ["s@out.org"]
    report = email.message_from_bytes(data, policy=email.policy.default)
    status = list(report.iter_parts())[1].get_payload()[1]
    assert status["Final-Recipient"] == "rfc822; a@example.com" and status["Status"] == "5.0.0"
    assert "admin alice" in str(status["Diagnostic-Code"]) and "greylisted" in str(status["Diagnostic-Code"])
    assert sorted(await harness.events(envelope.id, "DSN")) == ["DEFER", "DSN", "FAIL"]
    assert await harness.store.get(envelope.id, "route:onprem") is None


async def test_control_for_a_copy_no_longer_deferred_does_nothing(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope(sink)
    assert await harness.egress.deferrals.store.mark(envelope.id, "route:onprem", "delete") is False
    await harness.send(envelope)
    await asyncio.to_thread(sink.wait_for, 1, 15)
    consumer = ControlConsumer(harness.runtime.bus, lambda: harness.store, SERVICE)
    assert await consumer.apply(Control("delete", envelope.id, "route:onprem", "admin alice")) == "gone"


async def test_a_copy_not_in_its_delay_queue_gets_the_action_when_it_arrives(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope(sink)
    envelope.attempts, envelope.last_error = 1, "451 4.3.0 busy"
    assert envelope.route is not None
    await harness.store.record(deferral_of(envelope, f"mailmoat.egress.retry.{DELAY}s", DELAY), DELAY)
    consumer = ControlConsumer(harness.runtime.bus, lambda: harness.store, SERVICE)
    assert await consumer.apply(Control("delete", envelope.id, "route:onprem", "admin alice")) == "marked"
    await harness.send(envelope)  # the copy comes back (it was in flight)
    assert await harness.events(envelope.id, "DELETE") == ["DELETE"]
    await harness.cleared(envelope)  # the record is cleared after the DELETE event is written
    assert await harness.store.get(envelope.id, "route:onprem") is None
    await harness.send(_envelope(sink, ["later@example.com"]))  # egress went on: the next copy is delivered
    [got] = await asyncio.to_thread(sink.wait_for, 1, 15)
    assert got.rcpt_tos == ["later@example.com"]
