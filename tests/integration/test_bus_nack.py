"""A publish the broker nacks is tried again a few times before the nack reaches the caller."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.exceptions import DeliveryError

from mailmoat_platform.bus import Bus, Publish
from mailmoat_platform.models import Envelope

pytestmark = pytest.mark.integration

QUEUE = "mailmoat.nacktest"


def _item(n: int) -> Publish:
    return Publish(QUEUE, Envelope(id=f"nack-{n}", mail_from="a@x.test", rcpt_to=["b@y.test"],
                                   itinerary=["routing"]), f"Subject: {n}\r\n\r\nbody\r\n".encode())


async def _full_queue(amqp_url: str) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue, Bus, int]:
    """A quorum queue that holds one message and refuses (nacks) publishes beyond it, already full."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    channel = await connection.channel()
    queue = await channel.declare_queue(QUEUE, durable=True, arguments={
        "x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"})
    held = 0
    for n in range(5):  # a quorum queue refuses publishes once it holds more than its limit
        try:
            await channel.default_exchange.publish(aio_pika.Message(f"fill-{n}".encode()), routing_key=QUEUE)
        except DeliveryError:
            break
        held += 1
    assert 1 <= held < 5, "the queue never refused a publish"
    bus = Bus(amqp_url)
    await bus.connect()
    bus._declared.add(QUEUE)  # declared above, with arguments of its own
    return connection, queue, bus, held


async def test_a_nack_that_clears_is_retried_into_the_queue(amqp_url: str) -> None:
    connection, queue, bus, held = await _full_queue(amqp_url)
    try:
        second = asyncio.create_task(bus.publish(_item(2), timeout=10))
        await asyncio.sleep(0.15)  # the first try was refused by now; make room
        assert not second.done()  # refused, waiting to try again
        bodies = []
        for _ in range(held):  # make room
            got = await queue.get(timeout=5)
            assert got is not None
            bodies.append(got.body)
            await got.ack()
        await asyncio.wait_for(second, 10)
        got = await queue.get(timeout=5)
        assert got is not None and b"nack-2" in got.body
        await got.ack()
        assert bodies == [f"fill-{n}".encode() for n in range(held)]
    finally:
        await bus.close()
        await connection.close()


async def test_a_lasting_nack_is_raised(amqp_url: str) -> None:
    connection, queue, bus, held = await _full_queue(amqp_url)
    try:
        with pytest.raises(DeliveryError):
            await asyncio.wait_for(bus.publish(_item(3), timeout=10), 10)
        assert (await queue.declare()).message_count == held
    finally:
        await bus.close()
        await connection.close()
