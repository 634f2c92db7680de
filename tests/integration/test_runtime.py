"""The consume loop against the real RabbitMQ and Redis: ack after confirmed publish, poison to the
dead-letter queue with a reason and a trace event, temporary faults retried without loss."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest

from mailmoat_platform.bus import DEAD_QUEUE, Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Runtime, Transient, stage_publish
from mailmoat_platform.settings import Settings
from mailmoat_platform.telemetry import current_trace_id, tracing_records
from tests.support.traced import wait_traced

pytestmark = pytest.mark.integration

POLICY = "accepted_domains:\n  - domain: example.com\n"


def _settings(amqp_url: str, redis_url: str, policy: Path) -> Settings:
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(policy),
                        log_format="text")
    settings.metrics_ports = {}
    return settings


async def _get(bus: Bus, queue: str, timeout: float = 10.0) -> aio_pika.abc.AbstractIncomingMessage:
    assert bus.channel is not None
    q = await bus.channel.get_queue(queue, ensure=False)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await q.get(fail=False, no_ack=True)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing arrived on {queue}")


async def _empty(bus: Bus, queue: str) -> bool:
    assert bus.channel is not None
    q = await bus.channel.get_queue(queue, ensure=False)
    return await q.get(fail=False, no_ack=True) is None


@pytest.fixture
async def probe(amqp_url: str):
    bus = Bus(amqp_url)
    await bus.connect()
    for stage in ("t1", "t2"):
        await bus.declare_stage(stage)
        assert bus.channel is not None
        await (await bus.channel.get_queue(stage_queue(stage))).purge()
    await (await bus.channel.get_queue(DEAD_QUEUE)).purge()
    yield bus
    await bus.close()


def _envelope() -> Envelope:
    return Envelope(mail_from="s@example.org", rcpt_to=["a@example.com"], itinerary=["t1", "t2"])


async def test_handler_output_is_published_then_input_acked(amqp_url, redis_url, write_policy, probe) -> None:
    runtime = Runtime("t1", _settings(amqp_url, redis_url, write_policy(POLICY)))
    await runtime.start()

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        return [stage_publish(envelope, b"X-Seen: t1\r\n" + data, "t1")]

    await runtime.consume_stage("t1", handler)
    assert runtime.ready()
    envelope = _envelope()
    await probe.publish(Publish(stage_queue("t1"), envelope, b"Subject: a\r\n\r\nbody\r\n"))
    got_envelope, data = decode((await _get(probe, stage_queue("t2"))).body)
    assert got_envelope.id == envelope.id
    assert data == b"X-Seen: t1\r\nSubject: a\r\n\r\nbody\r\n"
    await runtime.shutdown()
    assert await _empty(probe, stage_queue("t1"))


async def test_without_an_exporter_the_senders_trace_goes_on_and_log_lines_name_it(
    amqp_url, redis_url, write_policy, probe
) -> None:
    runtime = Runtime("t1", _settings(amqp_url, redis_url, write_policy(POLICY)))
    await runtime.start()
    seen: list[str | None] = []

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        seen.append(current_trace_id())
        return [stage_publish(envelope, data, "t1")]

    await runtime.consume_stage("t1", handler)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    await probe.publish(Publish(stage_queue("t1"), _envelope(), b"Subject: a\r\n\r\n", {"traceparent": traceparent}))
    out = await _get(probe, stage_queue("t2"))
    assert str(out.headers["traceparent"]).split("-")[1] == trace_id
    if not tracing_records():  # no exporter (as in this suite): no span of the stage, the context goes on as it came
        assert out.headers["traceparent"] == traceparent
    assert seen == [trace_id]
    await runtime.shutdown()


async def test_poison_message_is_dead_lettered_with_reason_and_traced(amqp_url, redis_url, write_policy, probe):
    runtime = Runtime("t1", _settings(amqp_url, redis_url, write_policy(POLICY)))
    await runtime.start()
    calls = 0

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        nonlocal calls
        calls += 1
        raise ValueError("cannot parse this")

    await runtime.consume_stage("t1", handler)
    envelope = _envelope()
    await probe.publish(Publish(stage_queue("t1"), envelope, b"Subject: poison\r\n\r\n"))
    dead = await _get(probe, DEAD_QUEUE, timeout=20)
    assert "ValueError: cannot parse this" in dead.headers["x-mailmoat-dead-reason"]
    dead_envelope, data = decode(dead.body)
    assert dead_envelope.id == envelope.id and data == b"Subject: poison\r\n\r\n"
    assert calls == runtime.bus.delivery_limit
    await wait_traced(runtime.trace, envelope.id, "DEADLETTER")  # recorded after the dead-letter publish
    events = await runtime.trace.events(envelope.id)
    assert [e.event for e in events] == ["DEADLETTER"]
    await runtime.shutdown()


async def test_undecodable_body_goes_to_dead_queue(amqp_url, redis_url, write_policy, probe) -> None:
    runtime = Runtime("t1", _settings(amqp_url, redis_url, write_policy(POLICY)))
    await runtime.start()

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        raise AssertionError("must not be called")

    await runtime.consume_stage("t1", handler)
    assert probe.channel is not None
    await probe.channel.default_exchange.publish(aio_pika.Message(b"garbage"), routing_key=stage_queue("t1"))
    dead = await _get(probe, DEAD_QUEUE)
    assert dead.body == b"garbage"
    assert "not a mailmoat frame" in dead.headers["x-mailmoat-dead-reason"]
    await runtime.shutdown()


async def test_transient_fault_retries_without_loss_or_dead_letter(amqp_url, redis_url, write_policy, probe):
    runtime = Runtime("t1", _settings(amqp_url, redis_url, write_policy(POLICY)))
    await runtime.start()
    attempts = 0

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        nonlocal attempts
        attempts += 1
        if attempts <= runtime.bus.delivery_limit + 1:  # more faults than the poison limit
            raise Transient("redis down")
        return [stage_publish(envelope, data, "t1")]

    await runtime.consume_stage("t1", handler)
    envelope = _envelope()
    await probe.publish(Publish(stage_queue("t1"), envelope, b"Subject: t\r\n\r\n"))
    got, _ = decode((await _get(probe, stage_queue("t2"), timeout=30)).body)
    assert got.id == envelope.id
    assert await _empty(probe, DEAD_QUEUE)
    await runtime.shutdown()
