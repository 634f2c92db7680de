"""Queue facts from the broker for tests: messages ready and consumers of a queue (passive declare)."""

from __future__ import annotations

import asyncio

import aio_pika


async def _stats(amqp_url: str, queue: str) -> tuple[int, int] | None:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None  # no such queue
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    finally:
        await connection.close()


def queue_stats(amqp_url: str, queue: str) -> tuple[int, int] | None:
    """``(messages ready, consumers)`` of ``queue``, or None when it does not exist."""
    return asyncio.run(_stats(amqp_url, queue))


def dead_letters(amqp_url: str) -> int:
    """Messages in ``mailmoat.dead`` (0 when the queue was never declared)."""
    stats = queue_stats(amqp_url, "mailmoat.dead")
    return stats[0] if stats else 0
