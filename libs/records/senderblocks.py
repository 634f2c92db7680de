"""Blocked senders managed in the console (``sender_blocks``), read by the antispam stage.

EOP's Tenant Allow/Block List entries made from the quarantine: an address (``sender``) or a domain
(``domain``, its subdomains included) blocked until an expiry (30 days by default). The console writes them
(``SenderBlocks``); the antispam stage reads the entries in force through ``CachedBlockList``, a copy kept in
the process and read again from PostgreSQL at most every ``ttl`` seconds, and treats them exactly as the
policy's ``antispam.blocked_senders`` / ``blocked_domains``. A database that does not answer never holds mail
up: the last copy read stays in use (each entry still ends at its expiry), named in the verdict's notes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # psycopg is imported where a database is read: not by an antispam stage with records in Redis
    import psycopg
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

Kind = Literal["sender", "domain"]
DEFAULT_DAYS = 30
"""An entry's lifetime unless told (EOP's default for block entries)."""
MAX_DAYS = 365
MAX_ENTRIES = 10_000
"""Entries in force at most (the antispam stage holds them all in memory)."""
REFRESH = 30.0
"""Seconds the antispam stage uses its copy before reading the table again."""
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LOCAL = re.compile(r"^[!-~]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BlockError(ValueError):
    """Not an address or domain that can be blocked, or too many entries."""


def normalize(kind: str, value: str) -> tuple[Kind, str]:
    """The entry as stored and compared: lower case, no angle brackets or trailing dot; ``BlockError`` otherwise."""
    text = value.strip().strip("<>").strip().lower().rstrip(".")
    if kind == "sender":
        local, at, domain = text.rpartition("@")
        if not at or "@" in local or not _LOCAL.match(local) or not _DOMAIN.match(domain):
            raise BlockError(f"{value[:100]!r} is not an email address")
        return "sender", text
    if kind == "domain":
        if not _DOMAIN.match(text) or "." not in text:
            raise BlockError(f"{value[:100]!r} is not a domain")
        return "domain", text
    raise BlockError(f"not a kind of entry: {kind[:20]!r} (sender or domain)")


@dataclass(frozen=True)
class SenderBlock:
    id: int
    kind: Kind
    value: str
    created_at: datetime
    expires_at: datetime
    created_by: str
    qid: str | None
    note: str


@dataclass(frozen=True)
class BlockList:
    """The entries in force when read: value → expiry (epoch seconds)."""

    senders: dict[str, float] = field(default_factory=dict)
    domains: dict[str, float] = field(default_factory=dict)

    def at(self, now: float) -> tuple[frozenset[str], list[str]]:
        """The addresses and domains still in force at ``now``."""
        return (frozenset(a for a, until in self.senders.items() if until > now),
                [d for d, until in self.domains.items() if until > now])

    def __len__(self) -> int:
        return len(self.senders) + len(self.domains)


_COLUMNS = "id, kind, value, created_at, expires_at, created_by, qid, note"


def _dict_cursor(conn: psycopg.AsyncConnection) -> psycopg.AsyncCursor:
    """A cursor whose rows are dicts."""
    from psycopg.rows import dict_row

    return conn.cursor(row_factory=dict_row)


class SenderBlocks:
    """The console's side: add, list and remove entries (the caller audits); expired entries are deleted at the
    next add."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def add(self, kind: str, value: str, *, by: str, days: int = DEFAULT_DAYS, qid: str | None = None,
                  note: str = "") -> SenderBlock:
        """Block ``value`` for ``days`` from now; an entry already there gets the new expiry, author and note."""
        kind, value = normalize(kind, value)
        if not 1 <= days <= MAX_DAYS:
            raise BlockError(f"days: 1 to {MAX_DAYS}")
        async with self.pool.connection() as conn:
            cur = _dict_cursor(conn)
            await cur.execute("DELETE FROM sender_blocks WHERE expires_at <= now()")  # expired: gone
            await cur.execute("SELECT count(*) AS n FROM sender_blocks")
            row = await cur.fetchone()
            if row is not None and row["n"] >= MAX_ENTRIES:
                raise BlockError(f"{MAX_ENTRIES} entries in force already: remove some first")
            await cur.execute(
                "INSERT INTO sender_blocks (kind, value, expires_at, created_by, qid, note) "
                "VALUES (%s, %s, now() + %s, %s, %s, %s) "
                "ON CONFLICT (kind, value) DO UPDATE SET expires_at = excluded.expires_at, created_at = now(), "
                f"created_by = excluded.created_by, qid = excluded.qid, note = excluded.note RETURNING {_COLUMNS}",
                (kind, value, timedelta(days=days), by[:200], qid, _CONTROL.sub(" ", note)[:500]))
            return SenderBlock(**await cur.fetchone())

    async def remove(self, entry_id: int) -> SenderBlock | None:
        if not 0 < entry_id < 2**63:
            return None
        async with self.pool.connection() as conn:
            cur = _dict_cursor(conn)
            await cur.execute(f"DELETE FROM sender_blocks WHERE id = %s RETURNING {_COLUMNS}", (entry_id,))
            row = await cur.fetchone()
            return SenderBlock(**row) if row else None

    async def entries(self) -> list[SenderBlock]:
        """The entries in force, newest first."""
        async with self.pool.connection() as conn:
            cur = _dict_cursor(conn)
            await cur.execute(f"SELECT {_COLUMNS} FROM sender_blocks WHERE expires_at > now() "
                              "ORDER BY created_at DESC, id DESC LIMIT %s", (MAX_ENTRIES,))
            return [SenderBlock(**r) for r in await cur.fetchall()]

    async def prune(self) -> int:
        """Delete the expired entries; how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM sender_blocks WHERE expires_at <= now()")
            return cur.rowcount


async def read_block_list(conn: psycopg.AsyncConnection) -> BlockList:
    """The entries in force (at most ``MAX_ENTRIES``)."""
    cur = conn.cursor()
    await cur.execute("SELECT kind, value, extract(epoch FROM expires_at)::float8 FROM sender_blocks "
                      "WHERE expires_at > now() ORDER BY id LIMIT %s", (MAX_ENTRIES,))
    senders: dict[str, float] = {}
    domains: dict[str, float] = {}
    for kind, value, until in await cur.fetchall():
        (senders if kind == "sender" else domains)[value] = until
    return BlockList(senders, domains)


class CachedBlockList:
    """The antispam stage's side: the entries in force, read again at most every ``ttl`` seconds on one
    connection of its own; a read that fails or takes over ``timeout`` keeps the last copy (retried after
    ``ttl``)."""

    def __init__(self, url: str, *, ttl: float = REFRESH, timeout: float = 2.0,
                 loader: Callable[[], Awaitable[BlockList]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        import psycopg  # noqa: F401  (at start-up, where the list is read: not with the first message)

        self.url = url
        self.ttl = ttl
        self.timeout = timeout
        self._loader = loader or self._read
        self._clock = clock
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._list = BlockList()
        self._next = float("-inf")
        self.problem: str | None = None
        """Why the copy in use is older than ``ttl`` (None: it is fresh)."""

    async def current(self) -> BlockList:
        if self._clock() < self._next:
            return self._list
        async with self._lock:
            if self._clock() < self._next:
                return self._list
            import psycopg

            try:
                async with asyncio.timeout(self.timeout):
                    self._list = await self._loader()
                self.problem = None
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._drop()
                if self.problem is None:
                    log.warning("antispam: the console's blocked senders could not be read: %s", exc)
                self.problem = f"blocked senders not read: {type(exc).__name__}"
            self._next = self._clock() + self.ttl
            return self._list

    async def _read(self) -> BlockList:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.timeout)),
                application_name="mailmoat-antispam")
        return await read_block_list(self._conn)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # closing a broken connection
                pass

    async def close(self) -> None:
        await self._drop()
