"""DSN and non-delivery report generation from arbitrary original message bytes and envelope fields.

The input is split at ``\\x00\\x00`` into sender, recipient, diagnostic (bytes as a remote server may
send them: aiosmtplib decodes replies as UTF-8 with surrogate escapes), status, remote MTA and the
original message (the rest). Addresses are kept to the 254 characters an SMTP path can hold. Whatever
the fields, the report must be a well-formed message that can travel: CRLF lines of at most 998
octets, no bare CR or LF, a multipart/report with its three parts, addressed to the sender.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mailmoat_mail import mimeparts
from mailmoat_mail.dsn import Failure, build_dsn, build_ndr
from mailmoat_platform.bus import decode, encode
from mailmoat_platform.models import Envelope

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _fields(data: bytes) -> tuple[str, str, str, str, str, bytes]:
    pieces = data.split(b"\x00\x00", 5)
    pieces += [b""] * (6 - len(pieces))
    sender, rcpt, diagnostic, status, remote, original = pieces
    return (sender.decode("utf-8", "replace")[:254], rcpt.decode("utf-8", "replace")[:254] or "r@example.com",
            diagnostic.decode("utf-8", "surrogateescape"), status.decode("utf-8", "replace")[:32] or "5.0.0",
            remote.decode("utf-8", "replace")[:255], original)


def _check(report: tuple[Envelope, bytes] | None, sender: str) -> None:
    if report is None:
        return
    envelope, body = report
    assert envelope.rcpt_to == [sender] and envelope.mail_from == ""
    assert body.endswith(b"\r\n")
    lines = body[:-2].split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines), "bare CR or LF"
    assert all(len(line) <= 998 for line in lines), max(len(line) for line in lines)
    if not envelope.smtputf8:
        assert body.split(b"\r\n\r\n", 1)[0].isascii()
    message = mimeparts.parse(body)
    assert mimeparts.content_type(message) == "multipart/report"
    parts = message.get_payload()
    assert isinstance(parts, list) and len(parts) == 3, len(parts) if isinstance(parts, list) else parts
    assert decode(encode(envelope, body))[1] == body


def test_one_input(data: bytes) -> None:
    sender, rcpt, diagnostic, status, remote, original = _fields(data)
    envelope = Envelope(mail_from=sender, rcpt_to=[rcpt], itinerary=["routing", "egress"])
    failures = [Failure(rcpt, status, diagnostic, remote)]
    _check(build_dsn(envelope, original, failures, NOW, "gw.mailmoat.test"), sender)
    _check(build_ndr(envelope, original, failures, NOW, "gw.mailmoat.test", dsn_id=f"{envelope.id}N"), sender)


def seeds() -> list[bytes]:
    from tests.support.hostile import cases

    fields = [
        b"sender@example.org\x00\x00r@example.com\x00\x00550 5.1.1 <r@example.com>: no such user\x00\x005.1.1"
        b"\x00\x00mx.example.com\x00\x00",
        "j\u00f6rg@b\u00fccher.example\x00\x00\u00e4@example.com\x00\x00550 5.1.1 k\u00e4se\x00\x005.1.1\x00\x00"
        "mx\x00\x00".encode(),
        b"s@example.org\x00\x00r@example.com\x00\x00554 5.7.1 \xff\xfe non-UTF-8 reply\x00\x005.7.1\x00\x00\x00\x00",
    ]
    return [field + case.data for field in fields for case in cases()[:12]] + fields
