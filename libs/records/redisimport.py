"""``mailmoat db import-redis``: copy what a deployment holds in Redis into PostgreSQL, once.

- The quarantine: every held message (the index, and any ``mailmoat:quarantine:<id>`` key besides)
  with its bytes, times, verdicts and release marks, inserted as it is (``QuarantineDB.insert_held``);
  an id PostgreSQL holds already is left alone, so a second run adds nothing.
- The trace (``trace=True``): every message's events, with the look-up values of its first record
  read back from the ``mailmoat:trace:by:<kind>:<value>`` indexes, written by the trace writer in
  batches; its event keys make a second run add nothing.

Redis is only read, unless ``remove``: then each held message is deleted from Redis once PostgreSQL
holds it (its memory freed at once rather than when its retention ends). The trace's keys expire on
their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from mailmoat_platform import redisclient
from mailmoat_platform.models import TraceEvent
from mailmoat_records import quarantine as redisq
from mailmoat_records import trace as redistrace
from mailmoat_records.quarantinedb import QuarantineDB
from mailmoat_records.tracedb import TraceRecord, TraceWriter

_NOT_IDS = ("released:", "index", "sizes", "count", "bytes")
TRACE_BATCH = 500


@dataclass
class Imported:
    quarantine_imported: int = 0
    quarantine_present: int = 0
    """Held in PostgreSQL already (an earlier run)."""
    quarantine_gone: int = 0
    """Listed but expired or deleted meanwhile."""
    quarantine_removed: int = 0
    """Deleted from Redis once in PostgreSQL (``remove``)."""
    trace_messages: int = 0
    trace_events: int = 0
    trace_added: int = 0
    """Events new to PostgreSQL (0 on a second run)."""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"quarantine: {self.quarantine_imported} imported, {self.quarantine_present} already there, "
               f"{self.quarantine_gone} gone" + (f", {self.quarantine_removed} removed from Redis"
                                                 if self.quarantine_removed else "")]
        if self.trace_messages or self.trace_events:
            out.append(f"trace: {self.trace_messages} messages, {self.trace_events} events, "
                       f"{self.trace_added} new")
        return out + self.notes


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _scan(client: redisclient.Redis, pattern: str) -> AsyncIterator[str]:
    async for key in client.scan_iter(match=pattern, count=1000):
        yield _text(key)


async def quarantine_ids(client: redisclient.Redis) -> list[str]:
    """Ids in the quarantine's index, then those of any other held message key."""
    ids = [_text(i) for i in await client.zrange(redisq.INDEX, 0, -1)]
    seen = set(ids)
    async for key in _scan(client, redisq.KEY + "*"):
        rest = key[len(redisq.KEY):]
        if rest and not rest.startswith(_NOT_IDS) and rest not in seen:
            seen.add(rest)
            ids.append(rest)
    return ids


async def import_quarantine(client: redisclient.Redis, target: QuarantineDB, result: Imported, *,
                            remove: bool = False) -> None:
    source = redisq.QuarantineStore(client)
    for qid in await quarantine_ids(client):
        held = await source.get(qid, data=True)
        if held is None or held.data is None:
            result.quarantine_gone += 1
            continue
        if await target.insert_held(held, held.data):
            result.quarantine_imported += 1
        else:
            result.quarantine_present += 1
        if remove and await source.delete(qid):
            result.quarantine_removed += 1


async def trace_keys(client: redisclient.Redis) -> dict[str, dict[str, list[str]]]:
    """Message id -> look-up kind -> values, read back from the trace's indexes."""
    found: dict[str, dict[str, list[str]]] = {}
    async for key in _scan(client, redistrace.INDEX + "*"):
        kind, _, value = key[len(redistrace.INDEX):].partition(":")
        for member in await client.zrange(key, 0, -1):
            found.setdefault(_text(member), {}).setdefault(kind, []).append(value)
    return found


def trace_record(events: list[TraceEvent], keys: dict[str, list[str]]) -> TraceRecord:
    """A message's events with the look-up values its first record had (as Redis indexed them)."""
    senders = keys.get("sender", [])
    sender = None if not senders else ("" if senders[0] == "<>" else senders[0])
    msgids = keys.get("msgid", [])
    ips = keys.get("ip", [])
    return TraceRecord(events=events, sender=sender, recipients=sorted(keys.get("rcpt", [])),
                       message_id_header=msgids[0] if msgids else None, client_ip=ips[0] if ips else None,
                       authors=sorted(keys.get("from", [])))


async def import_trace(client: redisclient.Redis, writer: TraceWriter, result: Imported) -> None:
    index = await trace_keys(client)
    store = redistrace.TraceStore(client)
    batch: list[TraceRecord] = []
    async for key in _scan(client, redistrace.KEY + "*"):
        message_id = key[len(redistrace.KEY):]
        if message_id.startswith("by:") or await client.type(key) not in (b"list", "list"):
            continue
        events = await store.events(message_id)
        if not events:
            continue
        batch.append(trace_record(events, index.get(message_id, {})))
        if len(batch) >= TRACE_BATCH:
            await _write(writer, batch, result)
            batch = []
    if batch:
        await _write(writer, batch, result)


async def _write(writer: TraceWriter, batch: list[TraceRecord], result: Imported) -> None:
    written = await writer.write(batch)
    result.trace_messages += len(batch)
    result.trace_events += written.given
    result.trace_added += written.added


async def import_redis(redis_url: str, database_url: str, *, trace: bool = True, retention_days: int = 90,
                       remove: bool = False) -> Imported:
    """Copy the quarantine (and the trace) from Redis into PostgreSQL; the counts."""
    from mailmoat_records.db import open_pool

    result = Imported()
    client = redisclient.from_url(redis_url, socket_connect_timeout=5)
    target = QuarantineDB(database_url)
    try:
        await import_quarantine(client, target, result, remove=remove)
        if trace:
            async with open_pool(database_url, max_size=1, name="import") as pool:
                await import_trace(client, TraceWriter(pool, retention_days), result)
    finally:
        await target.close()
        await client.aclose()
    return result


__all__ = ["Imported", "import_quarantine", "import_redis", "import_trace", "quarantine_ids", "trace_record"]
