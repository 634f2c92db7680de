"""Poison deliveries against the real broker and Redis: whatever a delivery carries (AMQP headers of
any type or encoding, a body that is no frame, an envelope without recipients), the stage settles it
(ack, retry or dead letter with its reason) and goes on; none stays unacked and wedges the consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aio_pika
import aiormq
import pytest

from mailmoat_egress.delivery import SessionPool
from mailmoat_egress.service import SERVICE, Egress
from mailmoat_platform.bus import DEAD_QUEUE, Bus, Publish, decode, encode, stage_queue
from mailmoat_platform.models import Envelope, Route
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from tests.support.amqpraw import RawText, RawTimestamp, RawValue, raw_values
from tests.support.sink import SmtpSink
from tests.support.traced import wait_traced

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nTo: a@example.com\r\nSubject: poison\r\n\r\nbody\r\n"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def _envelope(sink: SmtpSink, rcpt: list[str] | None = None) -> Envelope:
    return Envelope(
        mail_from="s@out.org", rcpt_to=["a@example.com"] if rcpt is None else rcpt,
        itinerary=["routing", "egress"],
        route=Route(name="route:onprem", kind="smarthost", hosts=[f"127.0.0.1:{sink.port}"], tls="none"),
    )


@pytest.fixture
async def egress(amqp_url: str, redis_url: str, write_policy: Callable[[str], Path],
                 sink: SmtpSink) -> AsyncIterator[tuple[Runtime, Bus]]:
    policy = write_policy("organization: {hostname: gw.test}\n"
                          "delivery: {connect_timeout: 5, command_timeout: 10}\n")
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(policy),
                        log_format="text")
    settings.metrics_ports = {}
    probe = Bus(amqp_url)
    await probe.connect()
    assert probe.channel is not None
    for name in (await probe.declare_stage(SERVICE), DEAD_QUEUE):
        await (await probe.channel.get_queue(name)).purge()
    runtime = Runtime(SERVICE, settings, prefetch=32)
    await runtime.start()
    stage = Egress(runtime, SessionPool(local_hostname="gw.test"))
    await runtime.consume_stage(SERVICE, stage.handle)
    try:
        yield runtime, probe
    finally:
        await probe.close()
        await runtime.shutdown(grace=5)
        await stage.close()


async def _publish_raw(probe: Bus, body: bytes, headers: dict[str, object]) -> None:
    assert probe.channel is not None
    await probe.channel.default_exchange.publish(
        aio_pika.Message(body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),  # type: ignore[arg-type]
        routing_key=stage_queue(SERVICE),
    )


async def _drain_dead(probe: Bus, count: int, timeout: float) -> list[aio_pika.abc.AbstractIncomingMessage]:
    assert probe.channel is not None
    queue = await probe.channel.get_queue(DEAD_QUEUE)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        message = await queue.get(fail=False, no_ack=True)
        if message is None:
            await asyncio.sleep(0.05)
        else:
            got.append(message)
    return got


async def test_undecodable_traceparent_does_not_wedge_egress(egress, sink: SmtpSink) -> None:
    """More deliveries with a traceparent that is not UTF-8 than the prefetch (the issue's drill):
    the unreadable trace context is ignored, each is delivered, and so is a message behind them."""
    _, probe = egress
    for _ in range(40):
        await _publish_raw(probe, encode(_envelope(sink), DATA), {"traceparent": RawText(b"00-\xff\xfe-not-utf-8")})
    await probe.publish(Publish(stage_queue(SERVICE), _envelope(sink), DATA))
    delivered = await asyncio.to_thread(sink.wait_for, 41, 20)
    assert len({m.data for m in delivered}) == 1 and len(delivered) == 41
    assert await probe.queue_depth(stage_queue(SERVICE)) == 0


async def test_header_of_every_type_is_settled(egress, sink: SmtpSink) -> None:
    _, probe = egress
    odd: list[dict[str, object]] = [
        {"traceparent": 7}, {"traceparent": ["00-a-b-01"]}, {"tracestate": {"k": RawText(b"\x80")}},
        {"traceparent": None}, {"x-delivery-count": "many"}, {"x-delivery-count": bytearray(b"\xff")},
        {"x-n": Decimal("1.5"), "x-t": datetime(2001, 1, 1, tzinfo=UTC)},
        {"traceparent": "00-" + "f" * 5000}, {"traceparent": "00-zz-zz-zz", "tracestate": RawText(b"\xc3\x28")},
    ]
    for headers in odd:
        await _publish_raw(probe, encode(_envelope(sink), DATA), headers)
    await asyncio.to_thread(sink.wait_for, len(odd), 15)
    assert await probe.queue_depth(stage_queue(SERVICE)) == 0


async def test_envelope_without_recipients_is_dead_lettered_with_reason(egress, sink: SmtpSink) -> None:
    runtime, probe = egress
    envelope = _envelope(sink, rcpt=[])
    await probe.publish(Publish(stage_queue(SERVICE), envelope, DATA))
    [dead] = await _drain_dead(probe, 1, 10)
    assert dead.headers["x-mailmoat-dead-reason"] == "egress: envelope without recipients"
    assert decode(dead.body)[0].id == envelope.id
    await wait_traced(runtime.trace, envelope.id, "DEADLETTER")  # recorded after the dead-letter publish
    events = await runtime.trace.events(envelope.id)
    assert [(e.event, e.detail) for e in events] == [("DEADLETTER", "egress: envelope without recipients")]
    assert sink.messages == []


@pytest.mark.parametrize("properties", [
    {"headers": {RawText(b"trace\xffparent"): "x"}},
    {"headers": {"x-t": RawTimestamp.of(2**63)}},
    {"message_id": RawText(b"\xff\xfe"), "headers": {"traceparent": "00-1-2-01"}},
    {"headers": {"deep": RawValue.nested_tables(600)}},
], ids=["field-name-not-utf-8", "timestamp-beyond-9999", "message-id-not-utf-8", "tables-nested-600-deep"])
async def test_properties_the_client_library_cannot_read_are_settled(egress, sink: SmtpSink, properties) -> None:
    """pamqp alone raises on these while decoding the delivery, and aiormq then closes the connection:
    the message comes back on the next connection, forever."""
    _, probe = egress
    assert probe.channel is not None
    channel = await probe.channel.get_underlay_channel()
    with raw_values():
        await channel.basic_publish(encode(_envelope(sink), DATA), routing_key=stage_queue(SERVICE),
                                    properties=aiormq.spec.Basic.Properties(**properties))
    await probe.publish(Publish(stage_queue(SERVICE), _envelope(sink), DATA))
    await asyncio.to_thread(sink.wait_for, 2, 15)
    assert await probe.queue_depth(stage_queue(SERVICE)) == 0


async def test_undecodable_body_is_dead_lettered_with_reason_and_traced_by_its_message_id(egress) -> None:
    runtime, probe = egress
    assert probe.channel is not None
    await probe.channel.default_exchange.publish(
        aio_pika.Message(b"MM1\n\x00\x00\x00\x05{oops", message_id="01J0000000000000000000TEST",
                         headers={"traceparent": RawText(b"\xff")}),
        routing_key=stage_queue(SERVICE))
    [dead] = await _drain_dead(probe, 1, 10)
    assert dead.body == b"MM1\n\x00\x00\x00\x05{oops"
    assert dead.headers["x-mailmoat-dead-reason"].startswith("egress: bad envelope")
    assert dead.headers["traceparent"] == repr(b"\xff")  # kept, quoted: the dead letter could be published
    await wait_traced(runtime.trace, "01J0000000000000000000TEST", "DEADLETTER")  # after the dead-letter publish
    [event] = await runtime.trace.events("01J0000000000000000000TEST")
    assert event.event == "DEADLETTER" and event.detail.startswith("egress: bad envelope")


async def test_routing_dead_letters_an_envelope_without_recipients(amqp_url: str, redis_url: str,
                                                                   write_policy: Callable[[str], Path]) -> None:
    from mailmoat_routing.service import make_handler

    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, log_format="text",
                        policy_path=str(write_policy("accepted_domains: [{domain: example.com}]\n")))
    settings.metrics_ports = {}
    probe = Bus(amqp_url)
    await probe.connect()
    assert probe.channel is not None
    for name in (await probe.declare_stage("routing"), await probe.declare_stage("egress"), DEAD_QUEUE):
        await (await probe.channel.get_queue(name)).purge()
    runtime = Runtime("routing", settings)
    await runtime.start()
    await runtime.consume_stage("routing", make_handler(runtime))
    try:
        envelope = Envelope(mail_from="s@out.org", rcpt_to=[], itinerary=["routing", "egress"])
        await probe.publish(Publish(stage_queue("routing"), envelope, DATA))
        [dead] = await _drain_dead(probe, 1, 10)
        assert dead.headers["x-mailmoat-dead-reason"] == "routing: envelope without recipients"
        await wait_traced(runtime.trace, envelope.id, "DEADLETTER")  # recorded after the dead-letter publish
        assert [e.event for e in await runtime.trace.events(envelope.id)] == ["DEADLETTER"]
        assert await probe.queue_depth(stage_queue("egress")) == 0
    finally:
        await probe.close()
        await runtime.shutdown(grace=2)
