"""The supervisor's look at the stage queues, against RabbitMQ: messages waiting and consumers of each
queue, a queue never declared as empty, no answer when the broker cannot be reached."""

from __future__ import annotations

import aiormq
import pytest

from mailmoat_cli.supervisor import _queue_facts, queue_facts, stranded
from tests.support.infra import free_port

pytestmark = pytest.mark.integration


async def test_waiting_messages_and_consumers_of_each_queue(amqp_url: str) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in ("mailmoat.antivirus", "mailmoat.routing"):
            await channel.queue_declare(name, durable=True)
        for _ in range(3):
            await channel.basic_publish(b"x", routing_key="mailmoat.antivirus")
        consumer = await connection.channel()
        await consumer.basic_consume("mailmoat.routing", lambda message: None)
        facts = await _queue_facts(amqp_url, ["mailmoat.antivirus", "mailmoat.routing", "mailmoat.never"])
    finally:
        await connection.close()
    assert facts == {"mailmoat.antivirus": (3, 0), "mailmoat.routing": (0, 1), "mailmoat.never": (0, 0)}
    assert stranded(facts) == {"mailmoat.antivirus": 3}


def test_no_answer_without_a_broker() -> None:
    assert queue_facts(f"amqp://guest:guest@127.0.0.1:{free_port()}/", ["mailmoat.antivirus"]) is None
