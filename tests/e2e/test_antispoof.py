"""Anti-spoofing end to end (issue 14): the From shapes that confused the author reading, each sent
from an address bank.test's SPF does not allow while ``_dmarc.bank.test`` says ``p=reject``, through
a gateway with the antispam stage and DNS answered locally. With ``author_check: reject`` every shape
but the plain one is refused at the end of DATA (550 5.7.512, traced REJECT) and the plain one is
rejected by DMARC (5.7.509); with ``author_check: evaluate`` every shape is judged by its strictest
author domain (5.7.509), several unauthenticated authors without a policy are held as spoof, and a
display name holding another domain's address is held as phish (CAT:DIMP) — each verdict in the trace."""

from __future__ import annotations

import json
import smtplib
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.e2e.actions_support import wait_event
from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

ANTISPAM = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [antispam]
antispam:
  author_check: {mode}
"""
ZONE = """
bank.test. 60 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.bank.test. 60 IN TXT "v=DMARC1; p=reject"
nodmarc.test. 60 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
"""
SHAPES = {  # MAIL FROM local part -> the From fields
    "plain": [b"<ceo@bank.test>"],
    "list": [b"<ceo@bank.test>, <x@evil.test>"],
    "fields": [b"<ceo@bank.test>", b"<x@evil.test>"],
    "name": [b"ceo@bank.test <x@evil.test>"],
    "paren": [b"x@evil.test)<ceo@bank.test>"],
}


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


def _policy(mode: str) -> str:
    return textwrap.dedent(POLICY) + textwrap.dedent(ANTISPAM).replace("{mode}", mode)


def _message(tag: str, froms: list[bytes]) -> bytes:
    return (b"".join(b"From: " + f + b"\r\n" for f in froms) + b"To: alice@example.com\r\nSubject: wire " + tag.encode()
            + b"\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + tag.encode() + b"@spoof.test>\r\n\r\n"
            + b"Please wire the money today.\r\n")


def _send(port: int, tag: str, froms: list[bytes]) -> tuple[int, bytes]:
    """(SMTP code, text) of the end of DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.evil.test")
        try:
            client.sendmail(f"{tag}@evil.test", ["alice@example.com"], _message(tag, froms))
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
    return 250, b""


def _queue_id(index: str, timeout: float = 20) -> str:
    kind, value = index.split(":", 1)
    return records.wait_id(kind, value, timeout)


def _spam_event(tag: str) -> dict:
    return wait_event(_queue_id(f"msgid:{tag}@spoof.test"), "SPAM", service="antispam")


def test_author_shapes_refused_at_data(gateway_factory, sink: SmtpSink, dns: DnsServer) -> None:
    gateway = gateway_factory(_policy("reject"), services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port)
    replies = {tag: _send(gateway.smtp_port, tag, froms) for tag, froms in SHAPES.items()}
    for tag in ("list", "fields", "name", "paren"):
        code, text = replies[tag]
        assert code == 550 and text.startswith(b"5.7.512 Message must be RFC 5322 section 3.6.2 compliant"), tag
        reject = wait_event(_queue_id(f"sender:{tag}@evil.test"), "REJECT", service="ingress")
        assert "5.7.512" in reject["detail"]
    assert replies["plain"] == (250, b"")
    plain = _spam_event("plain")
    assert plain["data"]["dmarc"]["result"] == "fail" and plain["data"]["dmarc"]["policy"] == "reject"
    assert "5.7.509" in wait_event(plain["message_id"], "FAIL", service="routing")["detail"]
    time.sleep(0.5)
    assert sink.messages == []


def test_every_author_domain_judged_when_the_policy_says_so(gateway_factory, sink: SmtpSink, dns: DnsServer) -> None:
    gateway = gateway_factory(_policy("evaluate"), services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port)
    extra = {"nopolicy": [b"<ceo@nodmarc.test>, <x@evil.test>"], "display": [b'"ceo@bank.test" <x@evil.test>'],
             "qword": [b"=?utf-8?q?ceo=40bank.test?= <x@evil.test>"],
             # ceo\uff20bank.test\u200b: a fullwidth at sign, a zero-width space
             "lookalike": [b"=?utf-8?b?Y2Vv77ygYmFuay50ZXN04oCL?= <x@evil.test>"],
             "honest": [b"Ann <ann@evil.test>"]}
    for tag, froms in {**SHAPES, **extra}.items():
        assert _send(gateway.smtp_port, tag, froms) == (250, b""), tag
    for tag in SHAPES:
        event = _spam_event(tag)
        dmarc = event["data"]["dmarc"]
        assert (dmarc["result"], dmarc["policy"], dmarc["domain"]) == ("fail", "reject", "bank.test"), tag
        assert "spoof" in event["data"]["categories"], tag
        assert "5.7.509" in wait_event(event["message_id"], "FAIL", service="routing")["detail"], tag
    held = _spam_event("nopolicy")
    assert held["data"]["category"] == "spoof" and held["data"]["forged"]
    assert wait_event(held["message_id"], "QUARANTINE", service="routing")
    phish = _spam_event("display")
    assert phish["data"]["category"] == "phish"
    assert phish["data"]["impersonation"] == {"kind": "address", "claimed": "ceo@bank.test", "sender": "x@evil.test"}
    assert wait_event(phish["message_id"], "QUARANTINE", service="routing")
    for tag in ("qword", "lookalike"):  # the same name as a Q word with a dot, as a look-alike: as clients show it
        event = _spam_event(tag)
        assert event["data"]["category"] == "phish" and event["data"]["impersonation"] == phish["data"]["impersonation"]
    kept = records.held_bytes(phish["message_id"]) or b""
    assert b"CAT:DIMP" in kept.replace(b"\r\n\t", b"")
    (delivered,) = sink.wait_for(1, timeout=30)
    assert b"Subject: wire honest\r\n" in delivered.data
    head = delivered.data[: delivered.data.index(b"\r\nReceived: ")].replace(b"\r\n\t", b"").replace(b"\r\n ", b" ")
    assert b"smtp.mailfrom=evil.test" in head and b"smtp.helo=mx.evil.test" in head
    assert json.dumps(phish["data"])  # the verdict, as traced, is plain JSON


UNREADABLE = {  # Content-Type parameters the MIME parser could not read, with the boundary they give
    "charset": (b"boundary*=\x91tf-8''b%C3%A4", b"b\xc3\xa4"),  # raw 8-bit bytes in an RFC 2231 charset
    "continued": (b"name*=x; name*0=y; boundary=zz", b"zz"),  # continuations the library cannot order
    "nul": (b"boundary*=ut\x00f-8''b%41", b"bA"),  # a NUL in an RFC 2231 charset
}


def test_a_content_type_the_mime_parser_could_not_read_does_not_spare_a_spoof(gateway_factory, sink: SmtpSink,
                                                                             dns: DnsServer) -> None:
    """Each of these Content-Type fields made the message unreadable to the MIME parser: antispam failed on it
    and passed it on unchecked (SFV:ERR), DMARC p=reject included."""
    gateway = gateway_factory(_policy("reject"), services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port)
    for tag, (params, boundary) in UNREADABLE.items():
        message = _message(tag, SHAPES["plain"]).replace(
            b"\r\n\r\n", b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; " + params + b"\r\n\r\n--"
            + boundary + b"\r\nContent-Type: text/plain\r\n\r\n", 1) + b"--" + boundary + b"--\r\n"
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
            client.ehlo("mx.evil.test")
            client.sendmail(f"{tag}@evil.test", ["alice@example.com"], message)
    for tag in UNREADABLE:
        event = _spam_event(tag)
        assert event["data"]["dmarc"]["result"] == "fail" and event["data"]["dmarc"]["policy"] == "reject", tag
        assert "5.7.509" in wait_event(event["message_id"], "FAIL", service="routing")["detail"], tag
    time.sleep(0.5)
    assert sink.messages == []
