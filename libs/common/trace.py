"""Message trace in Redis: the events of every decision, kept for the retention period.

Keys (all expire after the retention period):
- ``mailmoat:trace:<id>``: list of JSON events, oldest first;
- ``mailmoat:trace:by:<kind>:<value>``: sorted set of message ids by time, for the kinds
  ``sender``, ``rcpt``, ``msgid`` (Message-ID header) and ``ip``.

Writes are group-committed: ``record`` queues its events and waits until they are written; one
pipeline per round trip carries every record queued meanwhile (all the messages a process has in
flight), so a busy process makes one Redis round trip for many messages instead of one each. A
record that returned True is in Redis, so a stage that awaits it before acking its input keeps the
order "trace written, then ack" (a crash loses no event of an acked message); the cost of waiting is
at most one round trip more than writing alone. Trace stays best effort: a Redis failure makes
``record`` return False and never blocks mail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from mailmoat_common.models import TraceEvent

log = logging.getLogger(__name__)

KEY = "mailmoat:trace:"
INDEX = "mailmoat:trace:by:"


_RECORD = """
local ttl = tonumber(ARGV[1])
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ttl)
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[2])
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #ARGV - 3
"""


def _norm(value: str) -> str:
    return value.strip().strip("<>").lower()


class TraceStore:
    """Writes and reads trace events; a Redis outage is logged, never fatal to mail flow."""

    def __init__(self, client: aioredis.Redis, retention_days: int = 90):
        self.client = client
        self.retention = retention_days * 86400
        self.failures = 0
        self.batches = 0
        """Pipelines written (for tests and benchmarks: records per batch = records / batches)."""
        self._script = client.register_script(_RECORD)
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(
        self,
        events: TraceEvent | Iterable[TraceEvent],
        *,
        sender: str | None = None,
        recipients: Iterable[str] = (),
        message_id_header: str | None = None,
        client_ip: str | None = None,
    ) -> bool:
        """Append events (and index keys for the first record of a message). False when Redis failed."""
        batch = [events] if isinstance(events, TraceEvent) else list(events)
        if not batch:
            return True
        message_id = batch[0].message_id
        index: list[str] = []
        if sender is not None:
            index.append(f"{INDEX}sender:{_norm(sender) or '<>'}")
        index.extend(f"{INDEX}rcpt:{_norm(r)}" for r in recipients)
        if message_id_header:
            index.append(f"{INDEX}msgid:{_norm(message_id_header)}")
        if client_ip:
            index.append(f"{INDEX}ip:{client_ip}")
        keys = [KEY + message_id, *index]
        args = [self.retention, message_id, time.time(), *(e.model_dump_json() for e in batch)]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._pending.append((keys, args, done))
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        # Shielded: a caller cancelled while waiting does not cancel the write of the others.
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        """Write what is queued, one pipeline per round trip, until nothing is queued."""
        while self._pending:
            batch, self._pending = self._pending, []
            results = await self._write(batch)
            self.batches += 1
            for (keys, _, done), result in zip(batch, results, strict=True):
                ok = not isinstance(result, BaseException)
                if not ok:
                    self.failures += 1
                    log.warning("trace write failed for %s: %s", keys[0].removeprefix(KEY), result)
                if not done.done():
                    done.set_result(ok)

    async def _write(self, batch: list[tuple[list[str], list[Any], asyncio.Future[bool]]]) -> list[Any]:
        """One result per record: the script's reply, or the exception that failed it."""
        results = await self._pipeline(batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            # First use on this server (or after a restart or SCRIPT FLUSH): load, then write those again.
            try:
                await self.client.script_load(_RECORD)
            except (RedisError, OSError) as exc:
                return [exc if i in missing else r for i, r in enumerate(results)]
            again = await self._pipeline([batch[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[tuple[list[str], list[Any], asyncio.Future[bool]]]) -> list[Any]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args, _ in batch:
                    pipe.evalsha(self._script.sha, len(keys), *keys, *args)
                return list(await pipe.execute(raise_on_error=False))
        except (RedisError, OSError) as exc:
            return [exc] * len(batch)

    async def events(self, message_id: str) -> list[TraceEvent]:
        raw = await self.client.lrange(KEY + message_id, 0, -1)
        events = [TraceEvent.model_validate_json(r) for r in raw]
        # Stages write concurrently (ingress traces RECEIVE while it publishes): order by time;
        # the sort is stable, so equal times keep their write order.
        return sorted(events, key=lambda e: e.at)

    async def find(self, needle: str) -> list[str]:
        """Message ids for a queue id, sender, recipient, Message-ID header or client IP."""
        if await self.client.exists(KEY + needle):
            return [needle]
        value = _norm(needle)
        ids: list[str] = []
        for kind in ("msgid", "sender", "rcpt", "ip"):
            for raw in await self.client.zrange(f"{INDEX}{kind}:{value}", 0, -1):
                text = raw.decode() if isinstance(raw, bytes) else raw
                if text not in ids:
                    ids.append(text)
        return ids
