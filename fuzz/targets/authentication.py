"""Sender authentication (SPF, DKIM, ARC, DMARC, composite) of arbitrary message bytes against a fixed
zone where ``bank.test`` publishes ``p=reject``: a result every time, never an exception, with an
``Authentication-Results`` header that is printable ASCII, and no DKIM pass (no key is published)."""

from __future__ import annotations

import asyncio

from mailmoat_antispam.auth import authenticate, authentication_results
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy
from tests.support.spfsuite import TableResolver

ZONE = {
    "bank.test": [("TXT", ["v=spf1 ip4:198.51.100.0/24 -all"])],
    "_dmarc.bank.test": [("TXT", ["v=DMARC1; p=reject; rua=mailto:d@bank.test"])],
    "s1._domainkey.bank.test": [("TXT", ["v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ"])],
}
POLICY = Policy()
ENVELOPE = Envelope(client_ip="192.0.2.1", mail_from="ceo@bank.test", helo="mx.evil.test", rcpt_to=["u@ours.test"])


def test_one_input(data: bytes) -> None:
    result = asyncio.run(authenticate(ENVELOPE, data, TableResolver(ZONE), POLICY))
    header = authentication_results("mx.ours.test", result)
    assert header.startswith(b"Authentication-Results: mx.ours.test;") and header.endswith(b"\r\n")
    assert all(32 <= c < 127 for c in header.replace(b"\r\n ", b"")[:-2]), header
    assert all(r.result != "pass" for r in result.dkim), result.dkim
    assert result.spf.result == "fail", result.spf
    if result.author.domains == ["bank.test"]:  # the one author is bank.test: its p=reject applies
        assert (result.dmarc.result, result.dmarc.effective) == ("fail", "reject"), result.dmarc


def seeds() -> list[bytes]:
    body = b"To: u@ours.test\r\nSubject: wire the money\r\n\r\nToday.\r\n"
    return [
        b"From: ceo@bank.test\r\n" + body,
        b"From: \"CEO\" <ceo@bank.test>, x@evil.test\r\n" + body,
        b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.test; s=s1; h=from:to; bh=AAAA; b=AAAA\r\nFrom: ceo@bank.test\r\n"
        + body,
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.test; s=s; b=abc\r\nARC-Message-Signature: i=1; d=x.test; s=s\r\n"
        b"ARC-Authentication-Results: i=1; x.test; dmarc=pass\r\nFrom: ceo@bank.test\r\n" + body,
        b"From: =?utf-8?q?ceo=40bank.test?= <x@evil.test>\r\n" + body,
        b"",
    ]
