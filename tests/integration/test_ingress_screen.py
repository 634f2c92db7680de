"""The connection filter at SMTP time (``connection_filter.at_smtp``): ingress's ConnectionScreen asking a
real (local) DNS server, with the stage's own verdict, header and trace event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from mailmoat_connection_filter.decide import HEADER
from mailmoat_ingress.screen import ConnectionScreen
from mailmoat_platform.bus import stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_policy import load_policy
from tests.support.dnsserver import DnsServer

pytestmark = pytest.mark.integration

ZONE = """
2.0.0.127.bl.test. 60 IN A 127.0.0.2
2.0.0.127.strict.test. 60 IN A 127.0.0.4
2.0.0.127.in-addr.arpa. 60 IN PTR mail.sender.test.
mail.sender.test. 60 IN A 127.0.0.2
"""

POLICY = """
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 1}}
pipeline: {{filters: [connection_filter, antispam]}}
connection_filter:
  at_smtp: {at_smtp}
  dnsbl:
{zones}
"""
ZONES = """\
    - {zone: bl.test, weight: 4, codes: {127.0.0.2: SBL}}
    - {zone: strict.test, action: reject}
"""
DATA = b"Received: from x\r\nFrom: s@sender.test\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE, timeout_names={"2.0.0.127.slow.test"}) as server:
        yield server


def policy(write_policy, dns: DnsServer, *, at_smtp: bool = True, zones: str = ZONES):
    return load_policy(write_policy(POLICY.format(port=dns.port, at_smtp=str(at_smtp).lower(), zones=zones)))


def envelope(policy_, ip: str = "127.0.0.2") -> Envelope:
    return Envelope(client_ip=ip, helo="mail.sender.test", mail_from="s@sender.test", rcpt_to=["a@example.com"],
                    itinerary=policy_.pipeline.itinerary())


async def test_a_listed_client_gets_the_stage_verdict_and_skips_its_hop(write_policy, dns: DnsServer) -> None:
    current = policy(write_policy, dns, zones="    - {zone: bl.test, weight: 4, codes: {127.0.0.2: SBL}}\n")
    message = envelope(current)
    screened = await ConnectionScreen().screen(current, message, DATA)
    assert screened is not None and screened.reply is None and screened.publish is not None
    verdict = message.verdicts["connection_filter"]
    assert verdict.result == "listed" and verdict.detail["dnsbl_score"] == 4
    assert verdict.detail["ptr"]["result"] == "pass"
    assert screened.publish.queue == stage_queue("antispam")  # the stage after the connection filter
    header, rest = screened.publish.message.split(b"\r\nReceived: ", 1)
    assert header.startswith(HEADER + b": CIP:127.0.0.2;IPV:DNSBL;ACT:listed;")
    assert b"DNSBL:bl.test=127.0.0.2/SBL" in header and rest.endswith(DATA.removeprefix(b"Received: "))
    assert message.size == len(screened.publish.message)
    assert screened.event.event == "AGENTINFO" and screened.event.service == "ingress"
    assert screened.event.detail.startswith("connection filter: listed")


async def test_a_reject_zone_is_refused_with_554(write_policy, dns: DnsServer) -> None:
    current = policy(write_policy, dns)
    message = envelope(current)
    screened = await ConnectionScreen().screen(current, message, DATA)
    assert screened is not None and screened.publish is None
    assert screened.reply == "554 5.7.1 Service unavailable, client host [127.0.0.2] blocked using strict.test"
    assert message.verdicts["connection_filter"].result == "reject"


async def test_slow_dns_leaves_the_message_to_the_stage(write_policy, dns: DnsServer) -> None:
    current = policy(write_policy, dns, zones="    - {zone: slow.test}\n")
    message = envelope(current)
    started = time.monotonic()
    assert await ConnectionScreen(timeout=0.3).screen(current, message, DATA) is None
    assert time.monotonic() - started < 0.9  # the screen's bound, not the DNS timeout
    assert message.verdicts == {} and message.size == 0


async def test_nothing_is_done_unless_the_policy_asks(write_policy, dns: DnsServer) -> None:
    current = policy(write_policy, dns, at_smtp=False)
    before = len(dns.queries)
    screen = ConnectionScreen()
    screen.warm(current, "127.0.0.9", "mail.sender.test")
    assert await screen.screen(current, envelope(current, "127.0.0.9"), DATA) is None
    await asyncio.sleep(0.2)
    assert len(dns.queries) == before


async def test_look_ups_start_at_mail_from(write_policy, dns: DnsServer) -> None:
    current = policy(write_policy, dns)
    screen = ConnectionScreen()
    screen.warm(current, "127.0.0.7", "mail.sender.test")
    deadline = time.monotonic() + 5
    wanted = {("7.0.0.127.bl.test.", "A"), ("7.0.0.127.strict.test.", "A"), ("7.0.0.127.in-addr.arpa.", "PTR")}
    while not wanted <= set(dns.queries) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert wanted <= set(dns.queries)
    asked = len(dns.queries)
    screened = await screen.screen(current, envelope(current, "127.0.0.7"), DATA)  # answered from the cache
    assert screened is not None and screened.publish is not None
    assert len(dns.queries) == asked
    await screen.close()
