"""Egress service wiring: consume mailmoat.egress, deduplicate, deliver, then retry, bounce or finish.

Deduplication by (message id, route): the Redis set ``mailmoat:delivered:<id>:<route>`` holds the
recipients already delivered, so a copy redelivered after a crash between sending and acking is not
sent twice. A short lock, renewed while a delivery runs, keeps two consumers from delivering the same
copy at once (the same frame published twice); it expires on its own when its holder dies.

Redis work per delivery: one Lua script takes the lock and reads the dedupe set, one records the
recipients delivered and releases the lock, one trace write; all three are group-committed
(``redisbatch``) with the calls of the other deliveries in flight, each awaited before going on.
One pipeline every third of the lock's lifetime renews every lock the process holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from mailmoat_common.bus import DEAD_QUEUE, Publish
from mailmoat_common.models import Envelope, TraceEvent, utcnow
from mailmoat_common.runtime import Runtime, Transient
from mailmoat_common.settings import Settings
from mailmoat_egress.decide import Outcome, decide
from mailmoat_egress.delivery import Deliverer, Message, RcptResult, SessionPool, Timeouts, make_result
from mailmoat_egress.targets import NoRoute, targets_for
from mailmoat_egress.tls import ca_file

SERVICE = "egress"
DEDUPE_KEY = "mailmoat:delivered:{id}:{route}"
LOCK_KEY = "mailmoat:delivering:{id}:{route}"
DEDUPE_TTL = 7 * 86400
LOCK_TTL = 60
"""Seconds a delivery lock lives without renewal; renewed every third of that while delivering."""

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
RETRIES = Counter("mailmoat_delivery_retries_total", "Copies sent to a retry queue.")
DEFERRED_AGE = Histogram(
    "mailmoat_deferred_age_seconds",
    "Age (since it was received) of each copy sent to a retry queue: how old deferred mail gets.",
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400, 172800),
)

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_BEGIN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
return redis.call('SMEMBERS', KEYS[2])
"""
"""Take the lock (KEYS[1]) of a copy and return the recipients already delivered (set KEYS[2]);
nil when another consumer holds the lock."""
_DONE = """
for i = 3, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
if #ARGV > 2 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
"""Add the recipients just delivered to the dedupe set (KEYS[1]) and release the lock (KEYS[2])."""


@dataclass
class Claim:
    """A copy this consumer is delivering: its dedupe set, its lock and the recipients done before."""

    key: str
    lock: str
    token: str
    done: set[str] = field(default_factory=set)


def dedupe_key(envelope: Envelope) -> str:
    route = envelope.route.name if envelope.route else "-"
    return DEDUPE_KEY.format(id=envelope.id, route=route)


def lock_key(envelope: Envelope) -> str:
    route = envelope.route.name if envelope.route else "-"
    return LOCK_KEY.format(id=envelope.id, route=route)


def destination_label(envelope: Envelope) -> str:
    """Metric label of a copy's destination: the route's name for smart hosts and connectors, ``mx``
    for MX delivery (one label for every recipient domain keeps the series count bounded)."""
    route = envelope.route
    if route is None:
        return "none"
    return "mx" if route.kind == "mx" else route.name


class Egress:
    """The handler and its session pool."""

    def __init__(self, runtime: Runtime, pool: SessionPool | None = None, *, lock_ttl: int = LOCK_TTL):
        self.runtime = runtime
        policy = runtime.policy.current
        self.pool = pool or SessionPool(local_hostname=policy.organization.hostname, cafile=ca_file())
        self.deliverer = Deliverer(self.pool)
        self.lock_ttl = lock_ttl
        self._scripts = runtime.scripts
        self._held: dict[str, str] = {}
        """Delivery locks this process holds: key -> token."""
        self._renewer: asyncio.Task[None] | None = None

    # --- dedupe store ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, envelope: Envelope) -> AsyncIterator[Claim]:
        """Hold the delivery lock of this copy (renewed while held) and learn who already has it, in
        one round trip; Transient when the lock is held elsewhere or Redis fails. Released on exit
        unless ``_finish`` released it already."""
        claim = Claim(dedupe_key(envelope), lock_key(envelope), os.urandom(8).hex())
        try:
            members = await self._scripts.call(_BEGIN, [claim.lock, claim.key], [claim.token, self.lock_ttl])
        except (RedisError, OSError) as exc:
            raise Transient(f"dedupe store unavailable: {exc}") from exc
        if members is None:
            raise Transient(f"{envelope.id} on {envelope.route.name if envelope.route else '-'} "
                            "is being delivered by another consumer")
        claim.done = {m.decode() if isinstance(m, bytes) else m for m in members}
        self._held[claim.lock] = claim.token
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_held())
        try:
            yield claim
        finally:
            if self._held.pop(claim.lock, None) is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._scripts.call(_UNLOCK, [claim.lock], [claim.token])

    async def _renew_held(self) -> None:
        """Renew every lock this process holds, in one pipeline every third of the lock's lifetime."""
        while self._held:
            await asyncio.sleep(self.lock_ttl / 3)
            held = list(self._held.items())
            if not held:
                break
            try:
                async with self.runtime.redis.pipeline(transaction=False) as pipe:
                    for key, token in held:
                        pipe.eval(_RENEW, 1, key, token, self.lock_ttl)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("could not renew %d delivery locks: %s", len(held), exc)

    async def _finish(self, claim: Claim, recipients: list[str]) -> None:
        """Record the recipients delivered and release the lock, in one round trip."""
        token = self._held.pop(claim.lock, None)
        if token is None:
            if recipients:
                await self._mark_delivered(claim.key, recipients)
            return
        try:
            await self._scripts.call(_DONE, [claim.key, claim.lock], [token, DEDUPE_TTL, *recipients])
            return
        except (RedisError, OSError) as exc:
            log.warning("dedupe write failed: %s", exc)
        if recipients:
            await self._mark_delivered(claim.key, recipients)
        with contextlib.suppress(RedisError, OSError):
            await self._scripts.call(_UNLOCK, [claim.lock], [token])

    async def _mark_delivered(self, key: str, recipients: list[str]) -> None:
        for attempt in range(3):
            try:
                async with self.runtime.redis.pipeline(transaction=True) as pipe:
                    pipe.sadd(key, *recipients)
                    pipe.expire(key, DEDUPE_TTL)
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                log.warning("dedupe write failed (try %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("delivered %s but could not record it; a redelivery may send again", key)

    # --- delivery -------------------------------------------------------------------------------

    async def attempt(self, envelope: Envelope, data: bytes, recipients: list[str]) -> list[RcptResult]:
        """One delivery attempt for ``recipients``; every recipient gets a result."""
        policy = self.runtime.policy.current
        route = envelope.route
        assert route is not None
        try:
            targets = await targets_for(route, policy)
        except NoRoute as exc:
            return [make_result(r, exc.code, exc.message) for r in recipients]
        timeouts = Timeouts(policy.delivery.connect_timeout, policy.delivery.command_timeout)
        message = Message(envelope.mail_from, recipients, data, envelope.smtputf8, envelope.body_type)
        return await self.deliverer.deliver(targets, route.tls, route.tls_name, message, timeouts)

    async def handle(self, envelope: Envelope, data: bytes) -> list[Publish]:
        if envelope.route is None:
            return await self._dead(envelope, data, "egress: envelope without a route")
        async with self._locked(envelope) as claim:
            return await self._handle(envelope, data, claim)

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
        results = await self.attempt(work, data, pending)
        DELIVERY_SECONDS.observe(time.perf_counter() - started)
        outcome = decide(work, data, results, utcnow(), self.runtime.policy.current)
        # The dedupe record and the trace events are written side by side (one Redis round trip
        # when they share a batch); both are done before the message is acked.
        written = await asyncio.gather(
            self._finish(claim, [r.recipient for r in results if r.ok]),
            self.runtime.trace.record(self._events(envelope, outcome)),
            return_exceptions=True,
        )
        for result in written:
            if isinstance(result, BaseException):
                raise result
        outputs: list[Publish] = []
        if outcome.retry is not None:
            queue = await self.runtime.bus.declare_retry(SERVICE, outcome.retry.delay)
            outputs.append(Publish(queue, outcome.retry.envelope, data))
            RETRIES.inc()
            DEFERRED_AGE.observe(max(0.0, (utcnow() - envelope.received_at).total_seconds()))
        if outcome.dsn is not None:
            dsn_envelope, dsn_data = outcome.dsn
            outputs.append(Publish(await self.runtime.bus.declare_stage("routing"), dsn_envelope, dsn_data))
        self._count(envelope, outcome)
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
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self.pool.close()


async def main(settings: Settings, worker: int = 0) -> None:
    runtime = Runtime(SERVICE, settings, worker=worker, prefetch=32)
    egress = Egress(runtime)
    await runtime.start()
    reaper = asyncio.create_task(egress.reap_forever())
    try:
        await runtime.consume_stage(SERVICE, egress.handle)
        await runtime.serve_forever()
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await egress.close()
