"""Message trace search and a message's timeline, with the principal's rights applied (``TraceReader``).

When a search names one of sender, recipient, Message-ID (or queue id) and client IP, the most selective one
given is looked up in the trace's index (Message-ID, then client IP, then recipient, then sender: envelope
sender or From author) within the date range, newest first, paged by the reader's cursor. When it names none
(administrators and the help desk), every message received in the date range is listed instead (EOP's trace
of a range by status), newest first, paged by the same cursor; without dates the range is the last
``DEFAULT_RANGE`` (two days), ending now (or at the end given). Either way the other fields and the status
filter the page read (a page may then hold fewer messages than the limit).

An end user searches the messages addressed to their own mailboxes only: the look-up is by one of their
addresses as recipient (the first when they name none), whatever else they give. An envelope sender is
whatever the connecting client claims, so it does not make a message someone's. A message's timeline
for an end user: 404 unless one of its recipients is theirs, and only their own recipients shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailmoat_platform.models import TraceEvent
from mailmoat_records.tracedb import Cursor, MessageSummary, TraceReader, ip_text, normalize

from .rights import Principal, normalize_address
from .tracestatus import (
    OUTCOMES,
    AuthResult,
    Delivery,
    SpamVerdict,
    deliveries,
    held_id,
    spam_verdict,
    statuses,
    traced_authentication,
)

MAX_LIMIT = 200
STATUSES = ("DELIVER", "DEFER", "FAIL", "REJECT", "QUARANTINE", "RELEASE", "DELETE", "DSN", "DEADLETTER", "ERROR")
"""Statuses offered as a filter (any outcome event name is accepted): a message matches when one of the
recipients shown is in it (``tracestatus``)."""
_EARLIER = timedelta(hours=1)
_LATER = timedelta(days=7)
"""A listed message's outcome events are looked for from an hour before its receipt (clocks) to a week after."""
_MAX_FETCHES = 5
DEFAULT_RANGE = timedelta(days=2)
"""The range listed when a search names no look-up field and no start (as EOP's trace: the last 48 hours)."""
_EARLIEST = datetime.min.replace(tzinfo=UTC)
RANGE = "range"
"""``TraceResults.looked_up`` of a listing by date range alone."""
"""Pages of the index read at most for one page of results when filters leave a page empty."""


class SearchError(ValueError):
    """The search cannot be run as given (shown to the user)."""


@dataclass(frozen=True)
class TraceQuery:
    sender: str = ""
    recipient: str = ""
    message_id: str = ""
    client_ip: str = ""
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    after: str | None = None
    status: str = ""
    """The latest event's name (DELIVER, DEFER, FAIL, QUARANTINE, ...): filters what the look-up found."""

    @property
    def empty(self) -> bool:
        return not (self.sender.strip() or self.recipient.strip() or self.message_id.strip()
                    or self.client_ip.strip())


@dataclass
class Found(MessageSummary):
    """A message as a search lists it: ``last_event`` is its most pressing status, ``statuses`` all of them."""

    statuses: list[str] = field(default_factory=list)


@dataclass
class TraceResults:
    messages: list[Found]
    next: str | None
    looked_up: str = ""
    """The field the index was searched by; ``RANGE``: every message received in ``since``..``until``."""
    since: datetime | None = None
    until: datetime | None = None
    """The range searched (with ``RANGE``: the default range when none was given)."""


@dataclass
class Timeline:
    summary: MessageSummary
    events: list[TraceEvent] = field(default_factory=list)
    """The events shown (an end user's without their data: hosts, addresses and policy details are the
    administrators')."""
    source: list[TraceEvent] | None = None
    """The events with their data, when ``events`` lack it: what the statuses and verdicts are read from."""

    @property
    def _read(self) -> list[TraceEvent]:
        return self.events if self.source is None else self.source

    @property
    def deliveries(self) -> list[Delivery]:
        """Each recipient shown and where its copy is (the latest outcome naming it)."""
        return deliveries(self._read, self.summary.recipients)

    @property
    def statuses(self) -> list[str]:
        return statuses(self.deliveries, self.summary.last_event)

    @property
    def spam(self) -> SpamVerdict | None:
        return spam_verdict(self._read)

    @property
    def held_id(self) -> str | None:
        return held_id(self._read)

    @property
    def authentication(self) -> list[AuthResult]:
        """SPF, DKIM, DMARC, ARC and compauth as the antispam stage traced them (delivered mail has no held copy
        whose ``Authentication-Results`` could be read)."""
        return traced_authentication(self._read)

    @property
    def verdicts(self) -> dict[str, Any]:
        """The verdicts the events carry (``data.verdicts`` or ``data.verdict``), by stage, latest last."""
        found: dict[str, Any] = {}
        for event in self.events:
            data = event.data or {}
            if isinstance(data.get("verdicts"), dict):
                found.update(data["verdicts"])
            if "verdict" in data:
                found[event.service] = data["verdict"]
        return found


def _primary(query: TraceQuery, principal: Principal) -> tuple[str, str, tuple[str, ...]]:
    """(field, value, index kinds) to look up."""
    if not principal.sees_everything:
        if not principal.addresses:
            raise SearchError("no mailbox is assigned to your account")
        wanted = normalize_address(query.recipient) if query.recipient.strip() else sorted(principal.addresses)[0]
        if wanted not in principal.addresses:
            raise SearchError("you can search only the mailboxes assigned to you")
        return "recipient", wanted, ("rcpt",)
    if query.message_id.strip():
        return "message_id", query.message_id.strip(), ("msgid",)
    if query.client_ip.strip():
        ip = ip_text(query.client_ip)
        if ip is None:
            raise SearchError(f"not an IP address: {query.client_ip.strip()!r}")
        return "client_ip", ip, ("ip",)
    if query.recipient.strip():
        return "recipient", query.recipient.strip(), ("rcpt",)
    if query.sender.strip():
        return "sender", query.sender.strip(), ("sender", "from")
    return RANGE, "", ()


def matches(summary: MessageSummary, query: TraceQuery, skip: str) -> bool:
    """Whether a found message fits the fields other than the one looked up (``skip``)."""
    if skip != "sender" and query.sender.strip():
        wanted = normalize(query.sender) or "<>"
        if (normalize(summary.sender or "") or "<>") != wanted:
            return False
    if skip != "recipient" and query.recipient.strip():
        if normalize(query.recipient) not in {normalize(r) for r in summary.recipients}:
            return False
    if skip != "message_id" and query.message_id.strip():
        wanted = normalize(query.message_id)
        if wanted not in (normalize(summary.message_id_header or ""), summary.message_id.lower()):
            return False
    if skip != "client_ip" and query.client_ip.strip():
        if ip_text(query.client_ip) != summary.client_ip:
            return False
    if query.status.strip():
        wanted = query.status.strip().upper()
        if wanted not in (summary.statuses if isinstance(summary, Found) else [summary.last_event or ""]):
            return False
    return True


def _utc(value: datetime | None) -> datetime | None:
    """A bound without a time zone is UTC (as the pages show times)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _visible(summary: MessageSummary, principal: Principal) -> MessageSummary:
    if principal.sees_everything:
        return summary
    return MessageSummary(summary.message_id, summary.at, summary.sender, principal.own_recipients(summary.recipients),
                          summary.message_id_header, summary.client_ip, summary.last_event)


def with_status(summary: MessageSummary, events: list[Any]) -> Found:
    """The summary (as the principal may see it) with the statuses of its recipients from its outcome events."""
    found = statuses(deliveries(events, summary.recipients), summary.last_event)
    return Found(summary.message_id, summary.at, summary.sender, summary.recipients, summary.message_id_header,
                 summary.client_ip, found[0] if found else None, found)


@dataclass(frozen=True)
class _Outcome:
    at: datetime
    event: str
    service: str
    recipients: list[str]
    detail: str


class TraceSearch:
    def __init__(self, reader: TraceReader, *, statuses: bool = True):
        self.reader = reader
        self.statuses = statuses and hasattr(reader, "pool")
        """Look up each listed message's outcome events for its statuses (else: its latest event)."""

    async def search(self, query: TraceQuery, principal: Principal) -> TraceResults:
        field_, value, kinds = _primary(query, principal)
        limit = max(1, min(query.limit, MAX_LIMIT))
        try:
            after = Cursor.parse(query.after) if query.after else None
        except ValueError:
            raise SearchError("not a page cursor") from None
        since, until = _utc(query.since), _utc(query.until)
        if field_ == RANGE and since is None:
            since = max(until or datetime.now(UTC), _EARLIEST + DEFAULT_RANGE) - DEFAULT_RANGE
        if since and until and since >= until:
            raise SearchError("the start of the range must be before its end")
        found: list[Found] = []
        for _ in range(_MAX_FETCHES):
            if field_ == RANGE:
                assert since is not None
                page = await self.reader.received(since=since, until=until, limit=limit, after=after)
            else:
                page = await self.reader.find(value, since=since, until=until, limit=limit, after=after, kinds=kinds)
            mine = [_visible(s, principal) for s in page.messages if principal.may_see_message(s.recipients)]
            outcomes = await self.outcomes(mine)
            for summary in mine:
                listed = with_status(summary, outcomes.get(summary.message_id, []))
                if matches(listed, query, field_):
                    found.append(listed)
            after = page.next
            if found or after is None:
                break
        return TraceResults(found, after.token if after else None, field_, since, until)

    async def outcomes(self, summaries: list[MessageSummary]) -> dict[str, list[_Outcome]]:
        """The outcome events of a page of messages (oldest first), by message, in one query."""
        if not summaries or not self.statuses:
            return {}
        since = min(s.at for s in summaries) - _EARLIER
        until = max(s.at for s in summaries) + _LATER
        async with self.reader.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT message_id, at, event, service, recipients, detail FROM trace_events "
                "WHERE message_id = ANY(%s) AND event = ANY(%s) AND at >= %s AND at < %s "
                "ORDER BY message_id, at, event_key",
                ([s.message_id for s in summaries], sorted(OUTCOMES), since, until))
            rows = await cur.fetchall()
        found: dict[str, list[_Outcome]] = {}
        for mid, at, event, service, recipients, detail in rows:
            found.setdefault(mid, []).append(_Outcome(at, event, service, list(recipients or []), detail))
        return found

    async def timeline(self, message_id: str, principal: Principal) -> Timeline | None:
        """A message's summary and events as the principal may see them; None: not found, or not theirs."""
        message_id = message_id.strip()
        if not message_id or len(message_id) > 200:
            return None
        page = await self.reader.find(message_id, limit=1, kinds=("msgid",))
        summary = next((s for s in page.messages if s.message_id == message_id), None)
        if summary is None:
            if not principal.sees_everything:
                return None
            events = await self.reader.events(message_id)
            if not events:
                return None
            first = events[0]
            return Timeline(MessageSummary(message_id, first.at, recipients=list(first.recipients),
                                           last_event=events[-1].event), events)
        if not principal.may_see_message(summary.recipients):
            return None
        events = await self.reader.events(message_id, since=None)
        if not principal.sees_everything:
            own = [_own_event(e, principal) for e in events if (not e.recipients or principal.own_recipients(
                e.recipients)) and not _test_rule(e)]
            return Timeline(_visible(summary, principal), [e.model_copy(update={"data": {}}) for e in own], own)
        return Timeline(_visible(summary, principal), events)


def _test_rule(event: TraceEvent) -> bool:
    """A mail-flow rule's hit in test mode: it changed nothing, and what administrators try is theirs to see."""
    return event.event == "RULE" and isinstance(event.data, dict) and event.data.get("mode") == "test"


def _own_event(event: TraceEvent, principal: Principal) -> TraceEvent:
    if not event.recipients:
        return event
    return event.model_copy(update={"recipients": principal.own_recipients(event.recipients)})
