"""Per-client rate limits shared by every ingress process through Redis.

Three limits (``connection_filter.rate_limits``; 0 turns one off): concurrent connections, messages
(MAIL FROM) per minute and recipients (RCPT TO) per minute, counted per client IP (IPv6 per network).

- Connections: a sorted set per client whose members are connection ids scored by their expiry
  time. A process refreshes the expiry of its live connections every third of ``connection_ttl``
  and removes them on disconnect; members of a process that died expire on their own. A check that
  does not end with a slot for its caller (the client left during it, Redis failed or was slow) takes
  back what its script may still add: the removal follows the script on the same connection.
- Messages and recipients: a counter per client and fixed one-minute window (``INCR`` and, on the
  first count, ``EXPIRE`` in one script), so counters expire by themselves.

Each check is one round trip (a Lua script run by its SHA); a refused connection takes one more.

The decisions (what counts, when a count is over the limit, the reply) are pure functions; the
Redis side only counts. Redis unreachable or slow: the client is let through (logged, counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from mailmoat_ingress import replies
from mailmoat_ingress.metrics import LIMIT_ERRORS, RATE_LIMITED
from mailmoat_policy import Policy, RateLimits, client_address

log = logging.getLogger(__name__)

PREFIX = "mailmoat:rl"
WINDOW = 60
"""Seconds of the message and recipient windows."""
T = TypeVar("T")

ADD_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1] + ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""
"""Drop expired slots, add this connection's (scored by its expiry), keep the key alive: the count."""
INCREMENT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
"""Count one in the window; the first count starts the window's expiry."""


# --- pure ------------------------------------------------------------------------------------------


def client_network(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network a client is counted in: the address itself for IPv4 (by default), its /64 for IPv6."""
    address = client_address(ip)
    if address is None:
        return ip or "unknown"
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def exempt(policy: Policy, ip: str) -> bool:
    """The organisation's own servers and allow-listed clients are never limited or greylisted."""
    return not ip or policy.is_internal(ip) or policy.connection_filter.allowed(ip)


def over(count: int, limit: int) -> bool:
    """Whether ``count`` (including the attempt being decided) exceeds ``limit`` (0: no limit)."""
    return limit > 0 and count > limit


def connection_key(network: str) -> str:
    return f"{PREFIX}:conn:{network}"


def window_key(kind: str, network: str) -> str:
    return f"{PREFIX}:{kind}:{network}"


@dataclass(frozen=True)
class Slot:
    """A connection counted in Redis: released on disconnect, refreshed while open."""

    key: str
    member: str


# --- Redis ----------------------------------------------------------------------------------------


class RateLimiter:
    """The limits of one ingress process against the shared Redis (``redisclient.Redis``)."""

    def __init__(self, redis: Any, *, process_id: str | None = None, clock: Any = time.time):
        self.redis = redis
        self.process_id = process_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.slots: dict[str, Slot] = {}
        self._removals: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._ttl = 120
        self._add_slot_script = redis.register_script(ADD_SLOT)
        self._increment_script = redis.register_script(INCREMENT)

    async def open_connection(self, policy: Policy, ip: str) -> tuple[str | None, Slot | None]:
        """At connect: the refusal (``421 4.7.0``) or None, and the slot to release on disconnect."""
        limits = policy.connection_filter.rate_limits
        if limits.connections <= 0 or exempt(policy, ip):
            return None, None
        network = client_network(ip, ipv6_prefix=limits.ipv6_prefix)
        slot = Slot(connection_key(network), f"{self.process_id}:{next(self._ids)}")
        self._ttl = limits.connection_ttl
        try:
            count = await self._guard("connections", limits, self._add_slot(slot, limits.connection_ttl))
        except asyncio.CancelledError:  # the client left during the check (aiosmtpd cancels its session)
            self._take_back(slot)
            raise
        if count is None:  # not checked: the script may still run once Redis answers
            self._take_back(slot)
            return None, None
        if over(count, limits.connections):
            RATE_LIMITED.labels("connections").inc()
            await self._guard("connections", limits, self.redis.zrem(slot.key, slot.member))
            return replies.too_many_connections(ip), None
        self.slots[slot.member] = slot
        return None, slot

    async def close_connection(self, slot: Slot) -> None:
        """At disconnect: give the slot back."""
        self.slots.pop(slot.member, None)
        await self._remove(slot)

    def _take_back(self, slot: Slot) -> None:
        """Remove, in the background, a slot a check may have added for no caller."""
        task = asyncio.ensure_future(self._remove(slot))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove(self, slot: Slot) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.redis.zrem(slot.key, slot.member)

    async def count_message(self, policy: Policy, ip: str) -> str | None:
        """At MAIL FROM: ``450 4.7.1`` over the per-minute message limit, else None."""
        limits = policy.connection_filter.rate_limits
        return await self._window("messages", limits.messages_per_minute, limits, policy, ip)

    async def count_recipient(self, policy: Policy, ip: str) -> str | None:
        """At RCPT TO: ``450 4.7.1`` over the per-minute recipient limit, else None."""
        limits = policy.connection_filter.rate_limits
        return await self._window("recipients", limits.recipients_per_minute, limits, policy, ip)

    async def refresh(self) -> None:
        """Push the expiry of every open connection of this process forward."""
        if not self.slots:
            return
        expiry = self.clock() + self._ttl
        async with self.redis.pipeline(transaction=False) as pipe:
            for slot in list(self.slots.values()):
                pipe.zadd(slot.key, {slot.member: expiry}, xx=True)
                pipe.expire(slot.key, self._ttl)
            await pipe.execute()

    async def refresh_forever(self) -> None:
        """Run as a task for the life of the process."""
        while True:
            await asyncio.sleep(max(1.0, self._ttl / 3))
            try:
                await self.refresh()
            except Exception as exc:  # Redis away: the slots expire, counting errs on the open side
                LIMIT_ERRORS.labels("refresh").inc()
                log.warning("rate limit slots not refreshed: %s: %s", type(exc).__name__, exc)

    async def _window(self, kind: str, limit: int, limits: RateLimits, policy: Policy, ip: str) -> str | None:
        if limit <= 0 or exempt(policy, ip):
            return None
        key = window_key(kind, client_network(ip, ipv6_prefix=limits.ipv6_prefix))
        count = await self._guard(kind, limits, self._increment(key))
        if count is None or not over(count, limit):
            return None
        RATE_LIMITED.labels(kind).inc()
        return replies.too_many(kind, ip)

    async def _add_slot(self, slot: Slot, ttl: int) -> int:
        return int(await self._add_slot_script(keys=[slot.key], args=[self.clock(), ttl, slot.member]))

    async def _increment(self, key: str) -> int:
        return int(await self._increment_script(keys=[key], args=[WINDOW]))

    async def _guard(self, check: str, limits: RateLimits, call: Awaitable[T]) -> T | None:
        """The call's result, or None when Redis fails or is slower than ``redis_timeout`` (fail open)."""
        try:
            async with asyncio.timeout(limits.redis_timeout):
                return await call
        except Exception as exc:
            LIMIT_ERRORS.labels(check).inc()
            log.warning("rate limit %s not checked, letting the client through: %s: %s",
                        check, type(exc).__name__, exc)
            return None
