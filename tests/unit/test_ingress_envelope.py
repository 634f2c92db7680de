"""What a client is answered for each kind of envelope input: the real ingress session in memory
(tests/support/smtpmemory.py), with recorders that serialise as the bus and the trace store do."""

from __future__ import annotations

import pytest

from mailmoat_ingress import replies
from mailmoat_ingress.checks import mail_parameters, resolve_recipient, same_recipient_key
from mailmoat_mail.addresses import parse_rcpt
from tests.support.smtpmemory import TRUSTED, exchange, missing_enhanced_codes, policy, run_session

HELLO = b"EHLO client.example\r\n"
MESSAGE = b"Subject: t\r\n\r\nbody\r\n.\r\n"


def replies_to(*commands: bytes, **kwargs: object) -> list[str]:
    """The final reply to each command line (greeting left out)."""
    pairs = exchange([line + b"\r\n" for line in commands], **kwargs)  # type: ignore[arg-type]
    return [lines[-1] for _, lines in pairs[1:]]


@pytest.mark.parametrize("hello", [b"EHLO caf\xe9.example", b"HELO caf\xe9.example", b"EHLO a\x01b"])
def test_a_hello_that_is_not_utf8_is_refused_at_the_command(hello: bytes) -> None:
    outcome = run_session(hello + b"\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                          + MESSAGE + b"QUIT\r\n")
    replies = outcome.replies()
    assert replies[1].startswith("501 5.5.2 Syntax error: the ")
    assert replies[2].startswith("503 5.5.1")  # no transaction without a greeting
    assert not any(r.startswith("451") for r in replies)
    assert not outcome.published and not outcome.failures
    assert [e.event for e in outcome.traced] == ["REJECT"]


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"MAIL FROM:<j\xffrg@example.org>", "501 5.1.7 Bad sender address syntax: sender address is not valid UTF-8"),
        (b"MAIL FROM:<j\xffrg@example.org> SMTPUTF8", "501 5.1.7 Bad sender address syntax"),
        (b'MAIL FROM:<"unterminated@sender.invalid>', "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:t@x", "501 5.1.7"),
        (b"MAIL FROM:<t@x", "501 5.1.7"),
        (b"MAIL FROM:<a b@x>", "501 5.1.7"),
        (b"MAIL FROM:<t@[300.1.1.1]>", "501 5.1.7"),
        (b"MAIL FROM:<t@-bad-.invalid>", "501 5.1.7"),
        (b"MAIL FROM:<t@x> BODY=7BIT BODY=8BITMIME", "555 5.5.4 MAIL FROM parameters not recognized"),
        (b"MAIL FROM:<t@x> RET=FULL", "555 5.5.4"),
        (b"MAIL FROM:<t@x> BODY=BINARYMIME", "501 5.5.4"),
        (b"MAIL FROM:<t@x> SIZE=12k", "501 5.5.4"),
        (b"MAIL FROM:<t@x> SMTPUTF8=yes", "501 5.5.4"),
        ("MAIL FROM:<jörg@example.org>".encode(), "553 5.6.7 Non-ASCII sender address requires SMTPUTF8"),
        (b"MAIL <t@x>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL FROM:<t@x>", "250 2.1.0"),
        ("MAIL FROM:<jörg@example.org> SMTPUTF8".encode(), "250 2.1.0"),
    ],
)
def test_mail_from(command: bytes, reply: str) -> None:
    outcome = run_session(HELLO + command + b"\r\n")
    assert outcome.replies()[-1].startswith(reply)
    assert not outcome.failures
    if not reply.startswith("250"):
        assert [e.event for e in outcome.traced] == ["REJECT"] and outcome.traced[0].detail.startswith(reply)


@pytest.mark.parametrize(
    ("mail", "rcpt", "reply"),
    [
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<j\xffrg@example.com>", "501 5.1.3 Bad recipient address syntax"),
        (b"MAIL FROM:<a@b.example> SMTPUTF8", b"RCPT TO:<j\xffrg@dbeb.example.com>", "501 5.1.3"),
        (b"MAIL FROM:<a@b.example>", "RCPT TO:<jörg@example.com>".encode(), "553 5.6.7 Non-ASCII recipient"),
        (b"MAIL FROM:<a@b.example> SMTPUTF8", "RCPT TO:<jörg@example.com>".encode(), "250 2.1.5"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<bob@example.com> NOTIFY=NEVER", "555 5.5.4 RCPT TO parameters"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:bob@example.com", "501 5.1.3"),
        (b"MAIL FROM:<a@b.example>", b"RCPT <bob@example.com>", "501 5.5.4 Syntax: RCPT TO:<address>"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<victim%external.invalid@example.com>", "550 5.7.1 Relaying denied"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<external.invalid!victim@example.com>", "550 5.7.1"),
        (b"MAIL FROM:<a@b.example>", b'RCPT TO:<"victim@external.invalid"@example.com>', "550 5.7.1"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<@external.invalid:victim@example.com>", "550 5.7.1"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<victim%external.invalid@dbeb.example.com>", "550 5.7.1"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<Postmaster>", "250 2.1.5"),
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<postmaster@dbeb.example.com>", "250 2.1.5"),  # despite DBEB
        (b"MAIL FROM:<a@b.example>", b"RCPT TO:<nobody@dbeb.example.com>", "550 5.4.1"),
    ],
)
def test_rcpt_to(mail: bytes, rcpt: bytes, reply: str) -> None:
    outcome = run_session(HELLO + mail + b"\r\n" + rcpt + b"\r\n")
    assert outcome.replies()[-1].startswith(reply)
    assert not outcome.failures  # the REJECT trace event is written, never lost
    if not reply.startswith("250"):
        assert [e.event for e in outcome.traced] == ["REJECT"] and outcome.traced[0].detail.startswith(reply)


def _published(*lines: bytes, **kwargs: object):  # type: ignore[no-untyped-def]
    outcome = run_session(HELLO + b"".join(line + b"\r\n" for line in lines) + b"DATA\r\n" + MESSAGE,
                          **kwargs)  # type: ignore[arg-type]
    assert outcome.replies()[-1].startswith("250 2.6.0"), outcome.replies()
    assert len(outcome.published) == 1
    return outcome.published[0].envelope


def test_postmaster_goes_to_the_first_accepted_domain() -> None:
    envelope = _published(b"MAIL FROM:<a@b.example>", b"RCPT TO:<POSTMASTER>")
    assert envelope.rcpt_to == ["postmaster@example.com"]


def test_one_mailbox_one_copy() -> None:
    envelope = _published(b"MAIL FROM:<a@b.example>", b"RCPT TO:<bob@example.com>", b"RCPT TO:<BOB@Example.COM>",
                          b'RCPT TO:<"bob"@example.com>', b"RCPT TO:<carol@example.com>")
    assert envelope.rcpt_to == ["bob@example.com", "carol@example.com"]


def test_relayed_recipients_keep_the_case_of_their_local_part() -> None:
    envelope = _published(b"MAIL FROM:<a@b.example>", b"RCPT TO:<Bob@partner.example>",
                          b"RCPT TO:<bob@PARTNER.example>", peer=TRUSTED)
    assert envelope.rcpt_to == ["Bob@partner.example", "bob@PARTNER.example"]


def test_the_organisations_servers_may_route_and_the_source_route_is_dropped() -> None:
    envelope = _published(b"MAIL FROM:<@hop.example:a@b.example>", b"RCPT TO:<@hop.example:x%y@example.com>",
                          peer=TRUSTED)
    assert envelope.mail_from == "a@b.example"
    assert envelope.rcpt_to == ["x%y@example.com"]


def test_smtputf8_travels_in_the_envelope() -> None:
    envelope = _published("MAIL FROM:<jörg@example.org> SMTPUTF8".encode(), "RCPT TO:<jörg@example.com>".encode())
    assert envelope.smtputf8 and envelope.mail_from == "jörg@example.org"


EVERY_COMMAND = [
    b"NOOP", b"HELP", b"HELP MAIL", b"HELP NOSUCH", b"VRFY", b"VRFY bob@example.com", b"VRFY <j\xffrg@x>",
    b"EXPN staff", b"STARTTLS", b"AUTH PLAIN AAAA", b"BOGUS", b"\xff\xfe", b"", b"MAIL FROM:<a@b.example>",
    b"DATA", b"RCPT TO:<bob@example.com>", b"HELO", b"EHLO", b"MAIL FROM:<a@b.example>", b"RSET", b"RSET x",
    b"MAIL FROM:<a@b.example>", b"MAIL FROM:<a@b.example>", b"RCPT", b"RCPT TO:", b"RCPT TO:<>", b"RCPT TO:<x@y>",
    b"RCPT TO:<bob@example.com>", b"DATA x", b"DATA", MESSAGE[:-2], b"MAIL FROM:<a@b.example> SIZE=999999999",
    b"MAIL FROM:<a@b.example> FOO", b"MAIL FROM:<a@b.example>", b"RCPT TO:<bob@example.com>", b"DATA",
    b"Subject: x\r\n\r\n" + b"x" * 5000 + b"\r\n.", b"x" * 1100, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", b"QUIT x",
    b"QUIT",
]


def test_every_reply_carries_an_enhanced_status_code() -> None:
    pairs = exchange([HELLO, *(line + b"\r\n" for line in EVERY_COMMAND[:-3])])
    assert len(pairs) == len(EVERY_COMMAND) - 3 + 2, pairs[-1]
    assert missing_enhanced_codes(pairs) == []
    for tail in (EVERY_COMMAND[-3:-2], EVERY_COMMAND[-2:]):  # those that end the session
        pairs = exchange([HELLO, *(line + b"\r\n" for line in tail)])
        assert missing_enhanced_codes(pairs) == []
        assert len(pairs) == len(tail) + 2


def test_the_reply_to_helo_and_ehlo_and_the_greeting_have_none() -> None:
    pairs = exchange([b"HELO a.example\r\n", HELLO])
    assert [lines[-1] for _, lines in pairs] == ["220 gw.example.net ESMTP mailmoat", "250 gw.example.net",
                                                 "250 ENHANCEDSTATUSCODES"]


# --- the pure decisions behind the replies ---------------------------------------------------------------


def test_resolve_recipient() -> None:
    def resolve(arg: str, ip: str = "198.51.100.7", text: str | None = None) -> tuple[str | None, str]:
        return resolve_recipient(policy(text) if text else policy(), ip, parse_rcpt(arg, utf8=False).path)

    assert resolve("<bob@example.com>") == (None, "bob@example.com")
    assert resolve("<Postmaster>") == (None, "postmaster@example.com")
    assert resolve("<Postmaster>", text="{}") == ("550 5.1.1 Recipient address rejected: no postmaster address "
                                                  "is configured", "Postmaster")
    assert resolve("<x%y@example.com>")[0] == replies.routing_denied("% in the local part")
    assert resolve("<x%y@example.com>", ip="192.0.2.10") == (None, "x%y@example.com")
    assert resolve("<@hop:x@example.com>", ip="192.0.2.10") == (None, "x@example.com")


def test_same_recipient_key() -> None:
    chosen = policy()
    assert same_recipient_key(chosen, "BOB@Example.com") == same_recipient_key(chosen, "bob@example.com")
    assert same_recipient_key(chosen, "BOB@partner.example") != same_recipient_key(chosen, "bob@partner.example")
    assert same_recipient_key(chosen, "postmaster@under_score.example") == "postmaster@under_score.example"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (None, None, False)),
        ({"SIZE": "10", "BODY": "8bitmime", "SMTPUTF8": None}, (10, "8BITMIME", True)),
        ({"SIZE": "1\u0663"}, "501 5.5.4 Syntax error in SIZE parameter"),  # a non-ASCII digit
        ({"SIZE": None}, "501 5.5.4 Syntax error in SIZE parameter"),
        ({"BODY": "BINARYMIME"}, "501 5.5.4 Syntax error in BODY parameter (7BIT or 8BITMIME)"),
        ({"SMTPUTF8": "yes"}, "501 5.5.4 Syntax error: SMTPUTF8 takes no value"),
        ({"RET": "FULL"}, "555 5.5.4 MAIL FROM parameters not recognized or not implemented: RET is not offered"),
    ],
)
def test_mail_parameters(params: dict[str, str | None], expected: object) -> None:
    result = mail_parameters(params)
    if isinstance(expected, str):
        assert result == expected
    else:
        assert not isinstance(result, str)
        assert (result.size, result.body, result.smtputf8) == expected
