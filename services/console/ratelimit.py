"""Sign-in rate limiting: failed attempts counted per account name and per client address in Redis keys
that expire (``console:signin:<scope>:<value>``, TTL = the window from the first failure)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


class Counter(Protocol):
    async def count(self, key: str) -> tuple[int, int]:
        """(failures counted, seconds until they expire; 0 when none)."""

    async def add(self, key: str, window: int) -> int:
        """Count one more failure; the key expires ``window`` seconds after its first failure."""

    async def clear(self, key: str) -> None: ...


class RedisCounter:
    """``Counter`` on Redis: a key per scope and value, ``SET NX EX`` then ``INCR`` (the TTL is kept)."""

    def __init__(self, redis, prefix: str = "console:signin:"):
        self.redis = redis
        self.prefix = prefix

    async def count(self, key: str) -> tuple[int, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.prefix + key)
            pipe.ttl(self.prefix + key)
            value, ttl = await pipe.execute()
        return (int(value) if value else 0), max(int(ttl or 0), 0)

    async def add(self, key: str, window: int) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.prefix + key, 0, ex=window, nx=True)
            pipe.incr(self.prefix + key)
            _, value = await pipe.execute()
        return int(value)

    async def clear(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)


@dataclass(frozen=True)
class Refusal:
    scope: str  # "account" or "ip"
    retry_after: int  # seconds


def _digest(value: str) -> str:
    """Key part for a value (account names are typed by anyone: a digest keeps the key short and plain)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class SigninLimiter:
    """At most ``per_account`` failures per account name and ``per_ip`` per client address in ``window``
    seconds; past that, sign-in is refused (even with the right password) until the keys expire."""

    def __init__(self, counter: Counter, *, window: int = 900, per_account: int = 5, per_ip: int = 20):
        self.counter = counter
        self.window = window
        self.per_account = per_account
        self.per_ip = per_ip

    def _keys(self, name: str, ip: str | None) -> list[tuple[str, str, int]]:
        keys = [("account", "account:" + _digest(name.strip().lower()), self.per_account)]
        if ip:
            keys.append(("ip", "ip:" + ip, self.per_ip))
        return keys

    async def check(self, name: str, ip: str | None) -> Refusal | None:
        """A refusal when the account or the address used up its failures, else None."""
        for scope, key, limit in self._keys(name, ip):
            count, ttl = await self.counter.count(key)
            if count >= limit:
                return Refusal(scope, ttl or self.window)
        return None

    async def failed(self, name: str, ip: str | None) -> None:
        for _, key, _ in self._keys(name, ip):
            await self.counter.add(key, self.window)

    async def succeeded(self, name: str) -> None:
        """A successful sign-in clears its account's count (not its address's)."""
        await self.counter.clear(self._keys(name, None)[0][1])
