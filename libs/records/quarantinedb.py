"""The quarantine in PostgreSQL: held messages (metadata and compressed bytes), listed, released once, expired.

The same methods as the Redis ``QuarantineStore`` (``mailmoat_records.quarantine.HeldStore``); the
tables are made by the migration ``0002_quarantine`` (``mailmoat db upgrade``).

A release per recipient goes ``held`` -> ``releasing`` -> ``released`` (docs/decisions/010, *Quarantine*):

1. the claim is one conditional update (``state = 'held'`` -> ``'releasing'``) in one transaction: two
   releases of a recipient at once, one wins;
2. the releasing process publishes the message to the routing queue and waits for the confirm;
3. it marks the recipients ``released``.

A row left ``releasing`` (the process died between 1 and 3, before or after its publish) is the
release's outbox entry: ``relay`` (routing runs it every few seconds) publishes it again once it is
older than ``RELAY_AFTER`` seconds, and marks it. Published twice, the copy is the same (queue id,
route, recipients), and egress delivers each recipient of a copy once (its dedupe record): no lost
release, no double delivery.

Expiry: ``prune`` deletes the rows past their ``expires`` (routing's size gauge calls it through
``totals``, as it does in Redis; ``mailmoat db maintain`` too); reads never return an expired message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mailmoat_platform.bus import Bus
from mailmoat_platform.models import Envelope
from mailmoat_policy import Quarantine
from mailmoat_records.db import open_pool
from mailmoat_records.quarantine import (
    Held,
    QuarantineUnavailable,
    Role,
    new_held,
    publish_claimed,
    publish_release,
    release_event,
)
from mailmoat_records.trace import TraceSink
from mailmoat_records.tracedb import clean_json, clean_text

log = logging.getLogger(__name__)

CODEC = "zlib"
"""How ``data`` is compressed (the standard library's zlib; Python 3.11 has no zstd)."""
LEVEL = 6
INLINE_COMPRESS = 64 * 1024
"""Messages up to this size are compressed in the event loop; larger ones in a worker thread."""
PRUNE_BATCH = 500
RELAY_AFTER = float(os.environ.get("MAILMOAT_QUARANTINE_RELAY_AFTER", "60"))
"""Seconds a claimed release may stay unmarked before ``relay`` publishes it again (the releasing
process marks it within its publish timeout, 10 s, unless it died)."""
RELAY_BATCH = 100

RELAYED = Counter("mailmoat_quarantine_releases_relayed_total",
                  "Recipients of quarantine releases published again by routing because the releasing process "
                  "stopped before marking them released.")

_COLUMNS = ("q.qid, q.received_at, q.expires, q.reason, q.result, q.detail, q.release_by, q.envelope, q.verdicts, "
            "q.author, q.authors, "
            "(SELECT coalesce(json_object_agg(r.recipient, json_build_object("
            "'at', extract(epoch FROM r.released_at), 'by', coalesce(r.released_by, '')) "
            "ORDER BY r.released_at, array_position(q.recipients, r.address)), '{}') "
            "FROM quarantine_recipients r WHERE r.qid = q.qid AND r.state <> 'held')")
"""The columns of a ``Held``; its release marks in the order they were made (as Redis lists them)."""


_INSERT = ("INSERT INTO quarantine (qid, received_at, expires, reason, result, detail, release_by, sender, "
           "senders, recipients, author, authors, envelope, verdicts, size, codec, data) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
           "ON CONFLICT (qid) DO NOTHING RETURNING qid")
"""A held message's row (``_row``); returns its qid, nothing when the id is held already."""


def compress(data: bytes) -> bytes:
    return zlib.compress(data, LEVEL)


def decompress(data: bytes, codec: str) -> bytes:
    if codec != CODEC:
        raise ValueError(f"unknown quarantine codec {codec!r}")
    return zlib.decompress(data)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _row(held: Held, size: int, packed: bytes) -> tuple[Any, ...]:
    """``_INSERT``'s values for ``held``: ``size`` its original length, ``packed`` the data compressed."""
    envelope = held.envelope
    senders = sorted({envelope.mail_from.lower(), *(a.lower() for a in held.authors)})
    recipients = list(dict.fromkeys(envelope.rcpt_to))
    return (held.id, _at(held.created), _at(held.expires), clean_text(held.reason),
            held.result and clean_text(held.result), clean_text(held.detail), held.release_by,
            clean_text(envelope.mail_from), [clean_text(s) for s in senders], [clean_text(r) for r in recipients],
            clean_text(held.author), [clean_text(a) for a in held.authors],
            Jsonb(clean_json(envelope.model_dump(mode="json"))), Jsonb(clean_json(held.verdicts)), size, CODEC, packed)


def _held(row: Sequence[Any], data: bytes | None = None) -> Held:
    qid, received, expires, reason, result, detail, release_by, envelope, verdicts, author, authors, released = row[:12]
    return Held(
        id=qid, envelope=Envelope.model_validate(envelope), reason=reason, result=result, detail=detail,
        created=received.timestamp(), expires=expires.timestamp(), release_by=release_by, verdicts=verdicts,
        released=dict(released), data=data, author=author, authors=list(authors),
    )


class QuarantineDB:
    """The quarantine in PostgreSQL (a pool of its own, opened on first use)."""

    def __init__(self, url: str, *, pool: AsyncConnectionPool | None = None, max_size: int = 4,
                 timeout: float = 10.0):
        self.pool = pool or open_pool(url, max_size=max_size, name="quarantine")
        self.timeout = timeout
        self._opened = pool is not None
        self._opening = asyncio.Lock()
        self._reported: set[str] = set()

    async def open(self) -> None:
        async with self._opening:
            if not self._opened:
                await self.pool.open(wait=False)
                self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.pool.close()
            self._opened = False

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; a database that does not answer raises ``QuarantineUnavailable``."""
        if not self._opened:
            await self.open()
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise QuarantineUnavailable(f"quarantine database: {exc}") from exc

    # --- holding ------------------------------------------------------------------------------------

    async def put(self, envelope: Envelope, data: bytes, *, reason: str, result: str | None, detail: str,
                  settings: Quarantine, now: float | None = None) -> tuple[Held, bool]:
        """Hold a message (committed when this returns); (the record, False when it was held already)."""
        held = new_held(envelope, data, reason=reason, result=result, detail=detail, settings=settings, now=now)
        now = held.created
        packed = compress(data) if len(data) <= INLINE_COMPRESS else await asyncio.to_thread(compress, data)
        recipients = list(dict.fromkeys(envelope.rcpt_to))
        async with self._conn() as conn, conn.transaction():
            # An earlier hold of this id whose retention ended and was not pruned yet makes way.
            await conn.execute("DELETE FROM quarantine WHERE qid = %s AND expires <= %s", (held.id, _at(now)))
            cur = await conn.execute(_INSERT, _row(held, len(data), packed))
            created = await cur.fetchone() is not None
            if created:
                await conn.execute(
                    "INSERT INTO quarantine_recipients (qid, recipient, address, received_at) "
                    "SELECT %s, lower(a), a, %s FROM unnest(%s::text[]) AS a ON CONFLICT DO NOTHING",
                    (held.id, _at(now), [clean_text(r) for r in recipients]))
        return held, created

    async def get(self, qid: str, *, data: bool = False) -> Held | None:
        columns = _COLUMNS + (", q.data, q.codec" if data else "")
        async with self._conn() as conn:
            cur = await conn.execute(f"SELECT {columns} FROM quarantine q WHERE q.qid = %s AND q.expires > %s",
                                     (qid, _at(time.time())))
            row = await cur.fetchone()
        if row is None:
            return None
        body = None
        if data:
            packed, codec = row[12], row[13]
            body = decompress(packed, codec) if len(packed) <= INLINE_COMPRESS else \
                await asyncio.to_thread(decompress, packed, codec)
        return _held(row, body)

    # --- expiry and size ----------------------------------------------------------------------------

    async def prune(self, now: float | None = None) -> int:
        """Delete the held messages whose retention ended (batches of ``PRUNE_BATCH``); how many."""
        now = time.time() if now is None else now
        pruned = 0
        while True:
            async with self._conn() as conn:
                cur = await conn.execute(
                    "DELETE FROM quarantine WHERE qid IN (SELECT qid FROM quarantine WHERE expires <= %s "
                    "ORDER BY expires LIMIT %s FOR UPDATE SKIP LOCKED)", (_at(now), PRUNE_BATCH))
                batch = cur.rowcount
            pruned += batch
            if batch < PRUNE_BATCH:
                return pruned

    async def totals(self) -> dict[str, tuple[int, int]]:
        """Reason -> (messages, bytes) held (expired holds pruned first). A reason this store reported
        before and no longer holds comes as (0, 0), so a gauge set from it goes down to zero."""
        await self.prune()
        async with self._conn() as conn:
            cur = await conn.execute("SELECT reason, count(*), coalesce(sum(size), 0) FROM quarantine "
                                     "WHERE expires > %s GROUP BY reason", (_at(time.time()),))
            rows = await cur.fetchall()
        out = {reason: (0, 0) for reason in self._reported}
        out.update({reason: (int(count), int(size)) for reason, count, size in rows})
        self._reported.update(out)
        return out

    async def ids(self) -> list[str]:
        """Ids held, soonest to expire first."""
        await self.prune()
        async with self._conn() as conn:
            cur = await conn.execute("SELECT qid FROM quarantine WHERE expires > %s ORDER BY expires, qid",
                                     (_at(time.time()),))
            return [row[0] for row in await cur.fetchall()]

    # --- listing ------------------------------------------------------------------------------------

    async def list(self, *, recipient: str | None = None, sender: str | None = None, reason: str | None = None,
                   since: float | None = None, until: float | None = None) -> list[Held]:
        """Held messages, oldest first, filtered; ``sender`` matches the envelope sender or a From address."""
        where, args = ["q.expires > %s"], [_at(time.time())]
        if recipient:
            where.append("q.qid IN (SELECT r.qid FROM quarantine_recipients r WHERE r.recipient = %s)")
            args.append(recipient.lower())
        if sender is not None:
            where.append("q.senders @> ARRAY[%s]::text[]")
            args.append(sender.lower())
        if reason:
            where.append("(q.reason = %s OR q.result = %s)")
            args += [reason, reason]
        if since is not None:
            where.append("q.received_at >= %s")
            args.append(_at(since))
        if until is not None:
            where.append("q.received_at <= %s")
            args.append(_at(until))
        async with self._conn() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM quarantine q WHERE {' AND '.join(where)} "
                                     "ORDER BY q.received_at, q.qid", args)
            return [_held(row) for row in await cur.fetchall()]

    # --- release ------------------------------------------------------------------------------------

    async def claim(self, qid: str, recipients: list[str], who: str = "", role: str = "admin") -> list[str] | None:
        """Mark recipients ``releasing`` (one conditional update): those this call claimed, None when
        the message is gone. The claim is the release's outbox entry until ``mark`` (or ``relay``)."""
        now = time.time()
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute("SELECT 1 FROM quarantine WHERE qid = %s AND expires > %s FOR SHARE",
                                     (qid, _at(now)))
            if await cur.fetchone() is None:
                return None
            cur = await conn.execute(
                "UPDATE quarantine_recipients SET state = 'releasing', released_at = %s, released_by = %s, "
                "role = %s WHERE qid = %s AND recipient = ANY(%s) AND state = 'held' RETURNING recipient",
                (_at(now), clean_text(who), role, qid, [r.lower() for r in recipients]))
            wanted = {row[0] for row in await cur.fetchall()}
        return [r for r in recipients if r.lower() in wanted]

    async def unclaim(self, qid: str, recipients: list[str]) -> None:
        """Undo a claim whose publish failed (the recipients are held again)."""
        if not recipients:
            return
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE quarantine_recipients SET state = 'held', released_at = NULL, released_by = NULL, role = NULL "
                "WHERE qid = %s AND recipient = ANY(%s) AND state = 'releasing'",
                (qid, [r.lower() for r in recipients]))

    async def mark(self, qid: str, recipients: list[str]) -> None:
        """The release of ``recipients`` was published (confirmed): they are ``released``."""
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE quarantine_recipients SET state = 'released', published_at = now() "
                "WHERE qid = %s AND recipient = ANY(%s) AND state = 'releasing'",
                (qid, [r.lower() for r in recipients]))

    async def send_release(self, bus: Bus, held: Held, recipients: list[str], who: str, role: Role) -> list[str]:
        """Claim, publish, mark. A publish that fails undoes the claim; a process that dies after the
        claim leaves it for ``relay``. The recipients this call released."""
        claimed = await publish_claimed(self, bus, held, await self.claim(held.id, recipients, who, role))
        if claimed:
            await self.mark(held.id, claimed)
        return claimed

    async def relay(self, bus: Bus, trace: TraceSink | None = None, *, older_than: float = RELAY_AFTER,
                    now: float | None = None) -> int:
        """Publish again the releases claimed more than ``older_than`` seconds ago and never marked (their
        process died), then mark them; the recipients relayed. Rows are locked while they are relayed
        (another relay skips them); a relay that dies leaves them for the next."""
        now = time.time() if now is None else now
        relayed = 0
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT r.qid, r.address, coalesce(r.released_by, ''), coalesce(r.role, 'admin') "
                "FROM quarantine_recipients r WHERE r.state = 'releasing' AND r.released_at <= %s "
                "ORDER BY r.released_at LIMIT %s FOR UPDATE SKIP LOCKED", (_at(now - older_than), RELAY_BATCH))
            pending: dict[str, list[tuple[str, str, str]]] = {}
            for qid, address, who, role in await cur.fetchall():
                pending.setdefault(qid, []).append((address, who, role))
            for qid, rows in pending.items():
                cur = await conn.execute(f"SELECT {_COLUMNS}, q.data, q.codec FROM quarantine q WHERE q.qid = %s",
                                         (qid,))
                row = await cur.fetchone()
                if row is None:
                    continue
                held = _held(row, decompress(row[12], row[13]))
                addresses = [address for address, _, _ in rows]
                await publish_release(bus, held, addresses)
                await conn.execute(
                    "UPDATE quarantine_recipients SET state = 'released', published_at = now() "
                    "WHERE qid = %s AND recipient = ANY(%s) AND state = 'releasing'",
                    (qid, [a.lower() for a in addresses]))
                relayed += len(addresses)
                RELAYED.inc(len(addresses))
                log.warning("relayed the unfinished release of %s to %s", qid, ", ".join(addresses),
                            extra={"message_id": qid})
                if trace is not None:
                    _, who, role = rows[0]
                    await trace.record(release_event(held, addresses, role, who, " (relayed after an interruption)"))
        return relayed

    async def delete(self, qid: str) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute("DELETE FROM quarantine WHERE qid = %s RETURNING expires > %s",
                                     (qid, _at(time.time())))
            row = await cur.fetchone()
        return bool(row and row[0])

    # --- import -------------------------------------------------------------------------------------

    async def insert_held(self, held: Held, data: bytes, size: int | None = None) -> bool:
        """Store a message held elsewhere (``mailmoat db import-redis``) as it is, with its release
        marks; False when this id is held here already."""
        recipients = list(dict.fromkeys(held.envelope.rcpt_to))
        released = {k.lower(): v for k, v in held.released.items()}
        packed = await asyncio.to_thread(compress, data)
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(_INSERT, _row(held, len(data) if size is None else size, packed))
            if await cur.fetchone() is None:
                return False
            for address in recipients:
                mark = released.get(address.lower())
                at = _at(float(mark.get("at", held.created))) if mark else None
                await conn.execute(
                    "INSERT INTO quarantine_recipients (qid, recipient, address, received_at, state, released_at, "
                    "released_by, published_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (held.id, clean_text(address.lower()), clean_text(address), _at(held.created),
                     "released" if mark else "held", at, clean_text(str(mark.get("by", ""))) if mark else None, at))
        return True


async def relay_forever(store: QuarantineDB, bus: Bus, trace: TraceSink | None = None, *,
                        interval: float = 5.0, older_than: float = RELAY_AFTER) -> None:
    """Routing's relay loop: unfinished releases published again every ``interval`` seconds."""
    interval = min(interval, max(0.2, older_than / 2))
    while True:
        try:
            await store.relay(bus, trace, older_than=older_than)
        except Exception as exc:  # database or broker down: the rows wait for the next round
            log.warning("could not relay unfinished quarantine releases: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(interval)


__all__ = ["CODEC", "RELAY_AFTER", "QuarantineDB", "compress", "decompress", "relay_forever"]
