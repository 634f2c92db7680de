"""Message trace in Redis: the events of every decision, kept for the retention period.

Keys (all expire after the retention period):
- ``mailmoat:trace:<id>``: list of JSON events, oldest first;
- ``mailmoat:trace:by:<kind>:<value>``: sorted set of message ids by time, for the kinds
  ``sender``, ``rcpt``, ``msgid`` (Message-ID header) and ``ip``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mailmoat_common.models import TraceEvent

log = logging.getLogger(__name__)

KEY = "mailmoat:trace:"
INDEX = "mailmoat:trace:by:"


def _norm(value: str) -> str:
    return value.strip().strip("<>").lower()


class TraceStore:
    """Writes and reads trace events; a Redis outage is logged, never fatal to mail flow."""

    def __init__(self, client: aioredis.Redis, retention_days: int = 90):
        self.client = client
        self.retention = retention_days * 86400
        self.failures = 0

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
        now = time.time()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for event in batch:
                    pipe.rpush(KEY + event.message_id, event.model_dump_json())
                    pipe.expire(KEY + event.message_id, self.retention)
                index: list[tuple[str, str]] = []
                if sender is not None:
                    index.append(("sender", _norm(sender) or "<>"))
                index.extend(("rcpt", _norm(r)) for r in recipients)
                if message_id_header:
                    index.append(("msgid", _norm(message_id_header)))
                if client_ip:
                    index.append(("ip", client_ip))
                for kind, value in index:
                    key = f"{INDEX}{kind}:{value}"
                    pipe.zadd(key, {message_id: now})
                    pipe.expire(key, self.retention)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.failures += 1
            log.warning("trace write failed for %s: %s", message_id, exc)
            return False
        return True

    async def events(self, message_id: str) -> list[TraceEvent]:
        raw = await self.client.lrange(KEY + message_id, 0, -1)
        return [TraceEvent.model_validate_json(r) for r in raw]

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
