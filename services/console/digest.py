"""Quarantine digests (EOP's end-user quarantine notifications, Proxmox's spam report): per recipient, what
was held for them since their last digest, with signed links to view, release or request release.

Who sends them: the console process, in a background round every ``MAILMOAT_CONSOLE_DIGEST_CHECK`` seconds
(300; 0: never), or one round now with ``mailmoat console digest`` (a CronJob may run it instead). Only when
``quarantine.notifications.enabled``; a recipient is due when something is held for them since the span the
last digest covered and their last digest is ``every_hours`` old; only recipients in accepted domains.

How a recipient gets one digest per period, whoever runs rounds and however many replicas:

1. a round holds a PostgreSQL advisory lock (``pg_try_advisory_lock``): a second replica's round skips;
2. per recipient, a transaction locks its ``console_digests`` row, checks it is due and records the digest
   as pending (a new queue id, the end of its span), committed before anything is sent;
3. the digest is published to ``mailmoat.routing`` (publisher confirm) as a gateway-made report (null
   sender, ``kind = dsn``: no rule runs on it, no report about it) and goes the way of every message:
   routing, egress, traced (``AGENTINFO`` under its own id, then routing's and egress's events), ending
   delivered, bounced or dead-lettered like any other; each held message listed gets an ``AGENTINFO`` too;
4. the row is marked sent. A round that died between 2 and 4 leaves the pending digest for the next round,
   which sends it again under the same queue id: egress delivers a queue id to a recipient once.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import psycopg
from jinja2.sandbox import SandboxedEnvironment
from prometheus_client import Counter
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from mailmoat_mail import mimeparts
from mailmoat_platform.bus import Bus, Publish, stage_queue
from mailmoat_platform.models import Envelope, TraceEvent, new_message_id
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_policy import Policy
from mailmoat_policy.quarantine import QuarantineNotifications
from mailmoat_records.db import open_pool
from mailmoat_records.trace import TraceSink
from mailmoat_records.tracebus import TracePublisher, bus_sender

from .notifylinks import LinkSigner, link_signer

log = logging.getLogger(__name__)

SERVICE = "console"
LOCK_KEY = 0x6D6D_6469_6765_7374 & 0x7FFF_FFFF_FFFF_FFFF
"""The advisory lock of a digest round (any one number the gateway uses for nothing else)."""
MAX_ITEMS = 100
"""Messages listed in one digest; the rest are counted and left to the console."""
RECIPIENTS_PER_ROUND = 1000
HEAD_BYTES = 16384
"""Compressed bytes of a held message read for its Subject."""
DIGESTS = Counter("mailmoat_console_digests_total", "Quarantine digests sent by the console")

BUILT_IN_TEMPLATE = """\
{{ count }} message{{ '' if count == 1 else 's' }} addressed to {{ recipient }} {{ 'was' if count == 1 else 'were' }} \
held in quarantine by {{ organization }} since the last summary.
{% for m in messages %}
{{ loop.index }}. {{ m.subject or '(no subject)' }}
   From:        {{ m.author or m.sender or '<>' }}
   Received:    {{ m.received }}
   Held for:    {{ m.reason }}
   Kept until:  {{ m.expires }}
   View:        {{ m.view_url }}
{% if m.action == 'release' %}   Release:     {{ m.action_url }}
{% else %}   Only an administrator may release it. Request release: {{ m.action_url }}
{% endif %}{% endfor %}
{% if more %}... and {{ more }} more. Sign in to the console to see them all: {{ console_url }}
{% endif %}
The links work for {{ link_days }} days, for {{ recipient }} only; a release asks you to confirm it on the
page the link opens.

This summary was sent automatically; please do not reply to it.
"""


@dataclass(frozen=True)
class DigestItem:
    """A held message as a digest lists it."""

    qid: str
    subject: str
    sender: str
    author: str
    reason: str
    received: datetime
    expires: datetime
    release_by: str

    @property
    def action(self) -> str:
        """What the recipient's link does: ``release``, or ``request`` when only an administrator may release."""
        return "request" if self.release_by == "admin" else "release"


@dataclass
class Digest:
    """One recipient's digest, ready to send."""

    id: str
    recipient: str
    items: list[DigestItem]
    more: int
    envelope: Envelope
    data: bytes
    events: list[TraceEvent] = field(default_factory=list)


def one_line(text: str, limit: int = 200) -> str:
    """Printable text on one line (control characters as spaces), at most ``limit`` characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def subject_of(head: bytes) -> str:
    """The Subject of a message from its first bytes (empty when there is none)."""
    return one_line(mimeparts.subject(head))


def head_of(packed: bytes, codec: str) -> bytes:
    """The first bytes of a held message from the start of its compressed data (cut short: what it gives)."""
    if codec != "zlib":
        return b""
    try:
        return zlib.decompressobj().decompress(packed, 65536)
    except zlib.error:
        return b""


def accepted(policy: Policy, recipient: str) -> bool:
    _, at, domain = recipient.rpartition("@")
    return bool(at) and policy.accepted_domain(domain) is not None


def from_address(policy: Policy) -> str:
    settings = policy.quarantine.notifications
    if settings.from_address:
        return settings.from_address
    domain = policy.accepted_domains[0].domain if policy.accepted_domains else policy.organization.hostname
    return f"postmaster@{domain}"


def template_text(settings: QuarantineNotifications) -> str:
    if settings.template is not None:
        return settings.template
    if settings.template_file is not None:
        return Path(settings.template_file).read_text(encoding="utf-8")
    return BUILT_IN_TEMPLATE


_ENV = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True, trim_blocks=False)


def render_body(settings: QuarantineNotifications, context: dict[str, Any]) -> str:
    """The digest's text: the policy's template (sandboxed), the built-in one when it fails."""
    try:
        return _ENV.from_string(template_text(settings)).render(context)
    except (jinja2.TemplateError, OSError, UnicodeDecodeError) as exc:
        log.warning("quarantine digest template failed (%s: %s); the built-in one is used", type(exc).__name__, exc)
        return _ENV.from_string(BUILT_IN_TEMPLATE).render(context)


def link_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/notify/{quote(token, safe='')}"


def build_digest(policy: Policy, recipient: str, items: list[DigestItem], more: int, signer: LinkSigner,
                 console_url: str, digest_id: str, now: datetime) -> Digest:
    """The digest message to ``recipient`` listing ``items`` (``more``: held and not listed), with its trace."""
    settings = policy.quarantine.notifications
    hostname = policy.organization.hostname

    def when(at: datetime) -> str:
        return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    messages = [{
        "qid": item.qid, "subject": one_line(item.subject), "sender": one_line(item.sender, 320),
        "author": one_line(item.author, 320), "reason": one_line(item.reason, 64), "received": when(item.received),
        "expires": when(item.expires), "action": item.action,
        "view_url": link_url(console_url, signer.sign(item.qid, recipient, "view", days=settings.link_days)),
        "action_url": link_url(console_url, signer.sign(item.qid, recipient, item.action,  # type: ignore[arg-type]
                                                         days=settings.link_days)),
    } for item in items]
    count = len(items) + more
    context = {"recipient": recipient, "messages": messages, "count": count, "more": more,
               "organization": one_line(policy.organization.name or hostname, 100), "link_days": settings.link_days,
               "console_url": console_url}
    body = render_body(settings, context).replace("\r\n", "\n").replace("\n", "\r\n")
    subject = one_line(settings.subject.replace("{count}", str(count)).replace("{recipient}", recipient), 250)
    utf8 = not recipient.isascii()
    message = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
    message["From"] = f"Quarantine <{from_address(policy)}>"
    message["To"] = f"<{recipient}>"
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{digest_id}@{hostname}>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body, charset="utf-8", cte="7bit" if body.isascii() else "8bit")
    raw = message.as_bytes()
    envelope = Envelope(
        id=digest_id, kind="dsn", received_at=now, mail_from="", rcpt_to=[recipient], size=len(raw), smtputf8=utf8,
        body_type=None if raw.isascii() else "8BITMIME", message_id_header=f"<{digest_id}@{hostname}>",
        direction="outbound", itinerary=["routing", "egress"],
    )
    events = [TraceEvent(event="AGENTINFO", message_id=digest_id, service=SERVICE, at=now, recipients=[recipient],
                         detail=f"quarantine digest of {count} held message(s) to {recipient}",
                         data={"digest": True, "quarantine_ids": [i.qid for i in items], "more": more})]
    events += [TraceEvent(event="AGENTINFO", message_id=item.qid, service=SERVICE, at=now, recipients=[recipient],
                          detail=f"listed in quarantine digest {digest_id} to {recipient}",
                          data={"digest_id": digest_id}) for item in items]
    return Digest(digest_id, recipient, items, more, envelope, raw, events)


# --- the rounds --------------------------------------------------------------------------------------

_DUE = """
SELECT r.recipient
FROM quarantine_recipients r
JOIN quarantine q ON q.qid = r.qid
LEFT JOIN console_digests d ON d.recipient = r.recipient
WHERE r.state = 'held' AND q.expires > %(now)s AND r.received_at <= %(now)s
  AND substring(r.recipient from '[^@]*$') = ANY(%(domains)s)
  AND (d.recipient IS NULL OR d.pending_id IS NOT NULL
       OR ((d.covered_until IS NULL OR r.received_at > d.covered_until)
           AND (d.sent_at IS NULL OR d.sent_at <= %(due)s)))
GROUP BY r.recipient
ORDER BY min(r.received_at)
LIMIT %(n)s
"""
"""Recipients with something held since their last digest's span and whose period is over (or whose digest
a round left pending), in accepted domains."""

_ITEMS = """
SELECT q.qid, q.received_at, q.expires, q.reason, q.result, q.release_by, q.sender, q.author, q.codec,
       substring(q.data from 1 for %(head)s) AS head
FROM quarantine_recipients r JOIN quarantine q ON q.qid = r.qid
WHERE r.recipient = %(recipient)s AND r.state = 'held' AND q.expires > %(now)s
  AND (%(since)s::timestamptz IS NULL OR r.received_at > %(since)s) AND r.received_at <= %(until)s
ORDER BY r.received_at, q.qid
"""


@dataclass
class Round:
    """What one round did."""

    sent: int = 0
    skipped: bool = False
    """Another round held the lock."""
    failed: int = 0


class DigestSender:
    """Sends the digests that are due: the records database's pool, a bus to publish on and its trace."""

    def __init__(self, pool: AsyncConnectionPool, signer: Callable[[], Any], *, bus_factory: Callable[[], Bus],
                 trace_factory: Callable[[Bus], TraceSink], console_url: str):
        self.pool = pool
        self._signer_factory = signer
        self._signer: LinkSigner | None = None
        self._bus_factory = bus_factory
        self._trace_factory = trace_factory
        self._bus: Bus | None = None
        self._trace: TraceSink | None = None
        self.console_url = console_url

    async def _connected(self) -> tuple[Bus, TraceSink]:
        if self._bus is None:
            bus = self._bus_factory()
            await bus.connect()
            self._bus, self._trace = bus, self._trace_factory(bus)
        assert self._trace is not None
        return self._bus, self._trace

    async def signer(self) -> LinkSigner:
        if self._signer is None:
            self._signer = await self._signer_factory()
        return self._signer

    async def close(self) -> None:
        bus, self._bus, self._trace = self._bus, None, None
        if bus is not None:
            try:
                await bus.close()
            except Exception:  # closing a broken connection
                pass

    async def run(self, policy: Policy, now: datetime | None = None) -> Round:
        """One round: every recipient due gets their digest (none when notifications are off)."""
        done = Round()
        settings = policy.quarantine.notifications
        if not settings.enabled or not policy.accepted_domains:
            return done
        now = now or datetime.now(UTC)
        async with self.pool.connection() as lock:
            cur = await lock.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            row = await cur.fetchone()
            if not row or not row[0]:
                done.skipped = True
                return done
            try:
                await lock.commit()
                cur = await lock.execute(_DUE, {"now": now, "due": now - timedelta(hours=settings.every_hours),
                                                "domains": [d.domain for d in policy.accepted_domains],
                                                "n": RECIPIENTS_PER_ROUND})
                due = [r[0] for r in await cur.fetchall()]
                await lock.commit()
                for recipient in due:
                    if not accepted(policy, recipient):
                        continue
                    try:
                        if await self.send_one(policy, recipient, now):
                            done.sent += 1
                    except Exception as exc:  # the database or the broker: the digest stays due (or pending)
                        done.failed += 1
                        log.warning("quarantine digest to %s not sent: %s: %s", recipient, type(exc).__name__, exc)
                        if not isinstance(exc, psycopg.Error):
                            await self.close()  # the broker: a new connection next time
            finally:
                await lock.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
                await lock.commit()
        return done

    async def _claim(self, recipient: str, now: datetime,
                     every: timedelta) -> tuple[str, datetime | None, datetime] | None:
        """The digest to send to ``recipient``: (queue id, start (None: none) and end of its span), recorded as pending;
        None when none is due (sent within the period, or by another round just now)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO console_digests (recipient) VALUES (%s) ON CONFLICT DO NOTHING",
                               (recipient,))
            cur = await conn.execute("SELECT covered_until, sent_at, pending_id, pending_until FROM console_digests "
                                     "WHERE recipient = %s FOR UPDATE", (recipient,))
            row = await cur.fetchone()
            assert row is not None
            covered, sent_at, pending_id, pending_until = row
            if pending_id is not None:
                return pending_id, covered, pending_until
            if sent_at is not None and sent_at > now - every:
                return None
            digest_id = new_message_id()
            await conn.execute("UPDATE console_digests SET pending_id = %s, pending_until = %s WHERE recipient = %s",
                               (digest_id, now, recipient))
            return digest_id, covered, now

    async def _items(self, recipient: str, since: datetime | None, until: datetime,
                     now: datetime) -> list[DigestItem]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_ITEMS, {"recipient": recipient, "now": now, "since": since, "until": until,
                                       "head": HEAD_BYTES})
            rows = await cur.fetchall()
        return [DigestItem(r["qid"], subject_of(head_of(bytes(r["head"]), r["codec"])), r["sender"], r["author"],
                           r["result"] if r["result"] and r["reason"] == "malware" else r["reason"],
                           r["received_at"], r["expires"], r["release_by"]) for r in rows]

    async def send_one(self, policy: Policy, recipient: str, now: datetime) -> bool:
        """Claim, publish, mark ``recipient``'s digest; False when none was due or nothing is held any more."""
        settings = policy.quarantine.notifications
        claimed = await self._claim(recipient, now, timedelta(hours=settings.every_hours))
        if claimed is None:
            return False
        digest_id, since, until = claimed
        items = await self._items(recipient, since, until, now)
        sent = bool(items)
        if items:
            digest = build_digest(policy, recipient, items[:MAX_ITEMS], max(0, len(items) - MAX_ITEMS),
                                  await self.signer(), self.console_url, digest_id, now)
            bus, trace = await self._connected()
            await bus.publish(Publish(stage_queue("routing"), digest.envelope, digest.data))
            await trace.record(digest.events[0], sender="", recipients=[recipient],
                               message_id_header=digest.envelope.message_id_header)
            await trace.record(digest.events[1:])  # on each message listed (no look-up values of the digest)
            DIGESTS.inc()
            log.info("quarantine digest %s of %d message(s) to %s", digest_id, len(items), recipient,
                     extra={"message_id": digest_id})
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE console_digests SET covered_until = pending_until, pending_id = NULL, pending_until = NULL, "
                "sent_at = CASE WHEN %(sent)s THEN %(now)s ELSE sent_at END, "
                "digest_id = CASE WHEN %(sent)s THEN pending_id ELSE digest_id END, "
                "messages = CASE WHEN %(sent)s THEN %(n)s ELSE messages END "
                "WHERE recipient = %(recipient)s AND pending_id = %(id)s",
                {"sent": sent, "now": now, "n": len(items), "recipient": recipient, "id": digest_id})
        return sent


def check_interval(env: dict[str, str] | None = None) -> float:
    """Seconds between the console's digest rounds (``MAILMOAT_CONSOLE_DIGEST_CHECK``; 0: no rounds)."""
    env = dict(os.environ) if env is None else env
    value = float(env.get("MAILMOAT_CONSOLE_DIGEST_CHECK", "300"))
    if value < 0:
        raise ValueError("MAILMOAT_CONSOLE_DIGEST_CHECK must be 0 or more seconds")
    return value


async def digest_forever(sender: DigestSender, policy: Callable[[], Policy], interval: float) -> None:
    """The console's background rounds, every ``interval`` seconds (the first one at once)."""
    try:
        while True:
            try:
                done = await sender.run(policy())
                if done.sent or done.failed:
                    log.info("quarantine digests: %d sent, %d failed", done.sent, done.failed)
            except Exception as exc:  # database down, a policy that does not load: the next round tries again
                log.warning("quarantine digest round failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval)
    finally:
        await sender.close()


def digest_sender(settings: Settings, pool: AsyncConnectionPool, console_url: str) -> DigestSender:
    """The sender of a console process or of ``mailmoat console digest``: the records database's pool, a bus
    connection of its own (opened at the first digest), the trace through ``mailmoat.trace``."""
    return DigestSender(pool, lambda: link_signer(pool), bus_factory=lambda: Bus(settings.amqp_url),
                        trace_factory=lambda bus: TracePublisher(bus_sender(bus)), console_url=console_url)


def start_digests(runtime: Runtime, settings: Settings, pool: AsyncConnectionPool, console_url: str) -> None:
    """The console's background rounds (none with ``MAILMOAT_CONSOLE_DIGEST_CHECK=0``), with the policy in force."""
    interval = check_interval()
    if interval > 0:
        sender = digest_sender(settings, pool, console_url)
        runtime.add_background(lambda: digest_forever(sender, lambda: runtime.policy.current, interval))


async def one_round(settings: Settings, console_url: str) -> Round:
    """``mailmoat console digest``: one round now, with the policy file's notifications settings."""
    from mailmoat_policy import load_policy

    policy = load_policy(settings.policy_path)
    async with open_pool(settings.database_url, max_size=2, name="console-digest") as pool:
        sender = digest_sender(settings, pool, console_url)
        try:
            return await sender.run(policy)
        finally:
            await sender.close()
