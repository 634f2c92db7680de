"""The ``notify_sender`` rule action's message: a notice from the organisation's postmaster to the
envelope sender, naming the rule and giving its text (pure; routing publishes it).

Sent from the null sender (RFC 3834: nothing answers an automatic reply) and ``From:
postmaster@<first accepted domain>``, as a gateway-made report (``kind="dsn"``: the rules do not run on
it and no DSN is sent about it); routed and delivered like a non-delivery report. Never to the null
sender, about a report, or to a sender the antispam stage judged forged (``dsn.wants_ndr``). Its id is
derived from the message's, so a redelivered message yields the same notice (egress delivers it once).
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from mailmoat_mail import mimeparts
from mailmoat_mail.dsn import wants_ndr
from mailmoat_platform.models import Envelope, TraceEvent
from mailmoat_policy import Policy

SERVICE = "routing"


@dataclass(frozen=True)
class Notice:
    """A notice a rule asked for: its id, the rule, the text."""

    id: str
    rule: str
    text: str


@dataclass(frozen=True)
class SenderNotice:
    """A built notice, ready to publish to routing."""

    rule: str
    envelope: Envelope
    data: bytes


def why_not(envelope: Envelope) -> str | None:
    """Why no notice may go to this message's sender (None: one may)."""
    return wants_ndr(envelope)


def notice_id(envelope: Envelope, index: int) -> str:
    """The id of the message's ``index``-th notice (stable across redeliveries)."""
    return f"{envelope.id}S{index}"


def postmaster(policy: Policy) -> str:
    """postmaster at the organisation's primary (first accepted) domain, else at the gateway's name."""
    domain = policy.accepted_domains[0].domain if policy.accepted_domains else policy.organization.hostname
    return f"postmaster@{domain}"


def _line(text: str, limit: int = 400) -> str:
    """One line of printable text (control characters as spaces), at most ``limit`` characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def _original_subject(data: bytes) -> str:
    return _line(mimeparts.subject(data), 200)


def build(envelope: Envelope, data: bytes, notice: Notice, policy: Policy, now: datetime) -> SenderNotice:
    """The notice message to ``envelope``'s sender (callers check ``why_not`` first)."""
    hostname = policy.organization.hostname
    sender = envelope.mail_from
    utf8 = not sender.isascii()
    rule = _line(notice.rule, 128)
    lines = [
        f"Your message was checked by the mail-flow rules of {_line(policy.organization.name, 100)} "
        f"({hostname}). The rule \"{rule}\" says:",
        "",
        f"    {_line(notice.text)}",
        "",
        f"Subject:     {_original_subject(data) or '-'}",
        f"Message-ID:  {_line(envelope.message_id_header or '-', 200)}",
        f"Recipients:  {_line(', '.join(envelope.rcpt_to), 900)}",
        f"Queue id:    {envelope.id}",
        "",
        "This notice was sent automatically; please do not reply to it.",
    ]
    body = "\r\n".join(lines) + "\r\n"
    message = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
    message["From"] = f"Postmaster <{postmaster(policy)}>"
    message["To"] = f"<{sender}>"
    message["Subject"] = f'Your message matched the rule "{rule}"'
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{notice.id}@{hostname}>"
    if envelope.message_id_header:
        message["In-Reply-To"] = message["References"] = _line(envelope.message_id_header, 900)
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(body, charset="utf-8", cte="7bit" if body.isascii() else "8bit")
    raw = message.as_bytes()
    notice_envelope = Envelope(
        id=notice.id, kind="dsn", parent_id=envelope.id, received_at=now, mail_from="", rcpt_to=[sender],
        size=len(raw), smtputf8=utf8, body_type=None if raw.isascii() else "8BITMIME",
        message_id_header=f"<{notice.id}@{hostname}>", direction="outbound", itinerary=["routing", "egress"],
    )
    return SenderNotice(notice.rule, notice_envelope, raw)


def trace_event(notice: SenderNotice) -> TraceEvent:
    """The notice's first trace event, under its own id (egress's DELIVER follows)."""
    parent = notice.envelope.parent_id
    return TraceEvent(
        event="RULE", message_id=notice.envelope.id, service=SERVICE, recipients=list(notice.envelope.rcpt_to),
        detail=f"notice of rule {notice.rule!r} about {parent} to the sender",
        data={"parent_id": parent, "rule": notice.rule, "action": "notify_sender"},
    )
