"""Publishing and consuming on the bus against the real broker: what a stage sees of a delivery."""

from __future__ import annotations

import asyncio

import pytest

from mailmoat_platform.bus import Bus, Delivery, Publish, Unroutable, decode
from mailmoat_platform.models import Envelope

pytestmark = pytest.mark.integration

STAGE = "bustest"


def _item(n: int) -> Publish:
    envelope = Envelope(id=f"bus-{n}", mail_from="a@x.test", rcpt_to=["b@y.test"], itinerary=[STAGE])
    return Publish("mailmoat." + STAGE, envelope, f"Subject: {n}\r\n\r\nbody\r\n".encode(), {"x-test": str(n)})


async def _bus(amqp_url: str) -> Bus:
    bus = Bus(amqp_url)
    await bus.connect()
    queue = await bus.declare_stage(STAGE)
    assert bus.channel is not None
    await (await bus.channel.get_queue(queue)).purge()
    return bus


async def test_a_delivery_carries_the_frame_headers_and_id_and_a_nack_requeues_it(amqp_url: str) -> None:
    bus = await _bus(amqp_url)
    got: list[Delivery] = []
    arrived = asyncio.Event()

    async def on_message(delivery: Delivery) -> None:
        got.append(delivery)
        arrived.set()

    try:
        await bus.publish(_item(1))
        await bus.consume("mailmoat." + STAGE, on_message)
        await asyncio.wait_for(arrived.wait(), 10)
        first = got[0]
        envelope, data = decode(first.body)
        assert (envelope.id, data) == ("bus-1", b"Subject: 1\r\n\r\nbody\r\n")
        assert first.message_id == "bus-1"
        assert first.headers["x-mailmoat-id"] == "bus-1" and first.headers["x-test"] == "1"
        assert first.redelivered is False
        arrived.clear()
        await first.nack(requeue=True)
        await asyncio.wait_for(arrived.wait(), 10)
        again = got[1]
        assert again.body == first.body and again.redelivered is True
        assert again.delivery_tag != first.delivery_tag
        await again.channel.basic_ack(again.delivery_tag)
    finally:
        await bus.close()


async def test_a_publish_no_queue_takes_raises_instead_of_counting_as_confirmed(amqp_url: str) -> None:
    bus = await _bus(amqp_url)
    try:
        assert bus.channel is not None
        await (await bus.channel.get_queue("mailmoat." + STAGE)).delete(if_unused=False, if_empty=False)
        # The bus still thinks the queue exists (an operator deleted it): the broker returns the message.
        with pytest.raises(Unroutable):
            await bus.publish(_item(2))
    finally:
        await bus.close()
