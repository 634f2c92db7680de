"""A stage's trace record and its publish to the next stage go out together: the next stage gets the
message while the trace record is still being stored, and the input is acked only once both are settled
(a filter stage through ``Runtime.finish``, routing through ``Runtime.record``). Against the real
RabbitMQ; the trace sink is held open by the test."""

from __future__ import annotations

import asyncio
import gc

import pytest

from mailmoat_platform.bus import Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.runtime import Runtime
from mailmoat_records.trace import TraceRecord, TraceSink
from mailmoat_routing.service import make_handler as routing_handler
from tests.integration.test_routing_service import POLICY as ROUTING_POLICY
from tests.integration.test_runtime import POLICY, _empty, _get, _settings

pytestmark = pytest.mark.integration


class HeldTrace(TraceSink):
    """A trace sink that stores nothing until ``release`` is set (or fails when ``fail`` is set)."""

    def __init__(self, fail: bool = False) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.fail = fail
        self.records: list[TraceRecord] = []
        self.retention = 0

    async def add(self, record: TraceRecord) -> bool:
        self.started.set()
        await self.release.wait()
        if self.fail:
            raise RuntimeError("trace store broke")
        self.records.append(record)
        return True


@pytest.fixture
async def probe(amqp_url: str):
    bus = Bus(amqp_url)
    await bus.connect()
    for stage in ("t1", "t2", "routing", "egress"):
        await bus.declare_stage(stage)
        assert bus.channel is not None
        await (await bus.channel.get_queue(stage_queue(stage))).purge()
    yield bus
    await bus.close()


async def _stage(amqp_url: str, redis_url: str, policy, trace: HeldTrace) -> Runtime:
    runtime = Runtime("t1", _settings(amqp_url, redis_url, policy))
    runtime.trace = trace
    await runtime.start()

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        event = TraceEvent(event="SCAN", message_id=envelope.id, service="t1", recipients=envelope.rcpt_to)
        return [await runtime.finish(envelope, data, Verdict(stage="t1", result="clean"), event, b"X-T1: yes\r\n")]

    await runtime.consume_stage("t1", handler)
    return runtime


def _envelope() -> Envelope:
    return Envelope(mail_from="s@example.org", rcpt_to=["a@example.com"], itinerary=["t1", "t2"])


async def _wait(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_next_stage_gets_the_message_while_the_trace_is_stored_and_the_ack_waits_for_both(
        amqp_url, redis_url, write_policy, probe) -> None:
    trace = HeldTrace()
    runtime = await _stage(amqp_url, redis_url, write_policy(POLICY), trace)
    envelope = _envelope()
    await probe.publish(Publish(stage_queue("t1"), envelope, b"Subject: a\r\n\r\nbody\r\n"))
    got, data = decode((await _get(probe, stage_queue("t2"))).body)
    assert got.id == envelope.id and data == b"X-T1: yes\r\nSubject: a\r\n\r\nbody\r\n"
    assert trace.started.is_set() and not trace.records
    assert runtime.held.oldest_age() > 0  # the input is still held: not acked while its trace is pending
    trace.release.set()
    await _wait(lambda: runtime.held.oldest_age() == 0)
    assert [e.event for r in trace.records for e in r.events] == ["SCAN"]
    await runtime.shutdown()
    assert await _empty(probe, stage_queue("t1"))  # acked, not returned to the queue


async def test_a_trace_record_that_fails_does_not_hold_the_mail(amqp_url, redis_url, write_policy, probe) -> None:
    trace = HeldTrace(fail=True)
    trace.release.set()
    runtime = await _stage(amqp_url, redis_url, write_policy(POLICY), trace)
    envelope = _envelope()
    await probe.publish(Publish(stage_queue("t1"), envelope, b"Subject: b\r\n\r\n"))
    got, _ = decode((await _get(probe, stage_queue("t2"))).body)
    assert got.id == envelope.id
    await _wait(lambda: runtime.held.oldest_age() == 0)
    await runtime.shutdown()
    assert await _empty(probe, stage_queue("t1"))
    assert await _empty(probe, stage_queue("t2"))  # passed on once, not retried


async def test_deliveries_leave_no_reference_cycles_for_the_collector(amqp_url, redis_url, write_policy, probe) -> None:
    """A delivery's trace record is a task, made in the delivery's context, which holds the list of the
    delivery's trace waits, which holds the task: a cycle per message, which only the cyclic collector
    frees. Under load that was tens of thousands of objects per collection in every stage, and a pause
    of 26-55 ms each time (bench/README.md). Nothing a delivery leaves may need the collector."""
    trace = HeldTrace()
    trace.release.set()
    runtime = await _stage(amqp_url, redis_url, write_policy(POLICY), trace)
    count = 200
    gc.collect()
    gc.disable()
    try:
        for _ in range(count):
            await probe.publish(Publish(stage_queue("t1"), _envelope(), b"Subject: c\r\n\r\nbody\r\n"))
        await _wait(lambda: len(trace.records) == count)
        await _wait(lambda: runtime.held.oldest_age() == 0)
        unreachable = gc.collect()
    finally:
        gc.enable()
    await runtime.shutdown()
    assert unreachable < count // 4, f"{unreachable} objects in reference cycles after {count} deliveries"


async def test_routing_passes_the_message_on_while_its_route_events_are_stored(
        amqp_url, redis_url, write_policy, probe) -> None:
    trace = HeldTrace()
    runtime = Runtime("routing", _settings(amqp_url, redis_url, write_policy(ROUTING_POLICY)))
    runtime.trace = trace
    await runtime.start()
    await runtime.consume_stage("routing", routing_handler(runtime))
    envelope = Envelope(mail_from="s@example.org", rcpt_to=["a@example.com"], itinerary=["routing", "egress"])
    await probe.publish(Publish(stage_queue("routing"), envelope, b"Subject: r\r\n\r\nbody\r\n"))
    got, _ = decode((await _get(probe, stage_queue("egress"))).body)
    assert got.id == envelope.id and got.route is not None and got.route.name == "route:onprem"
    assert trace.started.is_set() and not trace.records  # egress has it; the ROUTE event is still held
    assert runtime.held.oldest_age() > 0  # and routing's input is not acked yet
    trace.release.set()
    await _wait(lambda: runtime.held.oldest_age() == 0)
    assert "ROUTE" in [e.event for r in trace.records for e in r.events]
    await runtime.shutdown()
    assert await _empty(probe, stage_queue("routing"))
