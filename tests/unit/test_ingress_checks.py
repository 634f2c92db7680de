"""Ingress SMTP-time rules: recipients (relay, DBEB, count), MAIL FROM SIZE=, DATA content limits."""

from __future__ import annotations

import pytest

from mailmoat_ingress import replies
from mailmoat_ingress.checks import (
    MailParams,
    check_content,
    check_mail_size,
    check_recipient,
    has_bare_newline,
    longest_line,
    parse_mail_options,
)
from mailmoat_policy import Limits, Policy, parse_policy

POLICY = parse_policy(
    """
organization:
  internal_networks: [10.1.0.0/16, "2001:db8::/32"]
accepted_domains:
  - {domain: example.com, type: authoritative, dbeb: true}
  - {domain: open.example.com, type: authoritative, dbeb: false}
  - {domain: relay.example.com, type: internal_relay, dbeb: true}
directory: [alice@example.com]
limits: {max_recipients: 3}
"""
)


@pytest.mark.parametrize(
    ("client", "address", "expected"),
    [
        ("203.0.113.9", "alice@example.com", None),
        ("203.0.113.9", "ALICE@Example.COM", None),
        ("203.0.113.9", "mallory@example.com", replies.ACCESS_DENIED),
        ("10.1.2.3", "mallory@example.com", replies.ACCESS_DENIED),
        ("203.0.113.9", "anyone@open.example.com", None),
        ("203.0.113.9", "anyone@relay.example.com", None),
        ("203.0.113.9", "bob@elsewhere.org", replies.RELAY_DENIED),
        ("203.0.113.9", "bob@sub.example.com", replies.RELAY_DENIED),
        ("10.1.2.3", "bob@elsewhere.org", None),
        ("2001:db8::25", "bob@elsewhere.org", None),
        ("2001:db9::25", "bob@elsewhere.org", replies.RELAY_DENIED),
        ("not-an-ip", "bob@elsewhere.org", replies.RELAY_DENIED),
        ("203.0.113.9", "postmaster", replies.RELAY_DENIED),
    ],
)
def test_recipient_decision(client: str, address: str, expected: str | None) -> None:
    assert check_recipient(POLICY, client, address, 0) == expected


def test_too_many_recipients_before_anything_else() -> None:
    assert check_recipient(POLICY, "10.1.2.3", "alice@example.com", 2) is None
    assert check_recipient(POLICY, "10.1.2.3", "alice@example.com", 3) == replies.TOO_MANY_RECIPIENTS
    assert check_recipient(POLICY, "203.0.113.9", "x@elsewhere.org", 3) == replies.TOO_MANY_RECIPIENTS


def test_reply_texts_are_exact() -> None:
    assert replies.ACCESS_DENIED == "550 5.4.1 Recipient address rejected: Access denied"
    assert replies.RELAY_DENIED == "550 5.7.1 Relaying denied"
    assert replies.TOO_MANY_RECIPIENTS == "452 4.5.3 Too many recipients"
    assert replies.queued("ABC") == "250 2.6.0 ABC Queued mail for delivery"


def test_mail_options() -> None:
    assert parse_mail_options([]) == MailParams()
    assert parse_mail_options(["SIZE=1000", "BODY=8BITMIME", "SMTPUTF8"]) == MailParams(1000, "8BITMIME", True)
    assert parse_mail_options(["size=12"]) == MailParams(size=12)
    assert parse_mail_options(["SIZE=12k"]) is None
    assert parse_mail_options(["SIZE="]) is None


def test_mail_size_limit() -> None:
    limits = Limits(max_message_size=10_000)
    assert check_mail_size(None, limits) is None
    assert check_mail_size(10_000, limits) is None
    assert check_mail_size(10_001, limits) == "552 5.3.4 Message size exceeds fixed maximum message size"


LIMITS = Limits(max_message_size=20_000, max_header_size=1024, max_line_length=998, max_received_headers=3)
GOOD = b"From: a@x.org\r\nSubject: hi\r\n\r\nbody\r\n"


def test_clean_message_passes() -> None:
    assert check_content(GOOD, LIMITS) is None
    assert check_content(b"", LIMITS) is None


def test_size_over_limit() -> None:
    data = GOOD + b"x" * 900 + b"\r\n"
    data = data * 25
    assert len(data) > 20_000
    assert check_content(data, LIMITS) == "552 5.3.4 Message size exceeds fixed maximum message size"


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: a\r\n\r\nline\nMAIL FROM:<x@y>\r\n",
        b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<x@y>\r\n",
        b"Subject: a\r\n\r\nbody\r\n.\nMAIL FROM:<x@y>\r\n",
        b"Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<x@y>\r\n",
        b"Subject: a\r\n\r\nbody\r.\r\n",
        b"Subject: a\r\n\r\nbody\r",
        b"Subject: a\n\nbody\n",
        b"Subject: a\r\r\n\r\n",
    ],
)
def test_bare_cr_or_lf_rejected(data: bytes) -> None:
    assert has_bare_newline(data)
    assert check_content(data, LIMITS) == "550 5.5.2 Message contains bare CR or LF (RFC 5321 2.3.8)"


def test_crlf_only_is_not_bare() -> None:
    assert not has_bare_newline(b"a\r\nb\r\n\r\n")


def test_header_block_size() -> None:
    header = b"X-Pad: " + b"a" * 990 + b"\r\n"
    assert check_content(header + b"\r\nbody\r\n", LIMITS) is None
    big = header + b"X-More: " + b"b" * 100 + b"\r\n\r\nbody\r\n"
    assert check_content(big, LIMITS) == "552 5.3.4 Message header size exceeds limit"
    # the body does not count towards the header limit
    assert check_content(b"Subject: a\r\n\r\n" + (b"y" * 500 + b"\r\n") * 10, LIMITS) is None


def test_line_length() -> None:
    assert longest_line(b"ab\r\ncdef\r\n") == 4
    exact = b"Subject: a\r\n\r\n" + b"z" * 998 + b"\r\n"
    assert check_content(exact, LIMITS) is None
    over = b"Subject: a\r\n\r\n" + b"z" * 999 + b"\r\n"
    assert check_content(over, LIMITS) == "554 5.6.0 Message line too long"
    header = b"X-Long: " + b"h" * 991 + b"\r\n\r\nbody\r\n"  # a header line counts as any other
    assert check_content(header, LIMITS) == "554 5.6.0 Message line too long"


def test_default_line_limit_is_what_every_next_hop_takes() -> None:
    """The default refuses what RFC 5322 2.1.1 forbids, so nothing accepted bounces later for it."""
    limits = Policy().limits
    assert limits.max_line_length == 998
    assert check_content(b"Subject: a\r\n\r\n" + b"z" * 998 + b"\r\n", limits) is None
    assert check_content(b"Subject: a\r\n\r\n" + b"z" * 999 + b"\r\n", limits) == "554 5.6.0 Message line too long"


def test_received_hop_count() -> None:
    three = b"Received: from a\r\nreceived: from b\r\nRECEIVED: from c\r\n\tby d\r\n\r\nReceived: in body\r\n"
    assert check_content(three, LIMITS) is None
    four = b"Received: x\r\n" + three
    assert check_content(four, LIMITS) == "554 5.4.14 Hop count exceeded - possible mail loop"
    # a header merely containing the word does not count
    assert check_content(b"X-Received: x\r\n" + three, LIMITS) is None


def test_default_limits_policy() -> None:
    assert check_content(GOOD, Policy().limits) is None
