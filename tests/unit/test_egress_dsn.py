"""DSNs (RFC 3464) parsed back with the email package."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from mailmoat_egress.dsn import SUBJECT, Failure, build_dsn, original_headers
from mailmoat_platform.models import Envelope, Verdict

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ORIGINAL = b"From: s@out.org\r\nTo: a@example.com\r\nSubject: hello\r\nMessage-ID: <m1@out.org>\r\n\r\nsecret body\r\n"


def _env(**kw) -> Envelope:
    base = dict(mail_from="s@out.org", rcpt_to=["a@example.com", "b@example.com"], itinerary=["routing", "egress"])
    base.update(kw)
    return Envelope(**base)


def test_dsn_structure() -> None:
    envelope = _env()
    failures = [
        Failure("a@example.com", "5.1.1", "550 5.1.1 no such user", "mx.example.com"),
        Failure("b@example.com", "4.4.7", "451 4.4.1 no answer"),
    ]
    built = build_dsn(envelope, ORIGINAL, failures, NOW, "gw.example.net")
    assert built is not None
    dsn, data = built
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert b"secret body" not in data
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@gw.example.net"
    assert msg["To"].addresses[0].addr_spec == "s@out.org"
    assert msg["Subject"] == SUBJECT
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Date"] and msg["Message-ID"] == f"<{dsn.id}@gw.example.net>"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers",
    ]
    assert "a@example.com" in parts[0].get_content()
    status_blocks = parts[1].get_payload()
    per_message = status_blocks[0]
    assert per_message["Reporting-MTA"] == "dns; gw.example.net"
    assert per_message["Arrival-Date"]
    recipients = status_blocks[1:]
    assert [r["Final-Recipient"] for r in recipients] == ["rfc822; a@example.com", "rfc822; b@example.com"]
    assert [r["Action"] for r in recipients] == ["failed", "failed"]
    assert [r["Status"] for r in recipients] == ["5.1.1", "4.4.7"]
    assert recipients[0]["Remote-MTA"] == "dns; mx.example.com"
    assert recipients[1]["Remote-MTA"] is None
    assert recipients[0]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    headers = parts[2].get_payload() if isinstance(parts[2].get_payload(), str) else parts[2].get_content()
    assert "Message-ID: <m1@out.org>" in headers and "Subject: hello" in headers

    assert dsn.kind == "dsn" and dsn.parent_id == envelope.id and dsn.id != envelope.id
    assert dsn.mail_from == "" and dsn.rcpt_to == ["s@out.org"]
    assert dsn.itinerary == ["routing", "egress"] and dsn.direction == "outbound"
    assert dsn.size == len(data)


def test_no_dsn_to_null_sender_or_for_dsn() -> None:
    failures = [Failure("a@example.com", "5.1.1", "550 5.1.1 no")]
    assert build_dsn(_env(mail_from=""), ORIGINAL, failures, NOW, "gw") is None
    assert build_dsn(_env(kind="dsn"), ORIGINAL, failures, NOW, "gw") is None
    assert build_dsn(_env(), ORIGINAL, [], NOW, "gw") is None


def test_no_dsn_for_spam() -> None:
    envelope = _env()
    envelope.add_verdict(Verdict(stage="antispam", result="spam", detail={"scl": 6}))
    assert build_dsn(envelope, ORIGINAL, [Failure("a@example.com", "5.1.1", "550")], NOW, "gw") is None


def test_original_headers_only() -> None:
    assert original_headers(ORIGINAL) == (
        b"From: s@out.org\r\nTo: a@example.com\r\nSubject: hello\r\nMessage-ID: <m1@out.org>\r\n"
    )
    assert original_headers(b"Subject: x\r\n") == b"Subject: x\r\n"


def test_ascii_dsn_is_7bit() -> None:
    dsn, data = build_dsn(_env(), ORIGINAL, [Failure("a@example.com", "5.1.1", "550 5.1.1 no")], NOW, "gw")
    assert data.isascii() and dsn.body_type is None and not dsn.smtputf8
    assert b"Content-Transfer-Encoding: 7bit" in data


def test_utf8_addresses_use_rfc6533_types() -> None:
    envelope = _env(mail_from="jörg@out.org", rcpt_to=["zoë@example.com"])
    failures = [Failure("zoë@example.com", "5.1.1", "550 5.1.1 unknown")]
    dsn, data = build_dsn(envelope, "Subject: grüße\r\n\r\nx\r\n".encode(), failures, NOW, "gw")
    assert dsn.smtputf8 and dsn.body_type == "8BITMIME" and dsn.rcpt_to == ["jörg@out.org"]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/global-delivery-status", "message/global-headers",
    ]
    text = data.decode("utf-8")
    assert "Final-Recipient: utf-8; zoë@example.com" in text
    assert "To: <jörg@out.org>" in text and "Subject: grüße" in text


def test_8bit_original_headers_keep_classic_types() -> None:
    dsn, data = build_dsn(_env(), b"Subject: caf\xe9\r\n\r\nx\r\n", [Failure("a@example.com", "5.1.1", "550")],
                          NOW, "gw")
    assert dsn.body_type == "8BITMIME" and not dsn.smtputf8
    assert b"Content-Type: text/rfc822-headers" in data and b"Subject: caf\xe9\r\n" in data


def test_long_or_odd_diagnostics_stay_one_short_line() -> None:
    diagnostic = "550 5.7.1 " + "x" * 3000 + "\r\nsecond line ünïcode"
    _, data = build_dsn(_env(), ORIGINAL, [Failure("a@example.com", "5.7.1", diagnostic)], NOW, "gw")
    assert data.isascii()
    assert max(len(line) for line in data.split(b"\r\n")) < 998
    line = next(x for x in data.split(b"\r\n") if x.startswith(b"Diagnostic-Code:"))
    assert line.startswith(b"Diagnostic-Code: smtp; 550 5.7.1 xxx") and line.endswith(b"...")
