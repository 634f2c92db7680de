"""The quarantine: held messages kept whole in Redis, listed, released (once) and deleted.

Why Redis: every routing replica and the command line share it, its scripts are atomic, and
deployment runs it with AOF persistence (docker-compose.yml, deploy/k8s/base/redis.yaml) so held
messages survive a restart.

Keys (each expires with its message):
- ``mailmoat:quarantine:<id>``: hash of ``meta`` (JSON: reason, verdicts, times, who may release),
  ``envelope`` (JSON) and ``data`` (the original bytes);
- ``mailmoat:quarantine:released:<id>``: hash recipient → release record; a recipient is released
  only by the caller that adds its field (HSETNX), so two releases never deliver twice;
- ``mailmoat:quarantine:index``: sorted set of ids by expiry time, pruned of expired ids;
- ``mailmoat:quarantine:sizes``: hash id → ``<bytes> <reason>`` of every id counted, and
  ``mailmoat:quarantine:count`` / ``mailmoat:quarantine:bytes``: hashes reason → messages / bytes
  held. The scripts that hold, delete and prune keep the three in step, so the quarantine's size is
  two small reads (``totals``) however many messages it holds. A message stays counted until it is
  deleted or its retention ends (a release keeps it for the recipients not released); one held
  before these counters existed is not counted.

The id of a held message is its queue id: a message redelivered to routing is held once.

The same store in PostgreSQL: ``mailmoat_records.quarantinedb.QuarantineDB`` (same methods);
``open_quarantine`` picks one by ``Settings.records`` (docs/decisions/010, *Quarantine*).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mailmoat_mail.author import read_author
from mailmoat_platform import redisclient
from mailmoat_platform.bus import Bus, Publish, stage_queue
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.verdicts import detail_of
from mailmoat_policy import Quarantine
from mailmoat_records.trace import TraceSink

if TYPE_CHECKING:
    from mailmoat_platform.settings import Settings

KEY = "mailmoat:quarantine:"
RELEASED = "mailmoat:quarantine:released:"
INDEX = "mailmoat:quarantine:index"
SIZES = "mailmoat:quarantine:sizes"
COUNT = "mailmoat:quarantine:count"
BYTES = "mailmoat:quarantine:bytes"
PRUNE_BATCH = 500
"""Expired ids one prune script call handles (it loops), so Redis is never held long."""
SPAM_REASONS = frozenset({"spam", "bulk", "spoof"})
"""Reasons kept for ``retention.spam_days`` (the rest for ``default_days``)."""

Role = Literal["admin", "user"]

# Uncount an id (KEYS: sizes, count, bytes; the id in ``id``): once, whoever comes first.
_FORGET = """
local function forget(id)
  local entry = redis.call('HGET', KEYS[1], id)
  if not entry then return end
  local size, reason = string.match(entry, '^(%d+) (.*)$')
  redis.call('HDEL', KEYS[1], id)
  if reason then
    redis.call('HINCRBY', KEYS[2], reason, -1)
    redis.call('HINCRBY', KEYS[3], reason, -tonumber(size))
  end
end
"""

_PUT = _FORGET + """
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('HSET', KEYS[4], 'meta', ARGV[1], 'envelope', ARGV[2], 'data', ARGV[3])
redis.call('EXPIREAT', KEYS[4], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
forget(ARGV[5])  -- an earlier hold of this id that expired and was not pruned yet
redis.call('HSET', KEYS[1], ARGV[5], string.len(ARGV[3]) .. ' ' .. ARGV[6])
redis.call('HINCRBY', KEYS[2], ARGV[6], 1)
redis.call('HINCRBY', KEYS[3], ARGV[6], string.len(ARGV[3]))
return 1
"""

_DELETE = _FORGET + """
local removed = redis.call('DEL', KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
forget(ARGV[1])
return removed
"""

_PRUNE = _FORGET + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  forget(id)
  redis.call('ZREM', KEYS[4], id)
end
return #ids
"""

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local claimed = {}
for i = 3, #ARGV do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[1]) == 1 then claimed[#claimed + 1] = ARGV[i] end
end
redis.call('EXPIREAT', KEYS[2], ARGV[2])
return claimed
"""


def retention_days(settings: Quarantine, reason: str) -> int:
    return settings.retention.spam_days if reason in SPAM_REASONS else settings.retention.default_days


def release_role(release_by: dict[str, str], reason: str, result: str | None = None) -> Role:
    """Who may release a message held for ``reason`` (its antivirus result, then its category)."""
    for key in (result, reason):
        if key and key in release_by:
            return "admin" if release_by[key] == "admin" else "user"
    return "user"


@dataclass
class Held:
    """One quarantined message (``data`` only when asked for)."""

    id: str
    envelope: Envelope
    reason: str
    """The category that held it: ``malware``, ``hcphish``, ..., ``dmarc_quarantine``, ``rule``."""
    result: str | None
    detail: str
    created: float
    expires: float
    release_by: Role
    verdicts: dict[str, Any] = field(default_factory=dict)
    released: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: bytes | None = None
    author: str = ""
    """The From as a mail client shows it (``mailmoat_mail.author``), read when the message was held."""
    authors: list[str] = field(default_factory=list)
    """The author addresses (every mailbox, and what a From that does not parse shows)."""

    @property
    def pending(self) -> list[str]:
        """Recipients not released yet."""
        return [r for r in self.envelope.rcpt_to if r.lower() not in {k.lower() for k in self.released}]


def new_held(envelope: Envelope, data: bytes, *, reason: str, result: str | None, detail: str,
             settings: Quarantine, now: float | None = None) -> Held:
    """The record of a message held at ``now``: its expiry, who may release it, its author (read from ``data``)."""
    now = time.time() if now is None else now
    author = read_author(data)
    return Held(
        id=envelope.id, envelope=envelope, reason=reason, result=result, detail=detail, created=now,
        expires=now + retention_days(settings, reason) * 86400,
        release_by=release_role(settings.release_by, reason, result),
        verdicts={k: v.model_dump(mode="json") for k, v in envelope.verdicts.items()},
        author=author.display()[:500] or (author.problem or ""), authors=author.addresses[:20],
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class QuarantineUnavailable(OSError):
    """The quarantine's database did not answer (an OSError, as a Redis connection failure is)."""


class HeldStore(Protocol):
    """What the quarantine offers, in Redis (``QuarantineStore``) or PostgreSQL (``QuarantineDB``)."""

    async def put(self, envelope: Envelope, data: bytes, *, reason: str, result: str | None, detail: str,
                  settings: Quarantine, now: float | None = None) -> tuple[Held, bool]: ...
    async def get(self, qid: str, *, data: bool = False) -> Held | None: ...
    async def prune(self, now: float | None = None) -> int: ...
    async def totals(self) -> dict[str, tuple[int, int]]: ...
    async def ids(self) -> list[str]: ...
    async def list(self, *, recipient: str | None = None, sender: str | None = None, reason: str | None = None,
                   since: float | None = None, until: float | None = None) -> list[Held]: ...
    async def claim(self, qid: str, recipients: list[str], who: str = "") -> list[str] | None: ...
    async def unclaim(self, qid: str, recipients: list[str]) -> None: ...
    async def delete(self, qid: str) -> bool: ...
    async def send_release(self, bus: Bus, held: Held, recipients: list[str], who: str, role: Role) -> list[str]: ...
    async def close(self) -> None: ...


class QuarantineStore:
    """The quarantine in Redis."""

    def __init__(self, client: redisclient.Redis):
        self.client = client
        self._put = client.register_script(_PUT)
        self._claim = client.register_script(_CLAIM)
        self._delete = client.register_script(_DELETE)
        self._prune = client.register_script(_PRUNE)

    async def put(self, envelope: Envelope, data: bytes, *, reason: str, result: str | None, detail: str,
                  settings: Quarantine, now: float | None = None) -> tuple[Held, bool]:
        """Hold a message; (the record, False when it was held already)."""
        held = new_held(envelope, data, reason=reason, result=result, detail=detail, settings=settings, now=now)
        now, expires = held.created, held.expires
        meta = {
            "reason": reason, "result": result, "detail": detail, "created": now, "expires": expires,
            "release_by": held.release_by, "verdicts": held.verdicts, "author": held.author,
            "authors": held.authors,
        }
        created = await self._put(
            keys=[SIZES, COUNT, BYTES, KEY + held.id, INDEX],
            args=[json.dumps(meta), envelope.model_dump_json(), data, int(expires) + 1, held.id, reason],
        )
        return held, bool(created)

    async def get(self, qid: str, *, data: bool = False) -> Held | None:
        fields = ["meta", "envelope", "data"] if data else ["meta", "envelope"]
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(KEY + qid, fields)
            pipe.hgetall(RELEASED + qid)
            values, released = await pipe.execute()
        if values[0] is None:
            return None
        return self._held(qid, values, released, data)

    @staticmethod
    def _held(qid: str, values: list[Any], released: dict[Any, Any], data: bool) -> Held:
        meta = json.loads(values[0])
        return Held(
            id=qid, envelope=Envelope.model_validate_json(values[1]), reason=meta["reason"],
            result=meta.get("result"), detail=meta.get("detail", ""), created=meta["created"],
            expires=meta["expires"], release_by=meta.get("release_by", "user"), verdicts=meta.get("verdicts", {}),
            released={_text(k): json.loads(v) for k, v in released.items()},
            data=values[2] if data else None, author=meta.get("author", ""), authors=meta.get("authors", []),
        )

    async def prune(self, now: float | None = None) -> int:
        """Drop expired ids from the index and the counts (their keys expire on their own)."""
        now = time.time() if now is None else now
        pruned = 0
        while True:
            batch = int(await self._prune(keys=[SIZES, COUNT, BYTES, INDEX], args=[now, PRUNE_BATCH]))
            pruned += batch
            if batch < PRUNE_BATCH:
                return pruned

    async def totals(self) -> dict[str, tuple[int, int]]:
        """Reason → (messages, bytes) held, from the maintained counts (expired ids pruned first)."""
        await self.prune()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(COUNT)
            pipe.hgetall(BYTES)
            counts, sizes = await pipe.execute()
        sizes = {_text(k): int(v) for k, v in sizes.items()}
        return {_text(k): (max(0, int(v)), max(0, sizes.get(_text(k), 0))) for k, v in counts.items()}

    async def ids(self) -> list[str]:
        await self.prune()
        return [_text(i) for i in await self.client.zrange(INDEX, 0, -1)]

    async def list(self, *, recipient: str | None = None, sender: str | None = None, reason: str | None = None,
                   since: float | None = None, until: float | None = None) -> list[Held]:
        """Held messages, oldest first, filtered; ``sender`` matches the envelope sender or a From address."""
        ids = await self.ids()
        out: list[Held] = []
        async with self.client.pipeline(transaction=False) as pipe:
            for qid in ids:
                pipe.hmget(KEY + qid, ["meta", "envelope"])
                pipe.hgetall(RELEASED + qid)
            results = await pipe.execute() if ids else []
        for index, qid in enumerate(ids):
            values, released = results[2 * index], results[2 * index + 1]
            if values[0] is None:
                continue
            held = self._held(qid, values, released, False)
            if recipient and recipient.lower() not in [r.lower() for r in held.envelope.rcpt_to]:
                continue
            if sender is not None and sender.lower() not in [held.envelope.mail_from.lower(), *held.authors]:
                continue
            if reason and reason not in (held.reason, held.result):
                continue
            if since is not None and held.created < since:
                continue
            if until is not None and held.created > until:
                continue
            out.append(held)
        return sorted(out, key=lambda h: h.created)

    async def claim(self, qid: str, recipients: list[str], who: str = "") -> list[str] | None:
        """Mark recipients released; those this call released (None when the message is gone)."""
        held = await self.get(qid)
        if held is None:
            return None
        record = json.dumps({"at": time.time(), "by": who})
        claimed = await self._claim(keys=[KEY + qid, RELEASED + qid],
                                    args=[record, int(held.expires) + 1, *[r.lower() for r in recipients]])
        if claimed == -1:
            return None
        wanted = {_text(c) for c in claimed}
        return [r for r in recipients if r.lower() in wanted]

    async def unclaim(self, qid: str, recipients: list[str]) -> None:
        if recipients:
            await self.client.hdel(RELEASED + qid, *[r.lower() for r in recipients])

    async def delete(self, qid: str) -> bool:
        removed = await self._delete(keys=[SIZES, COUNT, BYTES, KEY + qid, RELEASED + qid, INDEX], args=[qid])
        return bool(removed)

    async def send_release(self, bus: Bus, held: Held, recipients: list[str], who: str, role: Role) -> list[str]:
        """Claim ``recipients``, then publish the release; a publish that fails undoes the claim.
        The recipients this call released."""
        return await publish_claimed(self, bus, held, await self.claim(held.id, recipients, who))

    async def close(self) -> None:
        """Nothing to close: the Redis client is the caller's."""


def open_quarantine(settings: Settings, client: redisclient.Redis | None = None) -> HeldStore:
    """The quarantine ``settings.records`` names: in Redis (``client``) or PostgreSQL (its own pool,
    opened on first use; ``await store.close()`` when done)."""
    if settings.records == "postgresql":
        from mailmoat_records.quarantinedb import QuarantineDB

        return QuarantineDB(settings.database_url)
    if client is None:
        raise ValueError("the Redis quarantine needs a Redis client")
    return QuarantineStore(client)


# --- release ------------------------------------------------------------------------------------


async def publish_claimed(store: HeldStore, bus: Bus, held: Held, claimed: list[str] | None) -> list[str]:
    """Publish the release of the recipients ``store.claim`` returned (``claimed``); a publish that fails
    undoes the claim. ``claimed`` itself (None: the message is gone, ``ReleaseError``)."""
    if claimed is None:
        raise ReleaseError(f"no quarantined message {held.id} (expired, deleted or never held)")
    if claimed:
        try:
            await publish_release(bus, held, claimed)
        except BaseException:
            await store.unclaim(held.id, claimed)
            raise
    return claimed


class ReleaseError(Exception):
    """A release that may not or cannot happen (the message says why)."""


@dataclass
class Released:
    recipients: list[str]
    """Recipients released by this call (empty: all asked for were released before)."""
    already: list[str]


def released_envelope(held: Held, recipients: list[str]) -> Envelope:
    """The envelope a release sends back to routing: the original, for ``recipients``, marked released."""
    envelope = held.envelope.model_copy(deep=True)
    envelope.rcpt_to = list(recipients)
    envelope.released_from = held.id
    envelope.route = None
    if "routing" not in envelope.itinerary:
        envelope.itinerary = ["routing", "egress"]
    return envelope


async def publish_release(bus: Bus, held: Held, recipients: list[str]) -> None:
    """Send the held message back to the routing queue for ``recipients`` (publisher confirm).

    Published again (a release relayed after a crash), it is the same copy: the same queue id, route
    and recipients, which egress delivers once (its dedupe record of delivered recipients)."""
    assert held.data is not None
    await bus.publish(Publish(stage_queue("routing"), released_envelope(held, recipients), held.data))


async def release(store: HeldStore, bus: Bus, trace: TraceSink, qid: str, *,
                  recipients: list[str] | None = None, role: Role = "admin", who: str = "") -> Released:
    """Release a held message to all or some of its recipients, each at most once.

    The bytes and envelope go back to the routing queue (publisher confirms), which skips the verdict
    actions for a released message. In Redis a publish that fails undoes the release marks; in
    PostgreSQL the claim is also the release's outbox entry (``QuarantineDB.send_release``).
    """
    held = await store.get(qid, data=True)
    if held is None or held.data is None:
        raise ReleaseError(f"no quarantined message {qid} (expired, deleted or never held)")
    if role == "user" and held.release_by == "admin":
        raise ReleaseError(f"{qid} was held for {held.result or held.reason}: only an administrator may release it")
    original = {r.lower(): r for r in held.envelope.rcpt_to}
    wanted = [original.get(r.lower(), r) for r in (recipients or held.envelope.rcpt_to)]
    unknown = [r for r in wanted if r.lower() not in original]
    if unknown:
        raise ReleaseError(f"not a recipient of {qid}: {', '.join(unknown)}")
    claimed = await store.send_release(bus, held, wanted, who, role)
    already = [r for r in wanted if r not in claimed]
    if claimed:
        await trace.record(release_event(held, claimed, role, who))
    return Released(claimed, already)


def release_event(held: Held, recipients: list[str], role: str, who: str, note: str = "") -> TraceEvent:
    """The ``RELEASE`` trace event of a release."""
    return TraceEvent(
        event="RELEASE", message_id=held.envelope.id, service="quarantine", recipients=recipients,
        detail=f"released from quarantine ({held.reason}) by {who or role}{note}",
        data={"quarantine_id": held.id, "role": role, "reason": held.reason},
    )


# --- the administrator's notice ------------------------------------------------------------------


def detections(verdicts: dict[str, Any]) -> list[str]:
    """What the held message's verdicts (as stored) name as detected (malware signatures)."""
    found: list[str] = []
    for stage, stored in verdicts.items():
        detail = stored.get("detail") if isinstance(stored, dict) else None
        if isinstance(detail, dict) and detail:
            verdict = Verdict(stage=stage, result=str(stored.get("result", "")), detail=detail)
            found += [name for name in detail_of(verdict).detections() if name not in found]
    return found


def admin_notice(held: Held, to: str, hostname: str, now: datetime | None = None) -> tuple[Envelope, bytes]:
    """A short message telling ``to`` that a message was quarantined for malware.

    Sent from the null sender (nothing bounces back) with an id derived from the held message, so a
    redelivered message yields one notice.
    """
    now = now or datetime.now(UTC)
    notice_id = f"{held.id}A"
    names = ", ".join(detections(held.verdicts)) or "-"
    lines = [
        f"A message was quarantined by {hostname}.",
        "",
        f"Quarantine id: {held.id}",
        f"Reason:        {held.reason} ({held.result or held.reason}): {held.detail}",
        f"Detections:    {names}",
        f"Sender:        <{held.envelope.mail_from}>",
        f"Recipients:    {', '.join(held.envelope.rcpt_to)}",
        f"Message-ID:    {held.envelope.message_id_header or '-'}",
        f"Expires:       {datetime.fromtimestamp(held.expires, UTC).isoformat(timespec='seconds')}",
        "",
        f"Review it with: mailmoat quarantine show {held.id}",
    ]
    body = "\r\n".join(_printable(line) for line in lines) + "\r\n"
    headers = [
        f"From: Mail Hygiene <postmaster@{hostname}>",
        f"To: <{to}>",
        f"Subject: Malware quarantined: {held.id}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{notice_id}@{hostname}>",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    data = ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")
    envelope = Envelope(
        id=notice_id, parent_id=held.id, received_at=now, mail_from="", rcpt_to=[to], size=len(data),
        smtputf8=not to.isascii(), body_type="8BITMIME", message_id_header=f"<{notice_id}@{hostname}>",
        direction="outbound", itinerary=["routing", "egress"],
    )
    return envelope, data


def _printable(text: str, limit: int = 900) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


__all__ = ["Held", "HeldStore", "QuarantineStore", "QuarantineUnavailable", "ReleaseError", "Released", "admin_notice",
           "detections", "open_quarantine", "publish_release", "release", "release_event", "release_role",
           "released_envelope", "retention_days"]
