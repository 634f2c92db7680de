"""Impersonation by an address in the display name, through ``Checker.check`` with DNS answered on
loopback: the shown domain's DMARC policy (asked only for a name that is the address and nothing else)
makes it phish (CAT:DIMP) at quarantine or reject; at ``p=none``, without a record, without an answer,
or for a name that merely holds the address (a forwarding service's), it is the scored
``FROM_NAME_ADDRESS``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat_antispam.check import Checker
from mailmoat_antispam.score import cat_code
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from tests.support.dnsserver import DnsServer

pytestmark = pytest.mark.integration

ZONE = """
_dmarc.bank.test. 60 IN TXT "v=DMARC1; p=reject"
_dmarc.shop.test. 60 IN TXT "v=DMARC1; p=quarantine; sp=none"
_dmarc.monitor.test. 60 IN TXT "v=DMARC1; p=none"
"""


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE, timeout_names={"_dmarc.slow.test"}) as server:
        yield server


async def _check(dns: DnsServer, from_value: str):
    policy = parse_policy(f"dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 0.5}}\n"
                          "antispam: {bayes: {enabled: false}}\n")
    data = (f"From: {from_value}\r\nTo: bob@example.com\r\nSubject: hello\r\n"
            "Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <i1@evil.test>\r\n\r\nhello\r\n").encode()
    envelope = Envelope(client_ip="192.0.2.1", helo="h.test", mail_from="x@evil.test", rcpt_to=["bob@example.com"])
    return (await Checker().check(envelope, data, policy)).verdict


@pytest.mark.parametrize(("value", "phish"), [
    ('"ceo@bank.test" <x@evil.test>', True),
    ('"ceo@shop.test" <x@evil.test>', True),  # p=quarantine at the domain itself
    ('"ceo@mail.shop.test" <x@evil.test>', False),  # sp=none below it
    ('"ceo@monitor.test" <x@evil.test>', False),
    ('"ceo@nodmarc.test" <x@evil.test>', False),
    ('"AuthorTracker@bank.test [mothlight/bank]" <ticket_1@forward.test>', False),
])
async def test_shown_domains_dmarc_policy_decides_phish(dns: DnsServer, value: str, phish: bool) -> None:
    verdict = await _check(dns, value)
    if phish:
        assert verdict.result == "phish" and cat_code(verdict.detail) == "DIMP"
        assert "IMPERSONATION_ADDRESS" in verdict.detail["rules"]
    else:
        assert verdict.result != "phish" and "impersonation" not in verdict.detail
        assert "FROM_NAME_ADDRESS" in verdict.detail["rules"] and verdict.detail["scl"] < 5


async def test_no_dmarc_answer_is_noted_and_scored(dns: DnsServer) -> None:
    verdict = await _check(dns, '"ceo@slow.test" <x@evil.test>')
    assert verdict.result != "phish" and "FROM_NAME_ADDRESS" in verdict.detail["rules"]
    assert "impersonation: no DMARC answer for slow.test" in verdict.detail["notes"]
