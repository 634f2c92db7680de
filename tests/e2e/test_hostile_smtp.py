"""Hostile SMTP clients against the gateway as processes (issue 13's reproductions, raw bytes over a
socket): envelope bytes that are not UTF-8, addresses ingress must refuse rather than pass to an egress
that cannot send them, relay tricks, the session cap, enhanced status codes, Postmaster and one copy
per mailbox. Each test ends with ``mailmoat.dead`` empty (conftest)."""

from __future__ import annotations

import re
import socket
import textwrap
import time

import pytest

from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.sink import SmtpSink
from tests.support.smtpwire import command, reply

pytestmark = pytest.mark.e2e

MESSAGE = b"From: s@sender.test\r\nTo: alice@example.com\r\nSubject: hostile\r\n\r\nbody\r\n."
ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    assert reply(sock).startswith("220 ")
    return sock


def session(port: int, lines: list[bytes]) -> list[str]:
    """Each line's reply (after the greeting), on one connection, ending with QUIT."""
    with connect(port) as sock:
        answers = [command(sock, line) for line in lines]
        command(sock, b"QUIT")
    return answers


def rejects(detail: str, timeout: float = 15, count: int = 1) -> list[dict]:
    """REJECT trace events of 127.0.0.1 whose detail starts with ``detail`` (waits for ``count``: the
    trace of a refusal is written beside the reply, not before it)."""
    deadline = time.monotonic() + timeout
    while True:
        events = records.events_by("ip", "127.0.0.1")
        found = [e for e in events if e["event"] == "REJECT" and e["detail"].startswith(detail)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_envelope_bytes_that_are_not_utf8_are_refused_at_the_command(gateway_factory, sink: SmtpSink) -> None:
    """Issue 13 point 1: no 451 (a retry loop) and no lost REJECT trace event."""
    gateway = gateway_factory()
    port = gateway.smtp_port
    helo = session(port, [b"EHLO caf\xe9.example", b"MAIL FROM:<s@sender.test>", b"RCPT TO:<alice@example.com>",
                          b"DATA"])
    assert helo[0] == "501 5.5.2 Syntax error: the EHLO argument is not valid UTF-8"
    assert all(r.startswith("503 5.5.1") for r in helo[1:]), helo
    mail = session(port, [b"EHLO client.test", b"MAIL FROM:<j\xffrg@sender.test>"])
    assert mail[1] == "501 5.1.7 Bad sender address syntax: sender address is not valid UTF-8"
    rcpt = session(port, [b"EHLO client.test", b"MAIL FROM:<s@sender.test>", b"RCPT TO:<j\xffrg@example.com>"])
    assert rcpt[2] == "501 5.1.3 Bad recipient address syntax: recipient address is not valid UTF-8"
    dbeb = session(port, [b"EHLO client.test", b"MAIL FROM:<s@sender.test> SMTPUTF8",
                          b"RCPT TO:<j\xffrg@strict.example.com>", b"RCPT TO:<alice@strict.example.com>", b"DATA",
                          MESSAGE])
    assert dbeb[2].startswith("501 5.1.3 ")
    assert dbeb[3:5] == ["250 2.1.5 Recipient ok", "354 End data with <CR><LF>.<CR><LF>"]
    assert dbeb[5].startswith("250 2.6.0 ")
    events = rejects("501 5.1.3", count=2)
    assert len(events) == 2 and {e["recipients"][0] for e in events} == {"j\\xffrg@example.com",
                                                                         "j\\xffrg@strict.example.com"}
    assert rejects("501 5.5.2") and rejects("501 5.1.7")
    assert sink.wait_for(1)[0].rcpt_tos == ["alice@strict.example.com"]
    assert "Task exception was never retrieved" not in gateway.tail("ingress", lines=400)
    assert 'mailmoat_smtp_replies_total{code="451"}' not in gateway.metrics("ingress")


def test_addresses_ingress_accepts_are_the_ones_egress_sends(gateway_factory, sink: SmtpSink) -> None:
    """Issue 13 point 3: what cannot be sent is refused at MAIL FROM; what is accepted is delivered."""
    gateway = gateway_factory()
    port = gateway.smtp_port
    refused = {
        b'MAIL FROM:<"unterminated@sender.invalid>': "501 5.1.7 ",
        b"MAIL FROM:t@x.test": "501 5.1.7 ",
        b"MAIL FROM:<t@x.test": "501 5.1.7 ",
        b"MAIL FROM:<a b@x.test>": "501 5.1.7 ",
        b"MAIL FROM:<t@[300.1.1.1]>": "501 5.1.7 ",
        b"MAIL FROM:<t@-bad-.invalid>": "501 5.1.7 ",
        b"MAIL FROM:<t@x.test> BODY=7BIT BODY=8BITMIME": "555 5.5.4 ",
        "MAIL FROM:<jörg@sender.test>".encode(): "553 5.6.7 ",
    }
    with connect(port) as sock:
        command(sock, b"EHLO client.test")
        for line, code in refused.items():
            assert command(sock, line).startswith(code), line
    assert rejects("501 5.1.7 Bad sender address syntax: unterminated quoted local part")
    accepted = session(port, [b"EHLO client.test", b'MAIL FROM:<"john \\"jr\\" smith"@sender.test>',
                              b"RCPT TO:<alice@example.com>", b"DATA", MESSAGE])
    assert accepted[1:3] == ["250 2.1.0 Sender ok", "250 2.1.5 Recipient ok"] and accepted[4].startswith("250 2.6.0")
    utf8 = session(port, [b"EHLO client.test", "MAIL FROM:<jörg@sender.test> SMTPUTF8".encode(),
                          "RCPT TO:<jörg@example.com>".encode(), b"DATA", MESSAGE])
    assert utf8[4].startswith("250 2.6.0"), utf8
    got = sorted(sink.wait_for(2), key=lambda r: r.mail_from)
    assert [r.mail_from for r in got] == ['"john \\"jr\\" smith"@sender.test', "jörg@sender.test"]
    assert got[1].rcpt_tos == ["jörg@example.com"] and "SMTPUTF8" in got[1].mail_options


def test_sender_specified_routing_is_a_relay_attempt(gateway_factory, sink: SmtpSink) -> None:
    """Issue 13 point 7: with DBEB off (example.com) as with it on, from an untrusted client."""
    gateway = gateway_factory()
    tricks = [b"RCPT TO:<victim%external.invalid@example.com>", b"RCPT TO:<external.invalid!victim@example.com>",
              b'RCPT TO:<"victim@external.invalid"@example.com>', b"RCPT TO:<@external.invalid:victim@example.com>",
              b"RCPT TO:<victim%external.invalid@strict.example.com>"]
    answers = session(gateway.smtp_port, [b"EHLO client.test", b"MAIL FROM:<s@sender.test>", *tricks])
    for trick, answer in zip(tricks, answers[2:], strict=True):
        assert answer.startswith("550 5.7.1 Relaying denied: sender-specified routing"), (trick, answer)
    assert len(rejects("550 5.7.1 Relaying denied: sender-specified", count=len(tricks))) == len(tricks)


def test_postmaster_one_copy_per_mailbox_and_enhanced_codes(gateway_factory, sink: SmtpSink) -> None:
    """Issue 13 point 8."""
    gateway = gateway_factory()
    port = gateway.smtp_port
    answers = session(port, [b"EHLO client.test", b"MAIL FROM:<s@sender.test>", b"RCPT TO:<Postmaster>",
                             b"RCPT TO:<bob@example.com>", b"RCPT TO:<BOB@Example.com>", b"DATA", MESSAGE])
    assert answers[2:5] == ["250 2.1.5 Recipient ok"] * 3
    assert answers[6].startswith("250 2.6.0")
    assert sorted(sink.wait_for(1)[0].rcpt_tos) == ["bob@example.com", "postmaster@example.com"]
    with connect(port) as sock:
        lines = [b"EHLO client.test", b"BOGUS", b"MAIL FROM:<a b@x>", b"MAIL FROM:<s@sender.test>",
                 b"MAIL FROM:<s@sender.test>", b"RCPT TO:<bob@example.com> NOTIFY=NEVER", b"STARTTLS",
                 b"VRFY bob", b"EXPN staff", b"HELP", b"NOOP", b"RSET", b"DATA", b"QUIT"]
        answers = [command(sock, line) for line in lines]
    codes = [a[:3] for a in answers[1:]]
    assert codes == ["500", "501", "250", "503", "555", "454", "252", "502", "250", "250", "250", "503", "221"]
    assert [a for a in answers[1:] if not ENHANCED.match(a)] == []


def test_the_session_cap_answers_421(gateway_factory, sink: SmtpSink) -> None:
    """Issue 13 point 5: over ``limits.max_sessions`` a client is told 421 4.3.2, and the metric
    counts the replies really sent (ingress runs on uvloop, as in production)."""
    policy = textwrap.dedent(POLICY).replace("max_recipients: 50", "max_recipients: 50\n  max_sessions: 3")
    gateway = gateway_factory(policy, services=("ingress",))
    held = [connect(gateway.smtp_port) for _ in range(3)]
    try:
        refused = []
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", gateway.smtp_port), timeout=15) as sock:
                refused.append(reply(sock))
                assert sock.recv(1) == b""  # and closed
        assert refused == ["421 4.3.2 Too many connections, try again later"] * 2
        metrics = gateway.metrics("ingress")
        assert re.search(r'^mailmoat_smtp_replies_total\{code="421"\} 2\.0$', metrics, re.MULTILINE), metrics
    finally:
        for sock in held:
            sock.close()
    assert "Exception in callback" not in gateway.tail("ingress", lines=400)
