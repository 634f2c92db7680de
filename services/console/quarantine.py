"""The quarantine as the console shows and changes it: a paged listing of the PostgreSQL quarantine, a held
message's safe preview, release (through ``mailmoat_records.quarantine.release``: at most once per recipient,
its claim the outbox routing relays after a crash), delete, and "not junk" (release, then learn as ham).

Rights are decided here on the server: an end user sees only messages addressed to their own mailboxes (one
that is not theirs is ``None``, answered 404 like one that does not exist), sees and releases only their own
recipients; non-admins release only what ``quarantine.release_by`` leaves to them.
"""

from __future__ import annotations

import asyncio
import email.policy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, computed_field

from mailmoat_platform.models import TraceEvent
from mailmoat_records.quarantine import Held, HeldStore, QuarantineUnavailable, ReleaseError, release

from .digest import HEAD_BYTES, head_of, subject_of
from .rights import Principal, Right, normalize_address, releasable_recipients, release_role_of
from .safemail import SafeMessage, render
from .tracestatus import AuthResult, parse_auth_results

MAX_LIMIT = 200
LearnHam = Callable[[bytes], Awaitable[bool]]
"""Learn a message as ham (True: learned now, False: known before)."""


@dataclass(frozen=True)
class HeldQuery:
    reason: str = ""
    recipient: str = ""
    sender: str = ""
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    after: str | None = None
    """The cursor of the next page: ``<received_at ISO>|<qid>`` of the last row shown."""


class HeldRow(BaseModel):
    """A held message as a list shows it (and the API's list item)."""

    id: str
    received_at: datetime
    expires: datetime
    reason: str
    result: str | None
    detail: str
    release_by: str = Field(description="admin: only administrators release it; user: non-admins may too")
    sender: str
    author: str
    subject: str = Field(default="", description="The Subject (decoded, on one line; empty when there is none)")
    recipients: list[str] = Field(description="The recipients you may see")
    released: list[str]
    size: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def state(self) -> str:
        if not self.released:
            return "held"
        return "released" if set(self.released) >= {r.lower() for r in self.recipients} else "partly released"


@dataclass
class HeldPage:
    rows: list[HeldRow]
    next: str | None


@dataclass
class HeldView:
    held: Held
    recipients: list[str]
    """The recipients shown (an end user's own)."""
    released: dict[str, dict]
    may_release: list[str]
    """Recipients still held that the principal may release."""
    safe: SafeMessage

    @property
    def held_at(self) -> str:
        return datetime.fromtimestamp(self.held.created, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    @property
    def expires_at(self) -> str:
        return datetime.fromtimestamp(self.held.expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class QueryError(ValueError):
    """A listing's parameters do not make sense (a bad cursor)."""


def parse_cursor(text: str | None) -> tuple[datetime, str] | None:
    if not text:
        return None
    at, sep, qid = text.partition("|")
    try:
        if not sep or not qid:
            raise ValueError
        return datetime.fromisoformat(at), qid
    except ValueError:
        raise QueryError("after: not a cursor this listing gave") from None


def where_clause(query: HeldQuery, who: Principal) -> tuple[str, dict]:
    """The listing's WHERE clause and its parameters (newest first, keyset paging)."""
    where = ["q.expires > now()"]
    args: dict = {}
    if not who.sees_everything:
        where.append("q.qid IN (SELECT r.qid FROM quarantine_recipients r WHERE r.recipient = ANY(%(mine)s))")
        args["mine"] = sorted(who.addresses)
    if query.recipient and not who.sees_everything and not who.owns(query.recipient):
        where.append("FALSE")  # an end user asks only about their own mailboxes
    elif query.recipient:
        where.append("q.qid IN (SELECT r.qid FROM quarantine_recipients r WHERE r.recipient = %(recipient)s)")
        args["recipient"] = normalize_address(query.recipient)
    if query.sender:
        where.append("q.senders @> ARRAY[%(sender)s]::text[]")
        args["sender"] = "" if query.sender.strip() == "<>" else normalize_address(query.sender)
    if query.reason:
        where.append("(q.reason = %(reason)s OR q.result = %(reason)s)")
        args["reason"] = query.reason.strip()
    if query.since is not None:
        where.append("q.received_at >= %(since)s")
        args["since"] = query.since
    if query.until is not None:
        where.append("q.received_at < %(until)s")
        args["until"] = query.until
    cursor = parse_cursor(query.after)
    if cursor is not None:
        where.append("(q.received_at, q.qid) < (%(after_at)s, %(after_qid)s)")
        args["after_at"], args["after_qid"] = cursor
    return " AND ".join(where), args


def _header_fields(data: bytes, name: str) -> list[str]:
    """The values of a header field of a message (unfolded), from its header section only."""
    cut = min((i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0), default=len(data))
    head = BytesHeaderParser(policy=email.policy.compat32).parsebytes(data[:cut + 4])
    return [str(v) for v in head.get_all(name) or []]


class ConsoleQuarantine:
    """The quarantine for the console: the listing reads the tables, the rest goes through the store."""

    def __init__(self, pool: AsyncConnectionPool, store: HeldStore, *, bus_factory=None, trace_factory=None,
                 learn_ham: LearnHam | None = None):
        self.pool = pool
        self.store = store
        self._bus_factory = bus_factory
        self._trace_factory = trace_factory
        self._bus = None
        self._trace = None
        self._connecting = asyncio.Lock()
        self.learn_ham = learn_ham

    async def _bus_and_trace(self):
        """The bus a release publishes on and the trace its RELEASE goes to (connected on first use)."""
        async with self._connecting:
            if self._bus is None:
                if self._bus_factory is None:
                    raise ReleaseError("this console cannot publish releases (no message bus configured)")
                bus = self._bus_factory()
                try:
                    await bus.connect()
                except Exception as exc:  # the broker does not answer: the release waits, nothing claimed
                    raise QuarantineUnavailable(f"message bus: {type(exc).__name__}: {exc}") from exc
                self._bus, self._trace = bus, self._trace_factory(bus)
        return self._bus, self._trace

    async def close(self) -> None:
        if self._bus is not None:
            bus, self._bus, self._trace = self._bus, None, None
            try:
                await bus.close()
            except Exception:  # closing a broken connection
                pass

    # --- reading ------------------------------------------------------------------------------------

    async def page(self, query: HeldQuery, who: Principal) -> HeldPage:
        where, args = where_clause(query, who)
        args["n"] = min(max(query.limit, 1), MAX_LIMIT) + 1
        args["head"] = HEAD_BYTES
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT q.qid, q.received_at, q.expires, q.reason, q.result, q.detail, q.release_by, q.sender, "
                "q.author, q.recipients, q.size, q.codec, substring(q.data from 1 for %(head)s) AS head, "
                "coalesce((SELECT array_agg(r.recipient) FROM quarantine_recipients r "
                "WHERE r.qid = q.qid AND r.state <> 'held'), '{}') AS released "
                f"FROM quarantine q WHERE {where} ORDER BY q.received_at DESC, q.qid DESC LIMIT %(n)s", args)
            found = await cur.fetchall()
        limit = args["n"] - 1
        rows = []
        for r in found[:limit]:
            recipients = who.own_recipients(r["recipients"])
            released = [a for a in r["released"] if who.sees_everything or who.owns(a)]
            rows.append(HeldRow(id=r["qid"], received_at=r["received_at"], expires=r["expires"], reason=r["reason"],
                                result=r["result"], detail=r["detail"], release_by=r["release_by"], sender=r["sender"],
                                author=r["author"], subject=subject_of(head_of(bytes(r["head"]), r["codec"])),
                                recipients=recipients, released=released, size=r["size"]))
        following = None
        if len(found) > limit and rows:
            following = f"{rows[-1].received_at.isoformat()}|{rows[-1].id}"
        return HeldPage(rows, following)

    async def get(self, qid: str, who: Principal, *, data: bool = False) -> Held | None:
        """A held message the principal may see (None: not there, expired, or not theirs)."""
        held = await self.store.get(qid, data=data)
        if held is None or not who.may_see_message(held.envelope.rcpt_to):
            return None
        return held

    async def auth_results(self, qid: str, who: Principal) -> tuple[str, list[AuthResult]] | None:
        """The first ``Authentication-Results`` of a held message (the gateway's own, prepended by the antispam
        stage) parsed; None when it is not the principal's or has none."""
        held = await self.get(qid, who, data=True)
        if held is None or not held.data:
            return None
        fields = await asyncio.to_thread(_header_fields, held.data, "Authentication-Results")
        return parse_auth_results(fields[0]) if fields else None

    def may_release(self, held: Held, who: Principal) -> list[str]:
        if not who.can(Right.quarantine_release):
            return []
        if held.release_by == "admin" and release_role_of(who) != "admin":
            return []
        return releasable_recipients(who, held.pending)

    async def view(self, qid: str, who: Principal) -> HeldView | None:
        held = await self.get(qid, who, data=True)
        if held is None:
            return None
        safe = await asyncio.to_thread(render, held.data or b"")
        recipients = who.own_recipients(held.envelope.rcpt_to)
        shown = {normalize_address(r) for r in recipients}
        released = {k: v for k, v in held.released.items() if normalize_address(k) in shown}
        return HeldView(held, recipients, released, self.may_release(held, who), safe)

    # --- changes ------------------------------------------------------------------------------------

    async def release(self, qid: str, who: Principal, recipients: list[str] | None = None):
        """Release to the recipients asked for (all the principal may release to when none): the
        ``Released`` of ``mailmoat_records.quarantine.release``; None when the message is not theirs to see.
        ``ReleaseError`` when it may not be released by them (or to an address that is not theirs)."""
        held = await self.get(qid, who)
        if held is None:
            return None
        if not who.can(Right.quarantine_release):
            raise ReleaseError("your account may not release quarantined messages")
        if held.release_by == "admin" and release_role_of(who) != "admin":
            raise ReleaseError(f"held for {held.result or held.reason}: only an administrator may release it")
        visible = who.own_recipients(held.envelope.rcpt_to)
        asked = [normalize_address(r) for r in recipients or [] if normalize_address(r)]
        refused = [r for r in asked if r not in {normalize_address(v) for v in visible}]
        if refused:
            raise ReleaseError(f"not a recipient you may release to: {', '.join(refused)}")
        wanted = releasable_recipients(who, held.envelope.rcpt_to, asked)
        if not wanted:
            raise ReleaseError("no recipient to release to")
        bus, trace = await self._bus_and_trace()
        try:
            return await release(self.store, bus, trace, qid, recipients=wanted,
                                 role=release_role_of(who),  # type: ignore[arg-type]
                                 who=f"{who.role.value} {who.name}")
        except (ReleaseError, QuarantineUnavailable):
            raise
        except Exception as exc:  # the publish failed: the claim was undone, the message is still held
            await self.close()
            raise QuarantineUnavailable(f"the release was not published: {type(exc).__name__}: {exc}") from exc

    async def delete(self, qid: str, who: Principal) -> bool:
        """Delete a held message for good (the caller checked the right); False when it was not there."""
        if await self.get(qid, who) is None or not await self.store.delete(qid):
            return False
        try:
            _, trace = await self._bus_and_trace()
            await trace.record(TraceEvent(event="DELETE", message_id=qid, service="quarantine",
                                          detail=f"deleted from quarantine by {who.role.value} {who.name}"))
        except (ReleaseError, OSError):  # no broker: the trace misses the event, the audit log has it
            pass
        return True

    async def learn(self, qid: str, who: Principal) -> str:
        """Learn a held message as ham: ``learned``, ``known`` (learned before) or ``unavailable``."""
        if self.learn_ham is None:
            return "unavailable"
        held = await self.get(qid, who, data=True)
        if held is None or held.data is None:
            return "unavailable"
        return "learned" if await self.learn_ham(held.data) else "known"


@dataclass
class Outcome:
    """What a change did, for the page and the API."""

    released: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    learned: str = ""
