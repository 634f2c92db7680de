"""Gathered acks against the real broker: exact multiple-acks, never an ack for an unfinished message."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from mailmoat_platform.acks import AckBatcher
from mailmoat_platform.bus import Bus

pytestmark = pytest.mark.integration


async def _setup(amqp_url: str, count: int):
    connection = await aio_pika.connect(amqp_url, timeout=10)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    queue = await channel.declare_queue("mailmoat.test.acks", durable=True, arguments={"x-queue-type": "quorum"})
    for n in range(count):
        await channel.default_exchange.publish(aio_pika.Message(str(n).encode()), routing_key=queue.name)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    arrived = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got.append(message)
        if len(got) == count:
            arrived.set()

    await queue.consume(on_message, no_ack=False)
    await asyncio.wait_for(arrived.wait(), 10)
    return connection, channel, queue, got


async def _unacked(amqp_url: str, queue_name: str) -> int:
    """Messages in the queue, seen from a second connection."""
    bus = Bus(amqp_url)
    await bus.connect()
    try:
        return await bus.queue_depth(queue_name)
    finally:
        await bus.close()


async def test_out_of_order_acks_settle_exactly_the_finished_messages(amqp_url: str) -> None:
    connection, channel, queue, got = await _setup(amqp_url, 10)
    acks = AckBatcher()
    try:
        # finished out of order, message 3 (tag 4) never: everything else acked, some in one turn
        for message in [got[1], got[0], got[2]]:
            acks.ack(message)
        await acks.drain()
        for message in [got[9], got[5], got[4], got[6], got[8], got[7]]:
            acks.ack(message)
        await acks.drain()
        await acks.nack(got[3])  # requeued: redelivered to the same consumer, with a new tag
        for _ in range(100):
            if len(got) == 11:
                break
            await asyncio.sleep(0.05)
        assert len(got) == 11 and got[10].body == b"3" and got[10].redelivered
        assert not channel.is_closed  # no "unknown delivery tag" from the broker
        acks.ack(got[10])
        await acks.drain()
        await asyncio.sleep(0.3)
        assert not channel.is_closed
    finally:
        await connection.close()
    assert await _unacked(amqp_url, queue.name) == 0


async def test_an_unfinished_message_is_redelivered_after_a_crash(amqp_url: str) -> None:
    connection, channel, queue, got = await _setup(amqp_url, 5)
    acks = AckBatcher()
    for message in got[:2] + got[3:]:  # message 2 still being handled when the process dies
        acks.ack(message)
    await acks.drain()
    await asyncio.sleep(0.2)
    await connection.close()
    assert await _unacked(amqp_url, queue.name) == 1
    again = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await again.channel()
        q = await channel.declare_queue(queue.name, passive=True)
        message = await q.get(timeout=5)
        assert message is not None and message.body == b"2"
        await message.ack()
    finally:
        await again.close()
