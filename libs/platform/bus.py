"""The message bus on aio-pika: topology, framing, publish with confirms, consume with manual ack.

A message on the bus is one AMQP message whose body is a frame::

    b"MM1\\n" | envelope length (4 bytes, big-endian) | envelope JSON | raw message bytes

The raw bytes are never re-encoded, so they leave egress exactly as ingress received them (after
the header lines that stages prepend). Keeping the envelope in the body rather than in an AMQP
header keeps any recipient list clear of the broker's frame size (docs/decisions/002).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import DeliveryError
from aiormq.abc import DeliveredMessage

from mailmoat_mail.headers import PUBLISHED
from mailmoat_platform import amqpdecode
from mailmoat_platform.amqpio import CoalescingTransportFactory
from mailmoat_platform.models import Envelope
from mailmoat_platform.stages import QUEUE_PREFIX as PREFIX
from mailmoat_platform.stages import stage_queue

log = logging.getLogger(__name__)

amqpdecode.install()  # no delivery's properties can break the connection that reads them

MAGIC = b"MM1\n"
DEAD_QUEUE = "mailmoat.dead"
DEAD_EXCHANGE = "mailmoat.dlx"
DEFAULT_DELIVERY_LIMIT = 5
PERSISTENT = 2
CONTENT_TYPE = "application/x-mailmoat-frame"
NACK_RETRY_DELAYS = (0.1, 0.25, 0.5)
"""Pauses before publishing a message the broker nacked again; after the last, the nack is raised."""


class FrameError(ValueError):
    """A body that is not a mailmoat frame."""


class Unroutable(RuntimeError):
    """The broker returned a published message: no queue took it."""


def encode(envelope: Envelope, data: bytes, prefix: bytes = b"") -> bytes:
    """The frame of a message: the envelope's JSON, then ``prefix + data`` (joined only here)."""
    head = envelope.model_dump_json().encode()
    return b"".join((MAGIC, len(head).to_bytes(4, "big"), head, prefix, data))


def decode(body: bytes) -> tuple[Envelope, bytes]:
    envelope, data, _ = _split(body)
    return envelope, data


def _split(body: bytes) -> tuple[Envelope, bytes, int]:
    """The envelope and message bytes of a frame, and where the bytes start."""
    if not body.startswith(MAGIC) or len(body) < 8:
        raise FrameError("not a mailmoat frame")
    size = int.from_bytes(body[4:8], "big")
    if 8 + size > len(body):
        raise FrameError("truncated envelope")
    try:
        envelope = Envelope.model_validate_json(body[8 : 8 + size])
    except ValueError as exc:
        raise FrameError(f"bad envelope: {exc}") from exc
    if "id" not in envelope.model_fields_set or not envelope.itinerary:
        raise FrameError("envelope without id or itinerary")
    return envelope, body[8 + size :], 8 + size


def retry_queue(target_stage: str, delay: int) -> str:
    return f"{PREFIX}{target_stage}.retry.{delay}s"


@dataclass
class Publish:
    """One message a stage wants published: to a queue, with its envelope and bytes.

    ``prefix`` (a stage's report header fields) goes before ``data``: the two are joined only in the
    frame, so that a stage does not hold one more copy of every message while it waits for the confirms.
    """

    queue: str
    envelope: Envelope
    data: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    prefix: bytes = b""

    @property
    def message(self) -> bytes:
        """The message bytes as published: ``prefix + data``."""
        return self.prefix + self.data if self.prefix else self.data


class Delivery:
    """One delivered message, as the stages read it: a thin view of aiormq's ``DeliveredMessage``.

    It stands in for aio-pika's ``IncomingMessage`` (which copies every property into an object of
    its own and runs the consumer in a second task) and offers what the runtime uses of it. Once
    ``decode`` has read the body, the delivery keeps the envelope and the message bytes instead of the
    body (a copy less of every message in flight while the stage works on it and waits for its confirms).
    """

    __slots__ = ("_body", "_frame", "_head", "channel", "delivery_tag", "headers", "message_id", "redelivered")

    def __init__(self, message: DeliveredMessage):
        properties = message.header.properties
        self._body: bytes | None = message.body
        self._frame: tuple[Envelope, bytes] | None = None
        self._head = b""
        self.headers: dict[str, Any] = properties.headers or {}
        self.message_id: str | None = properties.message_id
        self.delivery_tag: int | None = message.delivery_tag
        self.redelivered: bool | None = message.redelivered
        self.channel: aiormq.abc.AbstractChannel = message.channel

    @property
    def body(self) -> bytes:
        """The body as delivered (put together again from its head and message bytes once decoded)."""
        if self._body is not None:
            return self._body
        return self._head + self._frame[1] if self._frame is not None else b""

    def decode(self) -> tuple[Envelope, bytes]:
        """The envelope and message bytes of the body (``FrameError`` when it is no frame); the body
        itself is let go, its head (the magic, the length and the envelope's JSON) kept."""
        if self._frame is None:
            body = self.body
            envelope, data, start = _split(body)
            self._head, self._frame, self._body = body[:start], (envelope, data), None
            return envelope, data
        return self._frame

    async def nack(self, requeue: bool = True) -> None:
        if self.delivery_tag is not None:
            await self.channel.basic_nack(self.delivery_tag, requeue=requeue)


DeliveryCallback = Callable[[Delivery], Awaitable[None]]


async def _deliver(callback: DeliveryCallback, message: DeliveredMessage) -> None:
    delivery = Delivery(message)
    del message  # the delivery holds what is needed of it, and lets the body go once decoded
    await callback(delivery)


class _Queue(aio_pika.Queue):
    """``Queue.consume`` handing the callback a ``Delivery``, in aiormq's own task for the delivery."""

    async def consume(  # type: ignore[override]
        self, callback: DeliveryCallback, no_ack: bool = False, exclusive: bool = False,
        arguments: Any = None, consumer_tag: str | None = None, timeout: float | None = None,
    ) -> str:
        channel = await self.channel.get_underlay_channel()
        result = await channel.basic_consume(
            queue=self.name, consumer_callback=partial(_deliver, callback), exclusive=exclusive,
            no_ack=no_ack, arguments=arguments, consumer_tag=consumer_tag, timeout=timeout,
        )
        if result.consumer_tag is None:
            raise RuntimeError("the broker gave no consumer tag")
        return result.consumer_tag


class _RobustQueue(aio_pika.RobustQueue, _Queue):
    """aio-pika's robust queue (consumers restored after a reconnect) consuming with ``Delivery``."""


class _Channel(aio_pika.RobustChannel):
    QUEUE_CLASS = _RobustQueue


class _Connection(aio_pika.RobustConnection):
    """aio-pika's robust connection over a socket that sends each event-loop turn's frames at once."""

    CHANNEL_CLASS = _Channel

    @classmethod
    def _parse_parameters(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**super()._parse_parameters(kwargs), "transport_factory": CoalescingTransportFactory()}


class Bus:
    """One robust connection with one confirming channel; declares what it uses, once."""

    def __init__(self, url: str, *, prefetch: int = 32, delivery_limit: int = DEFAULT_DELIVERY_LIMIT):
        self.url = url
        self.prefetch = prefetch
        self.delivery_limit = delivery_limit
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractRobustChannel | None = None
        self._declared: set[str] = set()
        self._queues: dict[str, AbstractRobustQueue] = {}
        self._consumers: dict[str, str] = {}

    async def connect(self, timeout: float = 10.0) -> None:
        self.connection = await aio_pika.connect_robust(self.url, timeout=timeout, connection_class=_Connection)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=self.prefetch)
        await self._declare_dead()

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    @property
    def connected(self) -> bool:
        return (
            self.connection is not None
            and not self.connection.is_closed
            and self.channel is not None
            and not self.channel.is_closed
        )

    def consuming(self, queues: list[str]) -> bool:
        """Readiness: connected and a consumer registered on every queue named."""
        return self.connected and all(q in self._consumers for q in queues)

    def _chan(self) -> AbstractRobustChannel:
        if self.channel is None:
            raise RuntimeError("bus not connected")
        return self.channel

    async def _declare_dead(self) -> None:
        channel = self._chan()
        exchange = await channel.declare_exchange(DEAD_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange)
        self._declared.add(DEAD_QUEUE)

    async def declare_stage(self, stage: str) -> str:
        """Declare the durable quorum queue of a stage (delivery limit, dead-lettering)."""
        name = stage_queue(stage)
        if name not in self._declared:
            self._queues[name] = await self._chan().declare_queue(
                name,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-exchange": DEAD_EXCHANGE,
                },
            )
            self._declared.add(name)
        return name

    async def declare_retry(self, target_stage: str, delay: int) -> str:
        """Declare a delay queue whose messages return to ``target_stage`` after ``delay`` seconds."""
        name = retry_queue(target_stage, delay)
        if name not in self._declared:
            await self._chan().declare_queue(
                name,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay * 1000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": stage_queue(target_stage),
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            self._declared.add(name)
        return name

    async def publish(self, item: Publish, *, timeout: float | None = 30.0) -> None:
        """Publish persistently and wait for the broker's confirm (raises on timeout, or on a nack
        that repeats after ``NACK_RETRY_DELAYS``).

        A stage queue not declared yet by this process is declared first; delay queues must be
        declared with ``declare_retry`` (they carry arguments only their owner knows).
        """
        if item.queue not in self._declared:
            name = item.queue.removeprefix(PREFIX)
            if ".retry." in name or not item.queue.startswith(PREFIX):
                raise ValueError(f"publish to undeclared queue {item.queue!r}")
            await self.declare_stage(name)
        properties = aiormq.spec.Basic.Properties(
            delivery_mode=PERSISTENT,
            message_id=item.envelope.id,
            content_type=CONTENT_TYPE,
            headers={"x-mailmoat-id": item.envelope.id, **item.headers, PUBLISHED: int(time.time() * 1000)},
        )
        body = encode(item.envelope, item.data, item.prefix)
        await self._send_confirmed(body, item.queue, properties, timeout, item.envelope.id)

    async def _send_confirmed(self, body: bytes, queue: str, properties: aiormq.spec.Basic.Properties,
                              timeout: float | None, what: str) -> None:
        for delay in (*NACK_RETRY_DELAYS, None):
            try:
                await self._send(body, queue, properties, timeout)
                return
            except DeliveryError as exc:
                # The broker refused it for now (a quorum queue between leaders, a full queue): try
                # again shortly; a copy the broker took after all is deduplicated downstream.
                if delay is None:
                    raise
                log.warning("broker refused %s on %s (%s); publishing again in %.2fs",
                            what, queue, exc, delay, extra={"message_id": what})
                await asyncio.sleep(delay)

    async def declare_queue(self, name: str, arguments: dict[str, Any]) -> str:
        """Declare a durable queue that is not a stage's (the trace queue), once; consumable afterwards."""
        if name not in self._declared:
            self._queues[name] = await self._chan().declare_queue(name, durable=True, arguments=arguments)
            self._declared.add(name)
        return name

    async def publish_body(self, queue: str, body: bytes, *, headers: dict[str, Any] | None = None,
                           content_type: str | None = None, timeout: float | None = 30.0) -> None:
        """Publish a body that is not a frame (trace records) to a queue declared already, persistently,
        and wait for the broker's confirm (nacks retried as ``publish`` retries them)."""
        if queue not in self._declared:
            raise ValueError(f"publish to undeclared queue {queue!r}")
        properties = aiormq.spec.Basic.Properties(
            delivery_mode=PERSISTENT, content_type=content_type,
            headers={**(headers or {}), PUBLISHED: int(time.time() * 1000)},
        )
        await self._send_confirmed(body, queue, properties, timeout, queue)

    async def _send(self, body: bytes, queue: str, properties: aiormq.spec.Basic.Properties,
                    timeout: float | None) -> None:
        """One confirmed, mandatory publish to ``queue`` on the channel's current connection.

        Straight to aiormq (aio-pika's ``Message`` and ``Exchange.publish`` add per-message objects
        and nothing this bus uses). A message the broker could not route (its queue was deleted) is
        returned, which raises ``Unroutable`` rather than counting as confirmed.
        """
        channel = self._chan()
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        underlay = await channel.get_underlay_channel()
        result = await underlay.basic_publish(
            body, exchange="", routing_key=queue, properties=properties, mandatory=True, timeout=timeout
        )
        if isinstance(result, DeliveredMessage):
            raise Unroutable(f"the broker returned the message: no queue {queue!r}")

    async def publish_many(self, items: list[Publish], *, timeout: float | None = 30.0) -> None:
        """Publish all, confirms overlapping; raises if any is not confirmed."""
        if len(items) == 1:
            await self.publish(items[0], timeout=timeout)
        elif items:
            await asyncio.gather(*(self.publish(i, timeout=timeout) for i in items))

    async def publish_raw_dead(self, body: bytes, reason: str, headers: dict[str, Any] | None = None) -> None:
        """Put a body the stage cannot handle on the dead-letter queue, with the reason."""
        properties = aiormq.spec.Basic.Properties(
            delivery_mode=PERSISTENT, headers={**(headers or {}), "x-mailmoat-dead-reason": reason[:1000]}
        )
        await self._send(body, DEAD_QUEUE, properties, 30)

    async def consume(self, queue_name: str, callback: DeliveryCallback) -> None:
        # A queue object from declare_queue is one the robust channel restores, with its
        # consumers, after a reconnect (get_queue(ensure=False) would not be).
        queue = self._queues.get(queue_name)
        if queue is None:
            raise RuntimeError(f"consume from {queue_name!r} before declaring it")
        tag = await queue.consume(callback, no_ack=False)
        self._consumers[queue_name] = tag

    async def stop_consuming(self) -> None:
        """Cancel every consumer of this process (messages in flight still finish and ack)."""
        for queue_name, tag in list(self._consumers.items()):
            queue = self._queues.get(queue_name)
            if queue is not None and self.connected:
                await queue.cancel(tag)
            del self._consumers[queue_name]

    async def queue_depth(self, queue_name: str) -> int:
        """Messages ready in a queue (passive declare)."""
        channel = await self._require_connection().channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    def _require_connection(self) -> AbstractRobustConnection:
        if self.connection is None:
            raise RuntimeError("bus not connected")
        return self.connection
