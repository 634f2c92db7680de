"""Egress service wiring: consume mailmoat.egress, deduplicate, deliver, then retry, bounce or finish.

Delivery is at least once (docs/decisions/007-delivery-guarantees.md). Per copy (message id, route)
Redis holds the recipients already delivered and a delivery lock (``claims``). The recipients a
transaction delivered are recorded the moment its reply arrives, before anything else is written,
so a copy redelivered after a crash between that record and the broker's ack goes only to the
recipients still missing. A crash between the next hop's ``250`` and that record (RFC 1047's window)
cannot be closed: that copy is sent again, with the same bytes and so the same ``Message-ID``, which
the next hop's duplicate suppression can use.

A copy whose lock another consumer holds (the same frame published twice, or the lock of a consumer
that died) waits in a delay queue as long as the lock still lives, then comes back: no hot loop; a
lock whose owner is known dead (a process of this host that no longer runs) is taken over at once. On
SIGTERM the runtime stops consuming; deliveries already in a transaction finish (the runtime's grace),
and copies still waiting for a session are handed back to the queue unsent.

Redis work per delivery: one Lua script takes the lock and reads the dedupe set, one records the
recipients delivered and releases the lock, one trace write; all three are group-committed
(``redisbatch``) with the calls of the other deliveries in flight, each awaited before going on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from prometheus_client import Counter, Histogram

from mailmoat_egress.claims import LOCK_TTL, Busy, Claim, Claims, StoreUnavailable, copy_keys
from mailmoat_egress.control import ControlConsumer, Deferrals
from mailmoat_egress.danedelivery import Dane, DanePlan
from mailmoat_egress.decide import Outcome, decide, lock_wait
from mailmoat_egress.delivery import Deliverer, Message, NotStarted, RcptResult, SessionPool, Timeouts, make_result
from mailmoat_egress.stsdelivery import MtaSts, StsPlan
from mailmoat_egress.targets import NoRoute, targets_for
from mailmoat_egress.tls import ca_file
from mailmoat_egress.tlsreport import MARK as TLSRPT_MARK
from mailmoat_egress.tlsrptsend import TlsReporter, routing_publisher
from mailmoat_platform.bus import DEAD_QUEUE, Publish, stage_queue
from mailmoat_platform.health import transaction_bound
from mailmoat_platform.models import Envelope, TraceEvent, utcnow
from mailmoat_platform.runtime import Runtime, Transient
from mailmoat_platform.settings import Settings

SERVICE = "egress"

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "mailmoat_deliveries_total",
    "Recipients by delivery result and destination (a named route or connector, or ``mx``).",
    ["result", "destination"],
)
DELIVERY_SECONDS = Histogram(
    "mailmoat_delivery_seconds", "Time of one delivery attempt (look-up, session, transaction).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ACCEPT_TO_DELIVERY = Histogram(
    "mailmoat_accept_to_delivery_seconds",
    "Time from a message's acceptance at ingress to the delivery of each recipient's copy (retries, "
    "quarantine holds and releases included), by destination kind (``mx`` or ``smarthost``).",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 43200, 86400, 259200, 432000),
)
RETRIES = Counter("mailmoat_delivery_retries_total", "Copies sent to a retry queue.")
DEFERRED_AGE = Histogram(
    "mailmoat_deferred_age_seconds",
    "Age (since it was received) of each copy sent to a retry queue: how old deferred mail gets.",
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400, 172800),
)
LOCK_WAITS = Counter(
    "mailmoat_delivery_lock_waits_total",
    "Copies sent to wait in a delay queue because another consumer held their delivery lock.",
)
HANDED_BACK = Counter(
    "mailmoat_delivery_handed_back_total",
    "Copies returned unsent to the egress queue because the process was stopping.",
)


def dedupe_key(envelope: Envelope) -> str:
    return copy_keys(envelope)[0]


def lock_key(envelope: Envelope) -> str:
    return copy_keys(envelope)[1]


def destination_label(envelope: Envelope) -> str:
    """Metric label of a copy's destination: the route's name for smart hosts and connectors, ``mx``
    for MX delivery (one label for every recipient domain keeps the series count bounded)."""
    route = envelope.route
    if route is None:
        return "none"
    return "mx" if route.kind == "mx" else route.name


def destination_kind(envelope: Envelope) -> str:
    """Metric label of a copy's kind of destination: ``mx`` or ``smarthost`` (routes and connectors)."""
    return envelope.route.kind if envelope.route is not None else "none"


class Egress:
    """The handler, its session pool and its delivery claims."""

    def __init__(self, runtime: Runtime, pool: SessionPool | None = None, *, lock_ttl: float = LOCK_TTL):
        self.runtime = runtime
        policy = runtime.policy.current
        self.pool = pool or SessionPool(local_hostname=policy.organization.hostname, cafile=ca_file())
        self.deliverer = Deliverer(self.pool, stopping=lambda: bool(getattr(runtime, "stopping", False)))
        self.claims = Claims(runtime.scripts, lambda: runtime.redis, ttl=lock_ttl)
        self.mta_sts = MtaSts(lambda: runtime.redis, ca_file())
        self.dane = Dane(lambda: runtime.redis)
        self.deferrals = Deferrals(runtime, self._events, SERVICE)
        # Readiness: no delivery without the dedupe store; a delivery held longer than a transaction is stuck.
        runtime.require_redis()
        runtime.stall_after = lambda: transaction_bound(runtime.policy.current.delivery.connect_timeout,
                                                        runtime.policy.current.delivery.command_timeout)

    # --- delivery -------------------------------------------------------------------------------

    async def attempt(self, envelope: Envelope, data: bytes, recipients: list[str]) -> list[RcptResult]:
        """One delivery attempt for ``recipients``; every recipient gets a result."""
        policy = self.runtime.policy.current
        route = envelope.route
        assert route is not None
        # A TLS report goes out despite TLS failures and is not reported on (RFC 8460 5.3).
        report_mail = TLSRPT_MARK in envelope.verdicts
        dane = DanePlan() if report_mail else await self.dane.plan(route, policy)
        # DANE takes precedence over MTA-STS where both are published (RFC 8461 2).
        sts = StsPlan() if report_mail or dane.active else await self.mta_sts.plan(route, policy)
        try:
            dane.check()
            targets = dane.apply(await targets_for(route, policy, sts.allow))
        except NoRoute as exc:
            results = [make_result(r, exc.code, exc.message) for r in recipients]
        else:
            timeouts = Timeouts(policy.delivery.connect_timeout, policy.delivery.command_timeout)
            message = Message(envelope.mail_from, recipients, data, envelope.smtputf8, envelope.body_type)
            results = await self.deliverer.deliver(targets, *sts.tls(route), message, timeouts,
                                                   policy.outbound.identity_for(route.name))
        await self.mta_sts.report(sts, results, policy.outbound.identity_for(route.name)[0])
        await self.dane.report(dane, results, policy.outbound.identity_for(route.name)[0])
        return results

    async def handle(self, envelope: Envelope, data: bytes) -> list[Publish]:
        if envelope.route is None:
            return await self._dead(envelope, data, "egress: envelope without a route")
        if envelope.attempts:  # back from a delay queue: an action asked for in the console?
            applied = await self.deferrals.on_arrival(envelope, data)
            if applied is not None:
                return applied
        try:
            claim = await self.claims.take(envelope)
        except Busy as busy:
            return await self._wait_for_lock(envelope, data, busy)
        except StoreUnavailable as exc:
            raise Transient(f"dedupe store unavailable: {exc}") from exc
        try:
            return await self._handle(envelope, data, claim)
        finally:
            await self.claims.release(claim)

    async def _wait_for_lock(self, envelope: Envelope, data: bytes, busy: Busy) -> list[Publish]:
        """Another consumer holds this copy's lock: wait in a delay queue until it has lapsed."""
        delay = lock_wait(busy.remaining)
        log.info("%s; waiting %ds in the retry path", busy, delay, extra={"message_id": envelope.id})
        LOCK_WAITS.inc()
        return [Publish(await self.runtime.bus.declare_retry(SERVICE, delay), envelope, data)]

    async def _dead(self, envelope: Envelope, data: bytes, reason: str) -> list[Publish]:
        log.error("dead-lettering %s: %s", envelope.id, reason, extra={"message_id": envelope.id})
        await self.runtime.trace.record(TraceEvent(
            event="DEADLETTER", message_id=envelope.id, service=SERVICE, recipients=envelope.rcpt_to, detail=reason,
        ))
        return [Publish(DEAD_QUEUE, envelope, data, {"x-mailmoat-dead-reason": reason})]

    async def _handle(self, envelope: Envelope, data: bytes, claim: Claim) -> list[Publish]:
        pending = [r for r in envelope.rcpt_to if r not in claim.done]
        if not pending:
            log.info("all recipients already delivered, skipping", extra={"message_id": envelope.id})
            return []
        work = envelope.model_copy(update={"rcpt_to": pending})
        started = time.perf_counter()
        try:
            results = await self.attempt(work, data, pending)
        except NotStarted:
            log.info("stopping: handing %s back to the queue unsent", envelope.id, extra={"message_id": envelope.id})
            HANDED_BACK.inc()
            return [Publish(stage_queue(SERVICE), envelope, data)]
        # The recipients delivered are recorded first of all (queued ahead of the trace write in the
        # same Redis round trip), and both are written before the message is acked.
        recorded = asyncio.ensure_future(self.claims.finish(claim, [r.recipient for r in results if r.ok]))
        DELIVERY_SECONDS.observe(time.perf_counter() - started)
        outcome = decide(work, data, results, utcnow(), self.runtime.policy.current)
        written = await asyncio.gather(
            recorded, self.runtime.trace.record(self._events(envelope, outcome)), return_exceptions=True,
        )
        for result in written:
            if isinstance(result, BaseException):
                raise result
        outputs: list[Publish] = []
        queue = None
        if outcome.retry is not None:
            queue = await self.runtime.bus.declare_retry(SERVICE, outcome.retry.delay)
            outputs.append(Publish(queue, outcome.retry.envelope, data))
            RETRIES.inc()
            DEFERRED_AGE.observe(max(0.0, (utcnow() - envelope.received_at).total_seconds()))
        if outcome.dsn is not None:
            dsn_envelope, dsn_data = outcome.dsn
            outputs.append(Publish(await self.runtime.bus.declare_stage("routing"), dsn_envelope, dsn_data))
        self._count(envelope, outcome)
        await self.deferrals.after_attempt(envelope, outcome.retry, queue)
        if outcome.dsn is not None:
            dsn_envelope, _ = outcome.dsn
            await self.runtime.trace.record(
                TraceEvent(event="DSN", message_id=dsn_envelope.id, service=SERVICE,
                           recipients=dsn_envelope.rcpt_to,
                           detail=f"delivery status notification about {envelope.id}",
                           data={"parent_id": envelope.id}),
                sender="", recipients=dsn_envelope.rcpt_to, message_id_header=dsn_envelope.message_id_header,
            )
        return outputs

    @staticmethod
    def _count(envelope: Envelope, outcome: Outcome) -> None:
        destination = destination_label(envelope)
        if outcome.delivered:
            DELIVERIES.labels("delivered", destination).inc(len(outcome.delivered))
            latency = ACCEPT_TO_DELIVERY.labels(destination_kind(envelope))
            waited = max(0.0, (utcnow() - envelope.received_at).total_seconds())
            for _ in outcome.delivered:
                latency.observe(waited)
        if outcome.deferred:
            DELIVERIES.labels("deferred", destination).inc(len(outcome.deferred))
        if outcome.failed:
            DELIVERIES.labels("expired" if outcome.expired else "failed", destination).inc(len(outcome.failed))

    @staticmethod
    def _events(envelope: Envelope, outcome: Outcome) -> list[TraceEvent]:
        route = envelope.route.name if envelope.route else ""
        events: list[TraceEvent] = []
        for result in outcome.delivered:
            events.append(TraceEvent(
                event="DELIVER", message_id=envelope.id, service=SERVICE, recipients=[result.recipient],
                detail=result.reply, data={"route": route, "remote": result.remote_host, "tls": result.tls},
            ))
        if outcome.retry is not None:
            retry = outcome.retry
            events.append(TraceEvent(
                event="DEFER", message_id=envelope.id, service=SERVICE, recipients=retry.envelope.rcpt_to,
                detail=retry.envelope.last_error or "",
                data={"route": route, "attempts": retry.envelope.attempts, "retry_in": retry.delay},
            ))
        for failure in outcome.failed:
            events.append(TraceEvent(
                event="FAIL", message_id=envelope.id, service=SERVICE, recipients=[failure.recipient],
                detail=failure.diagnostic,
                data={"route": route, "status": failure.status, "remote": failure.remote_mta},
            ))
        if outcome.dsn is not None:
            dsn_envelope, _ = outcome.dsn
            events.append(TraceEvent(
                event="DSN", message_id=envelope.id, service=SERVICE, recipients=dsn_envelope.rcpt_to,
                detail=f"delivery status notification {dsn_envelope.id} to the sender",
                data={"dsn_id": dsn_envelope.id, "failed": [f.recipient for f in outcome.failed]},
            ))
        return events

    async def reap_forever(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.pool.reap()
            except Exception:  # the reaper must outlive any one bad session
                log.exception("closing idle SMTP sessions failed")

    async def close(self) -> None:
        await self.claims.close()
        await self.pool.close()


async def main(settings: Settings, worker: int = 0) -> None:
    runtime = Runtime(SERVICE, settings, worker=worker, prefetch=32)
    egress = Egress(runtime)
    await runtime.start()
    reaper = asyncio.create_task(egress.reap_forever())
    reporter = TlsReporter(lambda: runtime.redis, routing_publisher(runtime.bus), lambda: runtime.policy.current)
    reports = asyncio.create_task(reporter.run_forever())
    try:
        await runtime.consume_stage(SERVICE, egress.handle)
        await ControlConsumer(runtime.bus, lambda: egress.deferrals.store, SERVICE).start()
        await runtime.serve_forever()
    finally:
        for task in (reaper, reports):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await egress.close()
