"""Delivery claims in Redis: which recipients of a copy were delivered, and who is delivering it now.

Per copy (message id, route) two keys::

    mailmoat:delivered:<id>:<route>    set of the recipients already delivered (kept 7 days)
    mailmoat:delivering:<id>:<route>   the delivery lock: its owner's token, for ``ttl`` seconds

A lock carries an owner token (``host:pid:random``); only its owner extends it or deletes it (Lua
compare-and-expire, compare-and-delete). The owner's heartbeat extends every lock it holds every
quarter of ``ttl``, so a live owner keeps its locks however long a delivery takes, and a dead one's
(kill -9, a lost node) lapse within ``ttl`` seconds. A copy whose lock is held elsewhere learns how
long that lock still lives (``Busy.remaining``), so it can wait that long in a delay queue instead
of coming back at once.

A take that failed on our side (a timeout) may still have run on the server and left a lock with our
token that nobody renews: it is released in the background as soon as Redis answers again.

Where it is safe to know, a dead owner is not waited for: the token names its host, pid and pid
namespace, and a lock whose owner ran on this host, in this pid namespace, and no longer runs (or is
this process, which does not hold that lock) is taken over at once (``owner_is_dead``). That covers a
process restarted in place (``mailmoat run all``, systemd, a container restarted on its node); a
replacement elsewhere (a new pod) waits out the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from prometheus_client import Counter

from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope
from mailmoat_platform.redisbatch import ScriptBatcher
from mailmoat_platform.redisclient import RedisError

DEDUPE_KEY = "mailmoat:delivered:{id}:{route}"
LOCK_KEY = "mailmoat:delivering:{id}:{route}"
DEDUPE_TTL = 7 * 86400
LOCK_TTL = 10.0
"""Seconds a delivery lock lives unless its owner's heartbeat extends it (every quarter of that)."""

log = logging.getLogger(__name__)

LOCKS_LOST = Counter(
    "mailmoat_delivery_locks_lost_total",
    "Delivery locks found expired or taken over while their owner was still delivering (heartbeat late).",
)

TAKEOVERS = Counter(
    "mailmoat_delivery_lock_takeovers_total",
    "Delivery locks taken over at once because their owner, a process of the same host, no longer runs.",
)

_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('SMEMBERS', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1])}
"""
"""Take the lock (KEYS[1]) with our token for ARGV[2] ms and return {1, recipients already delivered
(set KEYS[2])}; {0, the lock's remaining ms, its owner's token} when another owner holds it."""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[3] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('SMEMBERS', KEYS[2])
"""
"""Replace a dead owner's token (ARGV[3]) by ours, as ``_TAKE`` would have; nil if it changed meanwhile."""
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_DONE = """
for i = 3, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
if #ARGV > 2 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
"""Add the recipients just delivered to the dedupe set (KEYS[1]) and release our lock (KEYS[2])."""


class Busy(Exception):
    """Another owner holds the copy's lock; it lives ``remaining`` more seconds unless renewed."""

    def __init__(self, lock: str, remaining: float):
        super().__init__(f"{lock} is held by another consumer for {remaining:.1f}s more")
        self.remaining = remaining


class StoreUnavailable(Exception):
    """Redis did not answer (or answered with an error)."""


@dataclass
class Claim:
    """A copy this process is delivering: its dedupe set, its lock, and the recipients done before."""

    key: str
    lock: str
    token: str
    done: set[str] = field(default_factory=set)
    lost: bool = False
    """The heartbeat found the lock gone or someone else's: a second delivery may overlap this one."""


def copy_keys(envelope: Envelope) -> tuple[str, str]:
    """(dedupe set, lock) keys of a copy."""
    route = envelope.route.name if envelope.route else "-"
    return DEDUPE_KEY.format(id=envelope.id, route=route), LOCK_KEY.format(id=envelope.id, route=route)


def _may_have_run(exc: BaseException) -> bool:
    """Whether a failed call may have reached the server: anything but a refused connection."""
    cause = exc.__cause__ or exc.__context__
    return not isinstance(exc, ConnectionRefusedError) and not isinstance(cause, ConnectionRefusedError)


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def owner_prefix() -> str:
    """What every token of this process starts with: host, pid and pid namespace (``host:pid:ns``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}"


def owner_is_dead(token: str, held: Container[str] = frozenset()) -> bool:
    """Whether the owner of a lock's ``token`` is known to be gone: a process of this host and pid
    namespace that no longer exists, or this process itself when the token is none of the locks it
    holds (a take that failed on our side). Anything else — another host or container, a token of
    another form, a pid that exists (a zombie too) — is not known dead: its lock lapses by its TTL."""
    parts = token.rsplit(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    host, pid, namespace, _ = parts
    if host != socket.gethostname() or namespace == "-" or namespace != _pid_namespace():
        return False
    if int(pid) == os.getpid():
        return token not in held
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, under another user
        return False
    return False


_LIVE: set[str] = set()
"""Tokens of every lock this process holds or is taking, whichever ``Claims`` took it."""


class Claims:
    """Takes, renews, records and releases the delivery claims of one process."""

    def __init__(self, scripts: ScriptBatcher, client: Callable[[], redisclient.Redis], *, ttl: float = LOCK_TTL):
        self._scripts = scripts
        self._client = client
        self.ttl = ttl
        self._held: dict[str, Claim] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.orphans_released = 0
        """Locks a failed take had left on the server with our token, released in the background."""

    @property
    def held(self) -> int:
        return len(self._held)

    async def take(self, envelope: Envelope) -> Claim:
        """Lock the copy and learn who already has it (one round trip). Raises ``Busy`` when another
        owner holds the lock, ``StoreUnavailable`` when Redis fails."""
        key, lock = copy_keys(envelope)
        claim = Claim(key, lock, f"{owner_prefix()}:{os.urandom(6).hex()}")
        _LIVE.add(claim.token)
        try:
            result = await self._scripts.call(_TAKE, [lock, key], [claim.token, self._ms(self.ttl)])
            taken, payload = result[0], result[1]
            if not taken:
                payload = await self._take_over(claim, result)
        except (RedisError, OSError) as exc:
            _LIVE.discard(claim.token)
            if _may_have_run(exc):
                # The script may have run on the server all the same: release that lock once it answers.
                self._spawn(self._release_orphan(lock, claim.token))
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        except BaseException:
            _LIVE.discard(claim.token)
            raise
        claim.done = {m.decode() if isinstance(m, bytes) else m for m in payload}
        self._held[lock] = claim
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat())
        return claim

    async def _take_over(self, claim: Claim, result: list[object]) -> list[object]:
        """The lock is held: take it over if its owner is known dead (the recipients delivered, as a
        take returns them), else raise ``Busy`` with the lock's remaining lifetime."""
        remaining = int(result[1])  # type: ignore[call-overload]
        holder = result[2] if len(result) > 2 else None
        holder = holder.decode(errors="replace") if isinstance(holder, bytes) else holder
        if isinstance(holder, str) and owner_is_dead(holder, _LIVE):
            members = await self._scripts.call(_TAKE_OVER, [claim.lock, claim.key],
                                               [claim.token, self._ms(self.ttl), holder])
            if members is not None:
                TAKEOVERS.inc()
                log.info("took over delivery lock %s from %s, a process that no longer runs", claim.lock, holder)
                return list(members)
        raise Busy(claim.lock, self.ttl if remaining < 0 else remaining / 1000)

    async def finish(self, claim: Claim, delivered: list[str]) -> None:
        """Record the recipients delivered and release the lock, in one round trip (the record is
        retried on a Redis error; the lock then lapses by itself if it cannot be released)."""
        _LIVE.discard(claim.token)
        if self._held.pop(claim.lock, None) is None:
            if delivered:
                await self._record(claim.key, delivered)
            return
        try:
            await self._scripts.call(_DONE, [claim.key, claim.lock], [claim.token, DEDUPE_TTL, *delivered])
            return
        except (RedisError, OSError) as exc:
            log.warning("dedupe write failed: %s", exc)
        if delivered:
            await self._record(claim.key, delivered)
        with contextlib.suppress(RedisError, OSError):
            await self._scripts.call(_UNLOCK, [claim.lock], [claim.token])

    async def release(self, claim: Claim) -> None:
        """Release the lock without recording anything (no-op once ``finish`` released it)."""
        _LIVE.discard(claim.token)
        if self._held.pop(claim.lock, None) is None:
            return
        try:
            await self._scripts.call(_UNLOCK, [claim.lock], [claim.token])
        except (RedisError, OSError):
            self._spawn(self._release_orphan(claim.lock, claim.token))

    async def close(self) -> None:
        _LIVE.difference_update(c.token for c in self._held.values())
        tasks = [t for t in (self._heartbeat, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- inside ---------------------------------------------------------------------------------

    @staticmethod
    def _ms(seconds: float) -> int:
        return max(1, int(seconds * 1000))

    async def _beat(self) -> None:
        """Extend every lock this process holds, in one pipeline every quarter of the TTL; a renewal
        that does not answer within that quarter is given up (the next one follows on time)."""
        interval = self.ttl / 4
        while self._held:
            await asyncio.sleep(interval)
            held = list(self._held.values())
            if not held:
                break
            try:
                results = await asyncio.wait_for(self._renew(held), interval)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("could not renew %d delivery locks: %s", len(held), exc or type(exc).__name__)
                continue
            for claim, result in zip(held, results, strict=True):
                if result != 1 and not claim.lost and claim.lock in self._held:
                    claim.lost = True
                    LOCKS_LOST.inc()
                    log.warning("delivery lock %s expired while its delivery was still running", claim.lock)

    async def _renew(self, held: list[Claim]) -> list[object]:
        async with self._client().pipeline(transaction=False) as pipe:
            for claim in held:
                pipe.eval(_RENEW, 1, claim.lock, claim.token, self._ms(self.ttl))
            return list(await pipe.execute(raise_on_error=False))

    async def _release_orphan(self, lock: str, token: str) -> None:
        """Delete ``lock`` if it holds ``token``: tried with growing pauses until it did, or until
        the lock would have lapsed anyway (the take that failed may reach the server late)."""
        delay, waited = 0.1, 0.0
        while waited < self.ttl:
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)
            with contextlib.suppress(RedisError, OSError):
                if await self._scripts.call(_UNLOCK, [lock], [token]) == 1:
                    self.orphans_released += 1
                    log.info("released delivery lock %s left by a call that failed on our side", lock)
                    return

    async def _record(self, key: str, recipients: list[str]) -> None:
        for attempt in range(3):
            try:
                async with self._client().pipeline(transaction=True) as pipe:
                    pipe.sadd(key, *recipients)
                    pipe.expire(key, DEDUPE_TTL)
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                log.warning("dedupe write failed (try %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("delivered %s but could not record it; a redelivery may send again", key)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
