"""Deferred mail: the read model of what waits in egress's delay queues, and the control messages that act on it.

Egress defers a copy (message id, route) by publishing it to a delay queue (``mailmoat.egress.retry.<n>s``),
where RabbitMQ offers no listing by message. So egress also records each deferral in Redis (hot, expiring
state)::

    mailmoat:deferred:<id>:<route>   hash: id, route, destination, queue, sender, recipients, attempts,
                                     first attempt, next attempt, last error, size, and a pending action
    mailmoat:deferred-index          sorted set of "<id>:<route>" by next attempt

A record expires ``delay + GRACE`` seconds after it was written and is deleted when the copy is delivered or
bounced; the index is pruned of members whose record is gone when it is read, and expires with its newest
record. The console publishes a ``Control`` (retry, bounce, delete) to ``mailmoat.egress.control``; egress
marks the record with the action, takes the copy out of its delay queue back to ``mailmoat.egress`` and
applies the action when the copy arrives there (docs/console.md, *Queues*).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from mailmoat_platform.models import Envelope

KEY = "mailmoat:deferred:{id}:{route}"
INDEX = "mailmoat:deferred-index"
GRACE = 6 * 3600
"""Seconds a record outlives its copy's next attempt (egress stopped that long: the record lapses)."""
CONTROL_QUEUE = "mailmoat.egress.control"
CONTROL_ARGUMENTS = {"x-queue-type": "quorum"}
Action = Literal["retry", "bounce", "delete"]
ACTIONS: tuple[str, ...] = ("retry", "bounce", "delete")


def member(message_id: str, route: str) -> str:
    return f"{message_id}:{route}"


def key(message_id: str, route: str) -> str:
    return KEY.format(id=message_id, route=route)


def destination_of(envelope: Envelope) -> str:
    """Where a copy goes, as the queues page groups it: the recipient domain of an MX route, else the route."""
    route = envelope.route
    if route is None:
        return "-"
    if route.kind == "mx":
        return route.domain or (envelope.rcpt_to[0].rpartition("@")[2].lower() if envelope.rcpt_to else route.name)
    return route.name


class Deferral(BaseModel):
    """One deferred copy as egress recorded it."""

    id: str
    route: str
    destination: str
    queue: str = Field(description="The delay queue the copy waits in")
    sender: str
    recipients: list[str]
    attempts: int
    first_attempt: float
    next_attempt: float
    last_error: str
    size: int = 0
    message_id_header: str = ""
    action: str = Field(default="", description="An action asked for and not applied yet (retry, bounce, delete)")


def deferral_of(envelope: Envelope, queue: str, delay: int, now: float | None = None) -> Deferral:
    """The record of a copy just deferred (``envelope``: the retry copy, its recipients the deferred ones)."""
    now = time.time() if now is None else now
    first = envelope.first_attempt_at.timestamp() if envelope.first_attempt_at else now
    return Deferral(id=envelope.id, route=envelope.route.name if envelope.route else "-",
                    destination=destination_of(envelope), queue=queue, sender=envelope.mail_from,
                    recipients=list(envelope.rcpt_to), attempts=envelope.attempts, first_attempt=first,
                    next_attempt=now + delay, last_error=envelope.last_error or "", size=envelope.size or 0,
                    message_id_header=envelope.message_id_header or "")


_RECORD = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[#ARGV])
local ttl = redis.call('TTL', KEYS[2])
if ttl < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 1
"""
"""Write the record's fields (ARGV[3..], keeping an ``action`` set meanwhile), its TTL (ARGV[2]) and its index
entry (score ARGV[1], member the last field's value); the index lives as long as its longest-lived record."""


class DeferredStore:
    """The deferral records in Redis (``redis``: a ``redisclient.Redis``)."""

    def __init__(self, redis):
        self.redis = redis

    async def record(self, deferral: Deferral, delay: int) -> None:
        fields = deferral.model_dump(exclude={"action"})
        fields["recipients"] = json.dumps(deferral.recipients)
        args: list = [deferral.next_attempt, int(delay + GRACE)]
        for name, value in fields.items():
            args += [name, str(value)]
        args += ["member", member(deferral.id, deferral.route)]
        await self.redis.eval(_RECORD, 2, key(deferral.id, deferral.route), INDEX, *args)

    async def clear(self, message_id: str, route: str) -> None:
        """The copy was delivered or bounced (or deleted): no longer deferred."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key(message_id, route))
        pipe.zrem(INDEX, member(message_id, route))
        await pipe.execute()

    async def get(self, message_id: str, route: str) -> Deferral | None:
        raw = await self.redis.hgetall(key(message_id, route))
        return _parse(raw)

    async def mark(self, message_id: str, route: str, action: str) -> bool:
        """Ask for ``action`` on the copy (applied when it arrives at egress); False when it is not deferred."""
        done = await self.redis.eval(
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'action', ARGV[1]) return 1 end "
            "return 0", 1, key(message_id, route), action)
        return bool(done)

    async def action(self, message_id: str, route: str) -> str:
        value = await self.redis.hget(key(message_id, route), "action")
        return value.decode() if isinstance(value, bytes) else (value or "")

    async def unmark(self, message_id: str, route: str) -> None:
        await self.redis.hdel(key(message_id, route), "action")

    async def all(self, limit: int = 5000) -> list[Deferral]:
        """Every deferred copy recorded (at most ``limit``), soonest next attempt first; members whose record
        expired are dropped from the index."""
        members = await self.redis.zrange(INDEX, 0, limit - 1)
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for m in members:
            text = m.decode() if isinstance(m, bytes) else m
            message_id, _, route = text.partition(":")
            pipe.hgetall(key(message_id, route))
        found, gone = [], []
        for m, raw in zip(members, await pipe.execute(), strict=True):
            deferral = _parse(raw)
            if deferral is None:
                gone.append(m)
            else:
                found.append(deferral)
        if gone:
            await self.redis.zrem(INDEX, *gone)
        return found


def _parse(raw: dict) -> Deferral | None:
    if not raw:
        return None
    fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
              for k, v in raw.items()}
    if "id" not in fields or "route" not in fields:
        return None
    try:
        fields["recipients"] = json.loads(fields.get("recipients", "[]"))
        return Deferral.model_validate({k: v for k, v in fields.items() if k != "member"})
    except ValueError:
        return None


@dataclass(frozen=True)
class Control:
    """An action on one deferred copy, asked for by ``by`` (who, for the trace)."""

    action: str
    id: str
    route: str
    by: str = ""
    at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return json.dumps({"action": self.action, "id": self.id, "route": self.route, "by": self.by,
                           "at": self.at}).encode()

    @classmethod
    def decode(cls, body: bytes) -> Control:
        """Raises ValueError for a body that is not a control message."""
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("action") not in ACTIONS:
            raise ValueError("not a control message")
        return cls(str(data["action"]), str(data["id"]), str(data["route"]), str(data.get("by", ""))[:200],
                   float(data.get("at", 0)))
