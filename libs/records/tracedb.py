"""Message trace in PostgreSQL: a batch writer (for the recorder) and a paged, time-ranged reader.

A ``TraceRecord`` is what a stage hands the trace today (``TraceStore.record``'s arguments): a
message's events, and for its first record the look-up values (envelope sender, recipients,
Message-ID header, client IP; the antispam stage adds the From authors later). The writer stores:

- every event in ``trace_events``, keyed by (message_id, at, event_key), ``event_key`` a digest of the
  event's content: writing the same batch twice (a redelivery, the bus being at-least-once) adds nothing;
- a ``trace_messages`` row per record that names the sender, Message-ID or client IP;
- a ``trace_keys`` row per look-up value (kinds ``sender``, ``rcpt``, ``from``, ``msgid``, ``ip``).

One batch is one transaction: COPY into per-session staging tables, then ``INSERT … SELECT … ON
CONFLICT DO NOTHING`` into the day-partitioned tables. Day partitions missing for a batch are created
first; events older than retention are skipped (their partitions are dropped or about to be).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, errors, sql
from psycopg_pool import AsyncConnectionPool

from mailmoat_platform.models import TraceEvent

from .db import ensure_partitions, first_kept_day, utc_today
from .trace import TraceRecord

KINDS = ("msgid", "sender", "from", "rcpt", "ip")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_QUEUE_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
# Events of a message are never earlier than its queue id's time by more than this (clocks of hosts).
_CLOCK_SKEW = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_EPOCH_DAY = date(1970, 1, 1)
# A message's latest event (its status in a list) is looked for this long after its receipt: delivery
# retries end within it; a quarantine release after it is the quarantine's record to show.
_STATUS_WINDOW = timedelta(days=7)

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS _in_trace_events (LIKE trace_events) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _in_trace_messages (LIKE trace_messages) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _in_trace_keys (LIKE trace_keys) ON COMMIT DELETE ROWS;
"""
_EVENT_COLUMNS = "at, message_id, event, service, recipients, detail, data, event_key"
_MESSAGE_COLUMNS = "received_at, message_id, message_id_header, sender, recipients, client_ip"
_KEY_COLUMNS = "value, at, message_id, kind"
# One round trip moves the staged rows into the tables, in key order (writers of overlapping batches, a
# redelivery meeting the first delivery, wait for each other instead of deadlocking); the first result's
# row count is the events added.
_MOVE = (
    f"INSERT INTO trace_events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM _in_trace_events "
    "ORDER BY message_id, at, event_key ON CONFLICT DO NOTHING;"
    f"INSERT INTO trace_messages ({_MESSAGE_COLUMNS}) SELECT {_MESSAGE_COLUMNS} FROM _in_trace_messages "
    "ORDER BY message_id, received_at ON CONFLICT DO NOTHING;"
    f"INSERT INTO trace_keys ({_KEY_COLUMNS}) SELECT {_KEY_COLUMNS} FROM _in_trace_keys "
    "ORDER BY value, at, message_id, kind ON CONFLICT DO NOTHING;"
)


@dataclass(frozen=True)
class WriteResult:
    given: int  # events in the batch
    added: int  # events new to the table (0 for a batch written before)
    expired: int  # events older than retention, skipped


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the next page starts after (at, message_id), newest first."""

    at: datetime
    message_id: str

    @property
    def token(self) -> str:
        return f"{self.at.isoformat()}|{self.message_id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        at, sep, message_id = token.partition("|")
        if not sep or not message_id:
            raise ValueError(f"not a trace cursor: {token!r}")
        value = datetime.fromisoformat(at)
        return cls(value if value.tzinfo else value.replace(tzinfo=UTC), message_id)


@dataclass
class MessageSummary:
    message_id: str
    at: datetime
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    message_id_header: str | None = None
    client_ip: str | None = None
    last_event: str | None = None  # the latest event's name (DELIVER, FAIL, QUARANTINE, ...)


@dataclass
class Page:
    messages: list[MessageSummary]
    next: Cursor | None  # None: no more


# --- values ----------------------------------------------------------------------------------------

def normalize(value: str) -> str:
    """A look-up value as stored: trimmed, without angle brackets, lower case (as the Redis trace)."""
    return value.strip().strip("<>").lower()


def ip_text(value: str | None) -> str | None:
    """The canonical text of an IP address, or None when ``value`` is not one."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return None


def clean_text(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, valid UTF-8 (undecodable bytes shown as ``\\xNN``)."""
    if text.isascii() and "\x00" not in text:
        return text
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:  # bytes kept as surrogate escapes (aiosmtpd): shown as \xNN
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # other lone surrogates: shown as \udNNN
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def clean_json(value: Any) -> Any:
    """A JSON value PostgreSQL's jsonb accepts: every string and key through ``clean_text``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


def _data_json(event: TraceEvent) -> str:
    """The event's data as canonical JSON (sorted keys) that PostgreSQL's jsonb accepts."""
    try:
        data = json.dumps(event.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):  # values JSON has no type for (datetimes): as pydantic writes them
        data = json.dumps(event.model_dump(mode="json", include={"data"})["data"], sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)
    if "\\u0000" in data or (not data.isascii() and not _encodes(data)):
        data = json.dumps(clean_json(json.loads(data)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return data


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def event_key(message_id: str, at: datetime, name: str, service: str, recipients: list[str], detail: str,
              data: str) -> int:
    """A digest of an event's content (64 bits, signed for ``bigint``): the same event, the same key."""
    micros = (at - _EPOCH) // _MICROSECOND
    text = "\x1f".join((message_id, str(micros), name, service, "\x1e".join(recipients), detail, data))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def event_row(event: TraceEvent) -> tuple[Any, ...]:
    """The ``trace_events`` row of an event (columns ``_EVENT_COLUMNS``), its key a content digest."""
    at = event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC)
    recipients = [clean_text(r) for r in event.recipients]
    data = _data_json(event)
    message_id, name, service, detail = (clean_text(event.message_id), clean_text(event.event),
                                         clean_text(event.service), clean_text(event.detail))
    return at, message_id, name, service, recipients, detail, data, event_key(
        message_id, at, name, service, recipients, detail, data)


def record_keys(record: TraceRecord) -> list[tuple[str, str]]:
    """(kind, value) of every look-up value a record names."""
    keys: list[tuple[str, str]] = []
    if record.sender is not None:
        keys.append(("sender", normalize(clean_text(record.sender)) or "<>"))
    keys.extend(("rcpt", normalize(clean_text(r))) for r in record.recipients if normalize(r))
    if record.message_id_header and normalize(record.message_id_header):
        keys.append(("msgid", normalize(clean_text(record.message_id_header))))
    ip = ip_text(record.client_ip)
    if ip:
        keys.append(("ip", ip))
    keys.extend(("from", normalize(clean_text(a))) for a in record.authors if a and normalize(a))
    return list(dict.fromkeys(keys))


def queue_id_time(message_id: str) -> datetime | None:
    """The time a gateway queue id (ULID-like, ``new_message_id``) was made, or None for other ids."""
    if not _QUEUE_ID.match(message_id):
        return None
    value = 0
    for char in message_id:
        value = value * 32 + _CROCKFORD.index(char)
    try:
        return datetime.fromtimestamp((value >> 80) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


# --- binary COPY ------------------------------------------------------------------------------------
# The staging tables are filled by one binary COPY each, its rows encoded here (PostgreSQL's binary
# format: per row a field count, per field a length and the value) rather than value by value by psycopg's
# dumpers: the rows of a batch were most of the writer's CPU.

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 UTC, PostgreSQL's timestamp zero, in Unix microseconds
_NULL = struct.pack(">i", -1)
_INT8 = struct.Struct(">iq")
_LEN = struct.Struct(">i")
_TEXT_OID = 25
_FIELDS = {n: struct.pack(">h", n) for n in (4, 6, 8)}


def _micros(at: datetime) -> int:
    """Microseconds since the Unix epoch (exact: no float)."""
    return (at - _EPOCH) // _MICROSECOND


def _b_text(value: str) -> bytes:
    data = value.encode()
    return _LEN.pack(len(data)) + data


def _b_opt_text(value: str | None) -> bytes:
    return _NULL if value is None else _b_text(value)


def _b_time(micros: int) -> bytes:
    return _INT8.pack(8, micros - _PG_EPOCH_MICROS)


def _b_text_array(values: Sequence[str]) -> bytes:
    if not values:
        return _LEN.pack(12) + struct.pack(">iii", 0, 0, _TEXT_OID)
    items = [v.encode() for v in values]
    body = struct.pack(">iiiii", 1, 0, _TEXT_OID, len(items), 1) + b"".join(
        _LEN.pack(len(item)) + item for item in items)
    return _LEN.pack(len(body)) + body


def _b_inet(value: str | None) -> bytes:
    if value is None:
        return _NULL
    address = ipaddress.ip_address(value)
    packed = address.packed
    family = 2 if address.version == 4 else 3  # PGSQL_AF_INET, PGSQL_AF_INET6
    body = struct.pack(">BBBB", family, 8 * len(packed), 0, len(packed)) + packed
    return _LEN.pack(len(body)) + body


_EVENT_HEAD = struct.Struct(">hiqi")  # 8 fields, the time (length 8, value), the message id's length


def _event_copy(row: tuple[Any, ...], micros: int) -> bytes:
    """One ``trace_events`` row (``event_row``'s columns) in binary COPY format."""
    length = _LEN.pack
    mid, name, service, detail, data = (row[1].encode(), row[2].encode(), row[3].encode(), row[5].encode(),
                                        row[6].encode())
    return b"".join((_EVENT_HEAD.pack(8, 8, micros - _PG_EPOCH_MICROS, len(mid)), mid, length(len(name)), name,
                     length(len(service)), service, _b_text_array(row[4]), length(len(detail)), detail,
                     length(len(data) + 1), b"\x01", data, _INT8.pack(8, row[7])))


def _message_copy(row: tuple[Any, ...]) -> bytes:
    return b"".join((_FIELDS[6], _b_time(_micros(row[0])), _b_text(row[1]), _b_opt_text(row[2]),
                     _b_opt_text(row[3]), _b_text_array(row[4]), _b_inet(row[5])))


def _key_copy(row: tuple[Any, ...]) -> bytes:
    return b"".join((_FIELDS[4], _b_text(row[0]), _b_time(_micros(row[1])), _b_text(row[2]), _b_text(row[3])))


def _as_record(item: TraceRecord | TraceEvent) -> TraceRecord:
    return item if isinstance(item, TraceRecord) else TraceRecord(events=[item])


# --- writer ----------------------------------------------------------------------------------------

class TraceWriter:
    """Writes batches of trace records, one transaction per batch, idempotently."""

    def __init__(self, pool: AsyncConnectionPool, retention_days: int = 90):
        self.pool = pool
        self.retention_days = retention_days
        self._days: set[date] = set()  # days known to have their partitions
        self._staged: weakref.WeakSet[AsyncConnection] = weakref.WeakSet()  # sessions with staging tables

    def forget_partitions(self) -> None:
        """Check partitions again before the next write (after a job that may have dropped some)."""
        self._days.clear()

    async def write(self, batch: Sequence[TraceRecord | TraceEvent], *, today: date | None = None) -> WriteResult:
        """Store a batch; raises on a database failure (the caller keeps the batch and retries)."""
        first_kept = first_kept_day(self.retention_days, today or utc_today())
        first_kept_micros = _micros(datetime(first_kept.year, first_kept.month, first_kept.day, tzinfo=UTC))
        events: list[bytes] = []
        messages: list[bytes] = []
        keys: list[bytes] = []
        days: set[int] = set()  # days since the epoch of the rows
        expired = given = 0
        for record in map(_as_record, batch):
            given += len(record.events)
            first: tuple[Any, ...] | None = None
            first_micros = 0
            for event in record.events:
                row = event_row(event)
                micros = _micros(row[0])
                if first is None:
                    first, first_micros = row, micros
                if micros < first_kept_micros:
                    expired += 1
                else:
                    events.append(_event_copy(row, micros))
                    days.add(micros // 86_400_000_000)
            if first is None or first_micros < first_kept_micros:
                continue
            at, message_id = first[0], first[1]
            if record.sender is not None or record.message_id_header or record.client_ip:
                messages.append(_message_copy((at, message_id, clean_text(record.message_id_header or "") or None,
                                               None if record.sender is None else clean_text(record.sender),
                                               [clean_text(r) for r in record.recipients],
                                               ip_text(record.client_ip))))
            record_values = record_keys(record)
            if record_values:
                stamp, mid = _b_time(first_micros), _b_text(message_id)
                keys.extend(b"".join((_FIELDS[4], _b_text(value), stamp, mid, _b_text(kind)))
                            for kind, value in record_values)
        if not events and not messages and not keys:
            return WriteResult(given, 0, expired)
        needed = {_EPOCH_DAY + timedelta(days=d) for d in days}
        async with self.pool.connection() as conn:
            for attempt in (1, 2):
                missing = needed - self._days
                if missing:
                    await ensure_partitions(conn, missing)
                    self._days |= missing
                try:
                    added = await self._insert(conn, events, messages, keys)
                except errors.CheckViolation:  # "no partition … found for row": dropped meanwhile
                    if attempt == 2:
                        raise
                    self._days.clear()
                    continue
                return WriteResult(given, added, expired)
        raise AssertionError("unreachable")

    async def _insert(self, conn: AsyncConnection, events: list[bytes], messages: list[bytes],
                      keys: list[bytes]) -> int:
        """One transaction: the rows COPYed (binary, one stream per table) into the session's staging tables,
        then moved into the tables in one round trip."""
        try:
            if conn not in self._staged:
                async with conn.transaction():
                    await conn.execute(_STAGING, prepare=False)
                self._staged.add(conn)
            async with conn.transaction():
                cur = conn.cursor()
                for table, columns, rows in (("_in_trace_events", _EVENT_COLUMNS, events),
                                             ("_in_trace_messages", _MESSAGE_COLUMNS, messages),
                                             ("_in_trace_keys", _KEY_COLUMNS, keys)):
                    if rows:
                        async with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                            await copy.write(b"".join((_COPY_HEADER, *rows, _COPY_TRAILER)))
                await cur.execute(_MOVE, prepare=False)
                return max(0, cur.rowcount)
        except BaseException:
            self._staged.discard(conn)  # made again next time (a failed session may have lost them)
            raise


# --- reader ----------------------------------------------------------------------------------------

def _range(column: str, since: datetime | None, until: datetime | None) -> tuple[list[sql.Composable], list[Any]]:
    """Conditions and their parameters for ``since <= column < until``; a None bound is left out of the
    query (rather than compared with NULL), so the partitions are pruned from the bounds given."""
    conds: list[sql.Composable] = []
    params: list[Any] = []
    if since is not None:
        conds.append(sql.SQL("{} >= %s").format(sql.Identifier(column)))
        params.append(since)
    if until is not None:
        conds.append(sql.SQL("{} < %s").format(sql.Identifier(column)))
        params.append(until)
    return conds, params


def _where(conds: Iterable[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(list(conds))


class TraceReader:
    """Look-ups of the trace: messages by a value in a time range (paged, newest first), events of one."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def find(self, needle: str, *, since: datetime | None = None, until: datetime | None = None,
                   limit: int = 50, after: Cursor | None = None, kinds: Sequence[str] = KINDS,
                   last_event: bool = True) -> Page:
        """Messages for a queue id, Message-ID, envelope sender, From author, recipient or client IP, received
        in ``[since, until)``, newest first, at most ``limit``; ``after``: the previous page's ``next``."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with self.pool.connection() as conn:
            if after is None and self._maybe_queue_id(needle):
                found = await self._by_queue_id(conn, needle.strip(), since, until)
                if found is not None:
                    return Page(await self._summaries(conn, [found], last_event), None)
            ip = ip_text(needle)
            value = ip or normalize(needle) or "<>"
            conds, params = _range("at", since, until)
            conds = [sql.SQL("value = %s"), sql.SQL("kind = ANY(%s)"), *conds]
            params = [value, list(kinds), *params]
            if after is not None:
                conds.append(sql.SQL("(at, message_id) < (%s, %s)"))
                params += [after.at, after.message_id]
            query = sql.SQL("SELECT DISTINCT at, message_id FROM trace_keys WHERE {} "
                            "ORDER BY at DESC, message_id DESC LIMIT %s").format(_where(conds))
            # A message found by two kinds at different times (its From author is traced after its
            # sender) is shown once, where it is newest.
            return await self._page(conn, query, [*params, limit + 1], limit, last_event)

    async def received(self, *, since: datetime, until: datetime | None = None, limit: int = 50,
                       after: Cursor | None = None, last_event: bool = True) -> Page:
        """Every message received in ``[since, until)``, newest first, at most ``limit``; ``after``: the previous
        page's ``next`` (the same keyset as ``find``'s). One backward range scan of ``trace_messages_received``
        per day partition in the range, merged, stopping when the page is full."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        conds, params = _range("received_at", since, until)
        if after is not None:
            conds.append(sql.SQL("(received_at, message_id) < (%s, %s)"))
            params += [after.at, after.message_id]
        query = sql.SQL("SELECT received_at, message_id FROM trace_messages WHERE {} "
                        "ORDER BY received_at DESC, message_id DESC LIMIT %s").format(_where(conds))
        async with self.pool.connection() as conn:
            # A message with two rows (two records naming its sender) is shown once, where it is newest.
            return await self._page(conn, query, [*params, limit + 1], limit, last_event)

    async def _page(self, conn: AsyncConnection, query: sql.Composable, params: list[Any], limit: int,
                    last_event: bool) -> Page:
        """Run a keyset query of (time, message_id) rows, newest first, ``limit`` + 1 asked: the page's
        summaries (each message once, where it is newest) and the next page's cursor when there is more."""
        cur = await conn.execute(query, params)
        rows = await cur.fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        unique: dict[str, datetime] = {}
        for at, mid in rows:
            unique.setdefault(mid, at)
        summaries = await self._summaries(conn, [(at, mid) for mid, at in unique.items()], last_event)
        return Page(summaries, Cursor(*rows[-1]) if more and rows else None)

    @staticmethod
    def _maybe_queue_id(needle: str) -> bool:
        text = needle.strip()
        return bool(text) and "@" not in text and ip_text(text) is None and not text.startswith("<")

    async def _by_queue_id(self, conn: AsyncConnection, message_id: str, since: datetime | None,
                           until: datetime | None) -> tuple[datetime, str] | None:
        """(time, id) of the message with this queue id in the range: its receipt, else its first event."""
        lower = since
        made = queue_id_time(message_id)
        if made is not None and (lower is None or lower < made - _CLOCK_SKEW):
            lower = made - _CLOCK_SKEW
        for table, column in (("trace_messages", "received_at"), ("trace_events", "at")):
            conds, params = _range(column, lower, until)
            cur = await conn.execute(sql.SQL("SELECT min({}) FROM {} WHERE {}").format(
                sql.Identifier(column), sql.Identifier(table), _where([sql.SQL("message_id = %s"), *conds])),
                [message_id, *params])
            row = await cur.fetchone()
            if row and row[0] is not None:
                return row[0], message_id
        return None

    async def _summaries(self, conn: AsyncConnection, rows: list[tuple[datetime, str]],
                         last_event: bool) -> list[MessageSummary]:
        """The ``trace_messages`` rows of a page and, with ``last_event``, each message's latest event.

        One index probe per message and table (LATERAL: run-time partition pruning): a look-up key's time
        is its message's receipt, or a little after it (the ``from`` keys come with a later record); the
        latest event is looked for up to ``_STATUS_WINDOW`` after it."""
        if not rows:
            return []
        event = ("e.event", """LEFT JOIN LATERAL (
                SELECT event FROM trace_events e WHERE e.message_id = p.mid
                  AND e.at >= p.at - %(skew)s AND e.at < p.at + %(window)s ORDER BY e.at DESC LIMIT 1) e ON true"""
                 ) if last_event else ("NULL", "")
        cur = await conn.execute(f"""
            SELECT p.at, p.mid, m.received_at, m.message_id_header, m.sender, m.recipients, m.client_ip, {event[0]}
            FROM unnest(%(ids)s::text[], %(ats)s::timestamptz[]) WITH ORDINALITY AS p(mid, at, ord)
            LEFT JOIN LATERAL (
                SELECT * FROM trace_messages m WHERE m.message_id = p.mid
                  AND m.received_at >= p.at - %(skew)s - %(window)s AND m.received_at <= p.at
                ORDER BY m.received_at DESC LIMIT 1) m ON true
            {event[1]}
            ORDER BY p.ord""", {"ids": [mid for _, mid in rows], "ats": [at for at, _ in rows],
                                "skew": _CLOCK_SKEW, "window": _STATUS_WINDOW})
        found = []
        for at, mid, received_at, header, sender, recipients, client_ip, last in await cur.fetchall():
            found.append(MessageSummary(mid, received_at or at, sender, list(recipients or []), header,
                                        None if client_ip is None else str(client_ip), last))
        return found

    async def events(self, message_id: str, *, since: datetime | None = None,
                     until: datetime | None = None) -> list[TraceEvent]:
        """A message's events, oldest first (a gateway queue id bounds the scan from below by its time)."""
        made = queue_id_time(message_id)
        if made is not None and since is None:
            since = made - _CLOCK_SKEW
        conds, params = _range("at", since, until)
        query = sql.SQL("SELECT at, message_id, event, service, recipients, detail, data FROM trace_events "
                        "WHERE {} ORDER BY at, event_key").format(_where([sql.SQL("message_id = %s"), *conds]))
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, [message_id, *params])
            rows = await cur.fetchall()
        return [TraceEvent(at=at, message_id=mid, event=event, service=service, recipients=list(recipients),
                           detail=detail, data=data) for at, mid, event, service, recipients, detail, data in rows]


__all__ = [
    "KINDS", "Cursor", "MessageSummary", "Page", "TraceReader", "TraceRecord", "TraceWriter", "WriteResult",
    "clean_json", "clean_text", "event_row", "ip_text", "normalize", "queue_id_time", "record_keys",
]
