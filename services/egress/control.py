"""Deferred copies acted on from the console: retry now, bounce with a DSN, delete.

The console publishes a ``Control`` to ``mailmoat.egress.control``. Egress marks the copy's deferral record
with the action, then takes the copy out of its delay queue (``basic.get`` down the queue until it is found,
the others handed back) and publishes it to ``mailmoat.egress``, where ``Egress.handle`` applies the action:
``retry`` is an ordinary attempt, ``delete`` drops the copy (traced ``DELETE``), ``bounce`` fails its
recipients with a DSN to the sender. A copy not in its delay queue (an attempt in flight) gets the action when
it next arrives; one delivered meanwhile has no record left and nothing happens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import aio_pika
from aio_pika.abc import AbstractChannel
from prometheus_client import Counter

from mailmoat_egress.decide import Outcome
from mailmoat_mail.dsn import Failure, build_dsn
from mailmoat_platform.bus import Bus, Delivery, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope, TraceEvent, utcnow
from mailmoat_records.deferred import CONTROL_ARGUMENTS, CONTROL_QUEUE, Control, DeferredStore, deferral_of

log = logging.getLogger(__name__)

RETRY_PAUSE = 1.0
"""Seconds before a control message that failed (Redis or the broker down) goes back to its queue."""
SCAN_LIMIT = 20_000
"""Messages looked at in a delay queue for one copy, at most."""
BOUNCE_STATUS = "5.0.0"

CONTROLS = Counter("mailmoat_deferred_controls_total", "Actions on deferred copies asked for, by action and outcome.",
                   ["action", "outcome"])


def bounce_failures(envelope: Envelope, by: str) -> list[Failure]:
    """The failures of a copy bounced by hand: each recipient still deferred, with the last error."""
    diagnostic = f"delivery cancelled by {by or 'an administrator'}"
    if envelope.last_error:
        diagnostic += f"; last error: {envelope.last_error}"
    return [Failure(r, BOUNCE_STATUS, diagnostic[:1000]) for r in envelope.rcpt_to]


def bounce_dsn(envelope: Envelope, data: bytes, failures: list[Failure], now: datetime,
               hostname: str) -> tuple[Envelope, bytes] | None:
    return build_dsn(envelope, data, failures, now, hostname)


async def take_from_delay_queue(channel: AbstractChannel, queue: str, message_id: str, route: str,
                                limit: int = SCAN_LIMIT) -> tuple[aio_pika.abc.AbstractIncomingMessage, Envelope,
                                                                  bytes] | None:
    """The copy (message id, route) from a delay queue, unacked (None: not there); the messages looked at
    before it are handed back."""
    q = await channel.get_queue(queue, ensure=False)
    seen: list[aio_pika.abc.AbstractIncomingMessage] = []
    try:
        for _ in range(limit):
            message = await q.get(no_ack=False, fail=False)
            if message is None:
                return None
            if message.message_id == message_id:
                try:
                    envelope, data = decode(message.body)
                except ValueError:
                    envelope = None
                if envelope is not None and envelope.route is not None and envelope.route.name == route:
                    return message, envelope, data
            seen.append(message)
        return None
    finally:
        for message in seen:
            await message.nack(requeue=True)


class ControlConsumer:
    """Consumes ``mailmoat.egress.control`` on the egress bus; scans delay queues on a channel of its own."""

    def __init__(self, bus: Bus, store_of: Callable[[], DeferredStore], service: str = "egress"):
        self.bus = bus
        self.store_of = store_of
        self.service = service
        self._scan: AbstractChannel | None = None
        self._scanning = asyncio.Lock()
        """One search of the delay queues at a time (two would take each other's copies out of sight)."""

    @property
    def store(self) -> DeferredStore:
        return self.store_of()

    async def start(self) -> None:
        await self.bus.declare_queue(CONTROL_QUEUE, CONTROL_ARGUMENTS)
        await self.bus.consume(CONTROL_QUEUE, self.on_message)

    async def _channel(self) -> AbstractChannel:
        if self._scan is None or self._scan.is_closed:
            assert self.bus.connection is not None
            self._scan = await self.bus.connection.channel(publisher_confirms=False)
        return self._scan

    async def on_message(self, message: Delivery) -> None:
        try:
            control = Control.decode(message.body)
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed control message")
            CONTROLS.labels("-", "malformed").inc()
            await message.channel.basic_ack(message.delivery_tag)
            return
        try:
            outcome = await self.apply(control)
        except Exception as exc:  # Redis or the broker failed: the control message comes again
            log.warning("control %s of %s failed: %s: %s", control.action, control.id, type(exc).__name__, exc)
            await asyncio.sleep(RETRY_PAUSE)
            await message.nack(requeue=True)
            return
        CONTROLS.labels(control.action, outcome).inc()
        await message.channel.basic_ack(message.delivery_tag)

    async def apply(self, control: Control) -> str:
        """Mark the record and bring the copy back to egress: ``taken`` (out of its delay queue), ``marked``
        (not found there: applied when it next arrives) or ``gone`` (no longer deferred)."""
        action = control.action if control.action == "retry" else f"{control.action}:{control.by}"
        if not await self.store.mark(control.id, control.route, action):
            return "gone"
        deferral = await self.store.get(control.id, control.route)
        if deferral is None:
            return "gone"
        async with self._scanning:
            try:
                found = await take_from_delay_queue(await self._channel(), deferral.queue, control.id, control.route)
            except Exception as exc:  # the delay queue cannot be read (gone, no permission): applied on arrival
                log.warning("control %s: %s cannot be searched: %s: %s", control.action, deferral.queue,
                            type(exc).__name__, exc, extra={"message_id": control.id})
                self._scan = None
                found = None
        if found is None:
            log.info("control %s: %s not in %s (in flight); applied when it arrives", control.action, control.id,
                     deferral.queue, extra={"message_id": control.id})
            return "marked"
        message, envelope, data = found
        try:
            await self.bus.publish(Publish(stage_queue(self.service), envelope, data))
        except BaseException:
            await message.nack(requeue=True)
            raise
        await message.ack()
        log.info("control %s: %s taken out of %s", control.action, control.id, deferral.queue,
                 extra={"message_id": control.id})
        return "taken"


class Deferrals:
    """Egress's side of the read model: records each deferral, clears it when the copy is done, and applies a
    pending action when a copy comes back (``runtime``: egress's runtime; ``events``: the trace events of an
    outcome, as ``Egress._events``)."""

    def __init__(self, runtime, events, service: str = "egress"):
        self.runtime = runtime
        self.events = events
        self.service = service

    @property
    def store(self) -> DeferredStore:
        return DeferredStore(self.runtime.redis)

    async def after_attempt(self, envelope: Envelope, retry, queue: str | None) -> None:
        """Record the retry copy (``retry``: decide's ``Retry``) or clear the copy's record: a failure here
        leaves the page behind, never the mail."""
        route = envelope.route.name if envelope.route else "-"
        try:
            if retry is not None and queue is not None:
                await self.store.record(deferral_of(retry.envelope, queue, retry.delay), retry.delay)
            elif envelope.attempts:
                await self.store.clear(envelope.id, route)
        except Exception as exc:  # Redis failing: the delivery went on, only the queues page lags
            log.warning("deferral record of %s not written: %s: %s", envelope.id, type(exc).__name__, exc,
                        extra={"message_id": envelope.id})

    async def on_arrival(self, envelope: Envelope, data: bytes) -> list[Publish] | None:
        """A copy back from a delay queue with an action pending: the outputs of a bounce or delete (None: an
        ordinary attempt, a ``retry`` included)."""
        route = envelope.route.name if envelope.route else "-"
        try:
            action = await self.store.action(envelope.id, route)
        except Exception as exc:  # no record to read: an ordinary attempt
            log.warning("deferral record of %s not read: %s", envelope.id, exc, extra={"message_id": envelope.id})
            return None
        if not action:
            return None
        kind, _, by = action.partition(":")
        if kind == "retry":
            await self.store.unmark(envelope.id, route)
            return None
        if kind == "delete":
            await self.runtime.trace.record(TraceEvent(
                event="DELETE", message_id=envelope.id, service=self.service, recipients=envelope.rcpt_to,
                detail=f"deleted from the deferred queue by {by or 'an administrator'}",
                data={"route": route, "attempts": envelope.attempts}))
            await self.store.clear(envelope.id, route)
            return []
        policy = self.runtime.policy.current
        failures = bounce_failures(envelope, by)
        dsn = bounce_dsn(envelope, data, failures, utcnow(), policy.organization.hostname)
        outcome = Outcome(failed=failures, dsn=dsn)
        await self.runtime.trace.record(self.events(envelope, outcome))
        outputs: list[Publish] = []
        if dsn is not None:
            dsn_envelope, dsn_data = dsn
            outputs.append(Publish(await self.runtime.bus.declare_stage("routing"), dsn_envelope, dsn_data))
            await self.runtime.trace.record(
                TraceEvent(event="DSN", message_id=dsn_envelope.id, service=self.service,
                           recipients=dsn_envelope.rcpt_to, detail=f"delivery status notification about {envelope.id}",
                           data={"parent_id": envelope.id}),
                sender="", recipients=dsn_envelope.rcpt_to, message_id_header=dsn_envelope.message_id_header)
        await self.store.clear(envelope.id, route)
        return outputs
