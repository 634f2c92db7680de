"""Pure parts of delivery: reply parsing, host:port, the pool key, when SMTPUTF8 is needed."""

from __future__ import annotations

import pytest

from mailmoat_egress.delivery import (
    Destination,
    Message,
    Target,
    crlf_only,
    destination_for,
    dot_stuffed,
    make_result,
    parse_hostport,
    split_reply,
    utf8_required,
)


@pytest.mark.parametrize(("code", "text", "expected"), [
    (250, "2.0.0 Ok: queued as 12", ("2.0.0", "Ok: queued as 12")),
    (550, "5.1.1 <a@x> no such user", ("5.1.1", "<a@x> no such user")),
    (451, "try later", ("4.0.0", "try later")),
    (452, "4.2.2 mailbox full\nplease clean up", ("4.2.2", "mailbox full please clean up")),
    (550, "2.0.0 class does not match", ("5.0.0", "2.0.0 class does not match")),
    (554, "", ("5.0.0", "")),
])
def test_split_reply(code: int, text: str, expected: tuple[str, str]) -> None:
    assert split_reply(code, text) == expected


def test_result_properties() -> None:
    ok = make_result("a", 250, "2.0.0 ok", "mx", "TLSv1.3")
    assert ok.ok and not ok.temporary and not ok.permanent and ok.tls == "TLSv1.3"
    assert make_result("a", 451, "4.3.0 later").temporary
    bounced = make_result("a", 550, "5.7.1 denied")
    assert bounced.permanent and bounced.reply == "550 5.7.1 denied"
    assert make_result("a", 421, "busy").reply == "421 4.0.0 busy"


@pytest.mark.parametrize(("value", "expected"), [
    ("mail.example.com", ("mail.example.com", 25)),
    ("mail.example.com:2525", ("mail.example.com", 2525)),
    ("127.0.0.1:26", ("127.0.0.1", 26)),
    ("[::1]:2525", ("::1", 2525)),
    ("[2001:db8::1]", ("2001:db8::1", 25)),
])
def test_parse_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value) == expected


def test_pool_key_carries_the_name_checked() -> None:
    a = Target("192.0.2.1", 25, "mx1.example.com")
    b = Target("192.0.2.1", 25, "mx2.example.org")
    assert destination_for(a, "verify", None) == Destination("192.0.2.1", 25, "verify", "mx1.example.com")
    assert destination_for(a, "verify", None) != destination_for(b, "verify", None)
    assert destination_for(a, "verify", "relay.example.net") == destination_for(b, "verify", "relay.example.net")
    assert destination_for(a, "verify", None) != destination_for(a, "opportunistic", None)


def test_utf8_required() -> None:
    ascii_data = b"Subject: hi\r\n\r\nbody \xc3\xa9\r\n"
    utf8_headers = "Subject: grüße\r\n\r\nbody\r\n".encode()
    assert utf8_required(Message("s@out.org", ["a@example.com"], ascii_data, smtputf8=True)) is None
    assert utf8_required(Message("s@out.org", ["jörg@example.com"], ascii_data)) == "5.6.7"
    assert utf8_required(Message("jörg@out.org", ["a@example.com"], ascii_data)) == "5.6.7"
    assert utf8_required(Message("s@out.org", ["a@example.com"], utf8_headers, smtputf8=True)) == "5.6.9"
    assert utf8_required(Message("s@out.org", ["a@example.com"], utf8_headers)) is None


@pytest.mark.parametrize(("data", "expected"), [
    (b"a\r\nb\r\n", True),
    (b"", False),
    (b"a\r\nb", False),
    (b"a\nb\r\n", False),
    (b"a\rb\r\n", False),
    (b"a\r\r\n", False),
    (b"a\r\n\n", False),
])
def test_crlf_only(data: bytes, expected: bool) -> None:
    assert crlf_only(data) is expected


@pytest.mark.parametrize("data", [
    b"a\r\n", b".\r\n", b".a\r\n.b\r\n..c\r\nd.e\r\n", b"x\r\n.\r\n.\r\ny\r\n", b"a.\r\n.\r\n",
])
def test_dot_stuffing_matches_aiosmtplib(data: bytes) -> None:
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    assert dot_stuffed(data) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))
