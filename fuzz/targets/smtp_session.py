"""The ingress SMTP session: an arbitrary byte stream of commands and data against the real session
and handler (in memory, tests/support/smtpmemory.py; publish and trace serialise as the bus and the
trace store do). Whatever the client sends: no session error (451 for our own fault), no lost trace
event, a well-formed reply with an enhanced status code to every command, and every message published
has an envelope egress can send."""

from __future__ import annotations

import asyncio
import logging
import re

from mailmoat_mail.addresses import sendable
from tests.support.smtpmemory import TRUSTED, UNTRUSTED, policy, run_session_async

logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # aiosmtpd's per-command log lines
_POLICY = policy()
_LOOP = asyncio.new_event_loop()
_LINE = re.compile(r"\d{3}[ -]")
_ENHANCED = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


def _exempt(line: str, hostname: str) -> bool:
    """Reply lines without an enhanced code by design: 3xx, the greeting and the HELO/EHLO reply."""
    return line[:1] == "3" or line[3:4] == "-" or line in (f"250 {hostname}", "250 ENHANCEDSTATUSCODES",
                                                           "250 STARTTLS")


def test_one_input(data: bytes) -> None:
    peer = UNTRUSTED
    if data[:1] == b"T":  # from the organisation's own servers
        peer, data = TRUSTED, data[1:]
    outcome = _LOOP.run_until_complete(run_session_async(data, peer=peer, policy_=_POLICY, timeout=5.0))
    assert not outcome.failures, outcome.failures
    lines = outcome.lines
    assert lines and lines[0].startswith("220 "), lines[:1]
    hostname = _POLICY.organization.hostname
    for line in lines[1:]:
        assert _LINE.match(line), line
        assert not line.startswith("451"), line  # nothing here fails for a temporary reason of ours
        assert _exempt(line, hostname) or _ENHANCED.match(line), line
    for item in outcome.published:
        envelope = item.envelope
        assert sendable(envelope.mail_from, utf8=envelope.smtputf8) is None, envelope.mail_from
        for recipient in envelope.rcpt_to:
            assert sendable(recipient, utf8=envelope.smtputf8) is None, recipient


def seeds() -> list[bytes]:
    message = b"From: s@sender.test\r\nTo: alice@example.com\r\nSubject: seed\r\n\r\nbody\r\n.\r\n"
    plain = (b"EHLO client.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
             + message + b"QUIT\r\n")
    return [
        plain,
        b"T" + plain.replace(b"alice@example.com", b"x%y@partner.example"),
        b"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n" + message,
        b"EHLO caf\xe9.example\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n" + message,
        b"EHLO x\r\nMAIL FROM:<j\xffrg@x.org> SMTPUTF8\r\nRCPT TO:<j\xffrg@dbeb.example.com>\r\n",
        "EHLO x\r\nMAIL FROM:<jörg@x.org> SMTPUTF8\r\nRCPT TO:<jörg@example.com>\r\nDATA\r\n".encode() + message,
        b'EHLO x\r\nMAIL FROM:<"unterminated@sender.invalid>\r\nMAIL FROM:<t@x> BODY=7BIT BODY=8BITMIME\r\n',
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<BOB@example.com>\r\nDATA\r\n"
        + message,
        b"EHLO x\r\nVRFY bob\r\nEXPN x\r\nHELP\r\nNOOP\r\nRSET\r\nSTARTTLS\r\nBOGUS\r\n\r\nQUIT\r\n",
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n..dot\r\nbare\nlf\r\n.\r\n",
    ]
