"""Greylisting at RCPT TO (``connection_filter.greylisting``, off by default).

The first attempt of an unknown (client network, sender, recipient) triple is deferred with
``451 4.7.1``; a retry after ``delay`` and within ``retry_window`` is accepted and the triple is
remembered for ``whitelist_ttl`` (renewed by each pass). The client network is the /24 of an IPv4
client and the /64 of an IPv6 client, so a sender's pool of outgoing servers passes together.

``decide`` is pure; ``Greylist`` reads and writes the two Redis keys of a triple. A race between
two processes is harmless (the first-seen time is written with ``NX``). Redis failing: accept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from enum import Enum
from typing import Any

from mailmoat_ingress import replies
from mailmoat_ingress.metrics import GREYLIST, LIMIT_ERRORS
from mailmoat_ingress.ratelimit import client_network, exempt
from mailmoat_policy import Greylisting, Policy

log = logging.getLogger(__name__)

PREFIX = "mailmoat:grey"


class Outcome(Enum):
    KNOWN = "known"
    """The triple passed before: accept."""
    PASS = "passed"
    """A retry after the delay: accept and remember."""
    NEW = "new"
    """First attempt (or the retry window ran out): defer and note the time."""
    EARLY = "early"
    """A retry before the delay ran out: defer."""

    @property
    def deferred(self) -> bool:
        return self in (Outcome.NEW, Outcome.EARLY)


def triple_id(network: str, sender: str, recipient: str) -> str:
    """A fixed-length id of the triple (addresses compared case-insensitively; ``<>`` is the null sender)."""
    sender = "" if sender in ("", "<>") else sender
    raw = "\0".join((network, sender.lower(), recipient.lower()))
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def decide(first_seen: float | None, known: bool, now: float, settings: Greylisting) -> Outcome:
    """Greylisting decision for one triple."""
    if known:
        return Outcome.KNOWN
    if first_seen is None or now - first_seen > settings.retry_window:
        return Outcome.NEW
    if now - first_seen >= settings.delay:
        return Outcome.PASS
    return Outcome.EARLY


class Greylist:
    """Greylisting state in Redis (``redisclient.Redis``), shared by every ingress process."""

    def __init__(self, redis: Any, *, clock: Any = time.time):
        self.redis = redis
        self.clock = clock

    async def check(self, policy: Policy, ip: str, sender: str, recipient: str) -> str | None:
        """``451 4.7.1`` for a triple to defer, None to accept (also when off, exempt or Redis fails)."""
        settings = policy.connection_filter.greylisting
        if not settings.enabled or exempt(policy, ip):
            return None
        network = client_network(ip, settings.ipv4_prefix, settings.ipv6_prefix)
        tid = triple_id(network, sender, recipient)
        try:
            async with asyncio.timeout(policy.connection_filter.rate_limits.redis_timeout):
                outcome = await self._apply(tid, settings)
        except Exception as exc:
            LIMIT_ERRORS.labels("greylist").inc()
            log.warning("greylisting skipped, accepting: %s: %s", type(exc).__name__, exc)
            return None
        GREYLIST.labels("deferred" if outcome.deferred else outcome.value).inc()
        return replies.GREYLISTED if outcome.deferred else None

    async def _apply(self, tid: str, settings: Greylisting) -> Outcome:
        wait_key, ok_key = f"{PREFIX}:wait:{tid}", f"{PREFIX}:ok:{tid}"
        now = self.clock()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(wait_key)
            pipe.exists(ok_key)
            first, known = await pipe.execute()
        outcome = decide(float(first) if first is not None else None, bool(known), now, settings)
        if outcome is Outcome.NEW:
            await self.redis.set(wait_key, repr(now), ex=settings.retry_window, nx=first is None)
        elif outcome in (Outcome.PASS, Outcome.KNOWN):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(ok_key, "1", ex=settings.whitelist_ttl)
                pipe.delete(wait_key)
                await pipe.execute()
        return outcome
