"""Delivery status notifications (RFC 3464 multipart/report), built as bytes with CRLF line endings.

Egress sends them when delivery fails for good (``build_dsn``); routing sends them as non-delivery
reports when a verdict's action is ``reject`` (``build_ndr``). Both re-enter the pipeline at routing.

When an address is not ASCII the report uses the internationalised types of RFC 6533
(``message/global-delivery-status``, ``message/global-headers``, address type ``utf-8``) and the
DSN travels with SMTPUTF8.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from mailmoat_platform.models import Envelope, new_message_id
from mailmoat_platform.verdicts import details

SUBJECT = "Undelivered Mail Returned to Sender"
SPAM_RESULTS = frozenset({"spam", "hcspam", "phish", "hcphish", "spoof", "bulk", "malware",
                          "high_confidence_spam", "high_confidence_phish"})
"""Antispam results (decision 004's categories) about whose sender no DSN is sent (read by the antispam
stage's verdict model)."""
DIAGNOSTIC_LIMIT = 900
"""Longest diagnostic text kept, in octets (a field line stays under RFC 5322's 998 octets)."""
MAX_LINE = 998


@dataclass(frozen=True)
class Failure:
    """One recipient that will not get the message."""

    recipient: str
    status: str
    """RFC 3463 status, e.g. ``5.1.1`` or ``4.4.7``."""
    diagnostic: str
    """The SMTP reply (``550 5.1.1 no such user``) or a local explanation."""
    remote_mta: str = ""


def wants_dsn(envelope: Envelope) -> bool:
    """No DSN to the null sender, about a DSN, or about spam or malware (the sender is likely forged): a
    verdict whose detail ``withholds_dsn`` (the antispam stage: a spam result or SCL 5 and over; the
    antivirus stage: malware)."""
    if not envelope.mail_from or envelope.kind == "dsn":
        return False
    return not any(detail.withholds_dsn(verdict) for verdict, detail in details(envelope))


def original_headers(data: bytes) -> bytes:
    """The header section of the original message, CRLF line endings, ending with one CRLF; NUL bytes
    (not allowed in 8bit content) dropped, a line over 998 octets cut there (the report must travel)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = data.find(sep)
        if end != -1:
            head = data[:end]
            break
    else:
        head = data
    lines = head.replace(b"\x00", b"").replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"".join(line[:MAX_LINE] + b"\r\n" for line in lines if line)


def _text(value: str) -> str:
    """One line of text: control characters (CR and LF included) as spaces, lone surrogates (bytes a
    remote server sent that were not UTF-8) as U+FFFD, runs of white space as one space."""
    value = "".join(
        " " if (ord(c) < 32 or c == "\x7f") else "\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value
    )
    return " ".join(value.split())


def _fit(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` octets of UTF-8 (``...`` marks a cut)."""
    if len(text.encode("utf-8")) <= limit:
        return text
    return text.encode("utf-8")[: max(limit - 3, 0)].decode("utf-8", "ignore") + "..."


def _clean(text: str, ascii_only: bool, room: int = DIAGNOSTIC_LIMIT) -> str:
    text = _text(text)
    if ascii_only:
        text = text.encode("ascii", "replace").decode("ascii")
    return _fit(text, min(room, DIAGNOSTIC_LIMIT))


def wants_ndr(envelope: Envelope) -> str | None:
    """Why no non-delivery report may go to the sender of a rejected message (None: one may).

    Never to the null sender, about a DSN, or to a sender the antispam stage judged forged.
    """
    if not envelope.mail_from:
        return "null sender"
    if envelope.kind == "dsn":
        return "the message is itself a delivery report"
    if any(detail.forged_sender() for _, detail in details(envelope)):
        return "the sender is judged forged"
    return None


def build_dsn(envelope: Envelope, data: bytes, failures: list[Failure], now: datetime,
              hostname: str, boundary: str | None = None) -> tuple[Envelope, bytes] | None:
    """The DSN for ``failures`` of ``envelope`` (or None when none is due)."""
    if not failures or not wants_dsn(envelope):
        return None
    return build_report(envelope, data, failures, now, hostname, boundary)


def build_ndr(envelope: Envelope, data: bytes, failures: list[Failure], now: datetime,
              hostname: str, boundary: str | None = None, dsn_id: str | None = None) -> tuple[Envelope, bytes] | None:
    """The non-delivery report for a message routing rejected (None when ``wants_ndr`` forbids one).

    Only the original headers are returned, never the content (a rejected attachment stays here).
    """
    if not failures or wants_ndr(envelope) is not None:
        return None
    return build_report(envelope, data, failures, now, hostname, boundary, dsn_id)


def build_report(envelope: Envelope, data: bytes, failures: list[Failure], now: datetime,
                 hostname: str, boundary: str | None = None, dsn_id: str | None = None) -> tuple[Envelope, bytes]:
    """The multipart/report itself, addressed to the envelope sender (callers decide whether one is due).

    A fixed ``dsn_id`` makes a report built twice (a redelivered message) one message to egress's dedupe.
    """
    dsn_id = dsn_id or new_message_id()
    boundary = boundary or f"=_mailmoat_{dsn_id}"
    crlf = "\r\n"
    original = original_headers(data)
    sender = _fit(_text(envelope.mail_from), 400)
    failures = [Failure(_fit(_text(f.recipient), 400), _fit(_text(f.status), 32) or "5.0.0", f.diagnostic,
                        _fit(_text(f.remote_mta), 255)) for f in failures]
    utf8 = not (envelope.mail_from.isascii() and all(f.recipient.isascii() for f in failures))
    eight_bit = utf8 or not original.isascii()
    cte = f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}"
    address_type = "utf-8" if utf8 else "rfc822"
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    headers_type = "message/global-headers" if utf8 else "text/rfc822-headers"
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {SUBJECT}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{dsn_id}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        cte,
    ]
    text = [
        f"This is the mail system at host {hostname}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "",
    ]
    text += [f"<{f.recipient}>: {_clean(f.diagnostic, not utf8, MAX_LINE - 4 - len(f.recipient.encode()))}"
             for f in failures]
    status = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Mailmoat-Queue-ID: {envelope.id}",
        f"Arrival-Date: {format_datetime(envelope.received_at)}",
    ]
    for failure in failures:
        status += [
            "",
            f"Final-Recipient: {address_type}; {failure.recipient}",
            "Action: failed",
            f"Status: {failure.status}",
            *([f"Remote-MTA: dns; {failure.remote_mta}"] if failure.remote_mta else []),
            f"Diagnostic-Code: smtp; {_clean(failure.diagnostic, not utf8, MAX_LINE - 23)}",
        ]
    parts = [
        crlf.join(headers) + crlf + crlf,
        "This is a MIME-encapsulated message." + crlf + crlf,
        f"--{boundary}{crlf}",
        f"Content-Type: text/plain; charset=utf-8{crlf}Content-Description: Notification{crlf}{cte}{crlf}{crlf}",
        crlf.join(text) + crlf + crlf,
        f"--{boundary}{crlf}",
        f"Content-Type: {status_type}{crlf}Content-Description: Delivery report{crlf}{cte}{crlf}{crlf}",
        crlf.join(status) + crlf + crlf,
        f"--{boundary}{crlf}",
        f"Content-Type: {headers_type}{crlf}Content-Description: Undelivered message headers{crlf}{cte}{crlf}{crlf}",
    ]
    body = "".join(parts).encode("utf-8") + original
    body += f"{crlf}--{boundary}--{crlf}".encode()
    dsn = Envelope(
        id=dsn_id,
        kind="dsn",
        parent_id=envelope.id,
        received_at=now,
        mail_from="",
        rcpt_to=[envelope.mail_from],
        size=len(body),
        smtputf8=utf8,
        body_type="8BITMIME" if eight_bit else None,
        message_id_header=f"<{dsn_id}@{hostname}>",
        direction="outbound",
        itinerary=["routing", "egress"],
    )
    return dsn, body


__all__ = ["Failure", "build_dsn", "build_ndr", "build_report", "original_headers", "wants_dsn", "wants_ndr"]
