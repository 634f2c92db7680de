"""A delivered message's sender authentication in the trace, end to end: the antispam stage (SPF, two DKIM
signatures, DMARC against a real DNS server on loopback) traces a compact summary with its verdict, the recorder
writes it to PostgreSQL, and the console's timeline shows it per method, with no held copy to read."""

from __future__ import annotations

import asyncio
import smtplib
import textwrap
import time
from collections.abc import Iterator

import dkim
import httpx
import pytest

from mailmoat_platform import redisclient
from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.dkimkeys import make_key, txt_zone
from tests.support.dnsserver import DnsServer
from tests.support.infra import REDIS_TEST_URL
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

KEY, RELAY_KEY, OTHER_KEY = make_key(), make_key(), make_key()
ANTISPAM = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [antispam]
antispam:
  actions: {{spam: deliver, hcspam: deliver, bulk: deliver, spoof: deliver}}
"""
ZONE = ('sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
        '_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject"\n'
        + txt_zone("s1._domainkey.sender.test", KEY.record) + "\n"
        + txt_zone("r1._domainkey.relay.test", OTHER_KEY.record) + "\n")  # not the key relay.test signs with
MESSAGE = (b"From: Ann <ann@sender.test>\r\nTo: alice@example.com\r\nSubject: traced auth\r\n"
           b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <auth41@sender.test>\r\n\r\n"
           b"Shall we meet for lunch on Thursday?\r\n")


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


def antispam_event(message_id: str, timeout: float = 30) -> tuple[str, dict]:
    """(queue id, the antispam stage's trace event) of the message with this Message-ID, once recorded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for queue_id in records.ids_containing("msgid", message_id):
            found = [e for e in records.events(queue_id) if e["service"] == "antispam"]
            if found:
                return queue_id, found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no antispam trace for {message_id}")


async def timeline(queue_id: str) -> tuple[dict, str]:
    """The console's timeline of the message (API and page), read by an administrator from the gateway's records."""
    from mailmoat_console.app import create_app
    from mailmoat_console.config import ConsoleConfig
    from mailmoat_console.core import Console
    from mailmoat_console.rights import Role
    from mailmoat_records import db

    redis = redisclient.from_url(REDIS_TEST_URL)
    try:
        async with db.open_pool(records.URL, max_size=2, name="console-test") as pool:
            console = Console.build(ConsoleConfig(secure_cookies=False), pool, redis)
            await console.accounts.create("auth-admin", Role.admin, "a long test password", [])
            transport = httpx.ASGITransport(app=create_app(console), client=("192.0.2.10", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                signed = await client.post("/api/session", json={"name": "auth-admin",
                                                                 "password": "a long test password"})
                assert signed.status_code == 200, signed.text
                return (await client.get(f"/api/trace/{queue_id}")).json(), (await client.get(
                    f"/trace/{queue_id}")).text
    finally:
        await redis.aclose()


def test_a_delivered_messages_spf_and_dkim_are_in_its_trace(gateway_factory, sink: SmtpSink, dns: DnsServer) -> None:
    gateway = gateway_factory(textwrap.dedent(POLICY) + textwrap.dedent(ANTISPAM),
                              services=("ingress", "antispam", "routing", "egress"), dns_port=dns.port)
    signed = dkim.sign(MESSAGE, b"s1", b"sender.test", KEY.private_pem) + MESSAGE
    signed = dkim.sign(signed, b"r1", b"relay.test", RELAY_KEY.private_pem) + signed
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo("mx.sender.test")
        client.sendmail("ann@sender.test", ["alice@example.com"], signed)
    (got,) = sink.wait_for(1, timeout=60)
    assert got.data.endswith(signed)

    queue_id, event = antispam_event("auth41@sender.test")
    assert event["event"] == "AGENTINFO" and event["data"]["result"] == "clean"
    assert event["data"]["authentication"] == {
        "spf": {"result": "pass", "domain": "sender.test", "identity": "mailfrom"},
        "spf_helo": {"result": "none", "domain": "mx.sender.test"},
        "dkim": [{"result": "fail", "domain": "relay.test"}, {"result": "pass", "domain": "sender.test"}],
        "dmarc": {"result": "pass", "domain": "sender.test", "policy": "none"},
        "arc": "none",
        "compauth": {"result": "pass", "reason": "100"},
    }

    api, page = asyncio.run(timeline(queue_id))
    assert api["quarantine_id"] is None  # delivered: no held copy to read the results from
    assert [(a["method"], a["result"], a["properties"]) for a in api["authentication_results"]] == [
        ("spf", "pass", "smtp.mailfrom=sender.test"), ("spf", "none", "smtp.helo=mx.sender.test"),
        ("dkim", "fail", "header.d=relay.test"), ("dkim", "pass", "header.d=sender.test"),
        ("dmarc", "pass", "header.from=sender.test"), ("arc", "none", ""), ("compauth", "pass", "reason=100")]
    assert "as the antispam stage traced them" in page and "header.d=relay.test" in page
    assert "smtp.mailfrom=sender.test" in page
