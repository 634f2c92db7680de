"""The antispam stage end to end: GTUBE marked as spam with a SPAM trace event, a DKIM-signed clean
message arriving byte-identical after the prepended headers (its signature still verifies at the
sink), a newsletter's BCL, and an allow-listed client skipping scoring."""

from __future__ import annotations

import smtplib
import textwrap
import time
from collections.abc import Iterator

import dkim
import pytest

from mailmoat_antispam.rules import GTUBE
from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.dkimkeys import make_key, txt_zone
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

KEY = make_key()
ANTISPAM = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [{filters}]
connection_filter:
  ip_allow: [{allow}]
  ptr: false
  helo: false
antispam:
  actions: {{spam: deliver, hcspam: deliver, bulk: deliver, spoof: deliver}}
"""
ZONE = 'sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n' + txt_zone("s1._domainkey.sender.test", KEY.record)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


def policy(filters: str, allow: str = "192.0.2.1/32") -> str:
    return textwrap.dedent(POLICY) + textwrap.dedent(ANTISPAM).replace("{filters}", filters).replace("{allow}", allow)


def message(n: int, subject: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"From: Ann <ann@sender.test>\r\nTo: alice@example.com\r\nSubject: " + subject.encode()
            + b"\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <as%d@sender.test>\r\n" % n + extra
            + b"\r\n" + body)


def send(port: int, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.sender.test")
        client.sendmail("ann@sender.test", ["alice@example.com"], data)


def split(data: bytes) -> tuple[bytes, bytes]:
    """Our prepended header block (up to ingress's Received) and the rest."""
    index = data.index(b"\r\nReceived: ") + 2
    return data[:index], data[index:]


def by_subject(got, subject: bytes):
    (item,) = [g for g in got if b"Subject: " + subject + b"\r\n" in g.data]
    return item


def trace_events(message_id: str, timeout: float = 15) -> list[dict]:
    """The trace events of the message with this Message-ID, once the antispam stage recorded one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for queue_id in records.ids_containing("msgid", message_id):
            events = records.events(queue_id)
            if any(e["service"] == "antispam" for e in events):
                return events
        time.sleep(0.2)
    raise AssertionError(f"no antispam trace for {message_id}")


def test_gtube_clean_signed_and_bulk(gateway_factory, sink: SmtpSink, dns: DnsServer) -> None:
    gateway = gateway_factory(policy("antispam"), services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port)
    clean = message(1, "lunch", b"Shall we meet for lunch on Thursday?\r\n")
    signed = dkim.sign(clean, b"s1", b"sender.test", KEY.private_pem) + clean
    gtube = message(2, "test", b"This is the GTUBE:\r\n" + GTUBE.encode() + b"\r\n")
    news = message(3, "news", b"Our monthly newsletter.\r\n",
                   b"List-Unsubscribe: <https://news.sender.test/u>\r\n"
                   b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nList-Id: <monthly.news.sender.test>\r\n"
                   b"Precedence: bulk\r\nX-Mailer: MailChimp Mailer\r\n")
    for data in (signed, gtube, news):
        send(gateway.smtp_port, data)
    got = sink.wait_for(3, timeout=60)

    head, rest = split(by_subject(got, b"lunch").data)
    assert rest.endswith(signed) and rest.count(b"\r\n\r\n") == 1
    unfolded = head.replace(b"\r\n\t", b"").replace(b"\r\n ", b" ")
    assert b"X-Mailmoat-SCL: " in head and b"SFV:NSPM" in unfolded and b"CAT:NONE" in unfolded
    assert b"Authentication-Results: gw.mailmoat.test;" in head and b"dkim=pass" in unfolded
    txt = KEY.record.encode()
    assert dkim.verify(by_subject(got, b"lunch").data, dnsfunc=lambda name, timeout=5: txt)

    head, rest = split(by_subject(got, b"test").data)
    unfolded = head.replace(b"\r\n\t", b"")
    assert rest.endswith(gtube)
    assert b"SFV:SPM;SCL:9;" in unfolded and b"CAT:HSPM" in unfolded and b"RULES:GTUBE" in unfolded
    assert b"X-Mailmoat-SCL: 9\r\n" in head
    events = trace_events("as2@sender.test")
    spam = [e for e in events if e["event"] == "SPAM"]
    assert spam and spam[0]["data"]["scl"] == 9 and spam[0]["data"]["result"] == "hcspam"

    head, rest = split(by_subject(got, b"news").data)
    unfolded = head.replace(b"\r\n\t", b"")
    assert rest.endswith(news) and b"BCL:8;CAT:BULK" in unfolded and b"X-Mailmoat-SCL: 6\r\n" in head


def test_allow_listed_client_skips_scoring(gateway_factory, sink: SmtpSink, dns: DnsServer) -> None:
    gateway = gateway_factory(policy("connection_filter, antispam", "127.0.0.1/32"),
                              services=("ingress", "connection_filter", "antispam", "routing", "egress"),
                              dns_port=dns.port)
    gtube = message(4, "allowed", GTUBE.encode() + b"\r\n")
    send(gateway.smtp_port, gtube)
    (got,) = sink.wait_for(1, timeout=60)
    head = got.data[: got.data.index(b"\r\nReceived: ") + 2].replace(b"\r\n\t", b"")
    assert b"IPV:CAL;SFV:SKN;SCL:-1;" in head and b"X-Mailmoat-SCL: -1\r\n" in head and b"RULES" not in head
    assert got.data.endswith(gtube)


def test_routing_quarantines_gtube_by_the_default_actions(gateway_factory, sink: SmtpSink, dns: DnsServer) -> None:
    text = policy("antispam").replace("  actions: {{spam: deliver, hcspam: deliver, bulk: deliver, spoof: deliver}}\n",
                                      "  bulk_threshold: 7\n")
    assert "hcspam: deliver" not in text
    gateway = gateway_factory(text, services=("ingress", "antispam", "routing", "egress"), dns_port=dns.port)
    send(gateway.smtp_port, message(5, "held", GTUBE.encode() + b"\r\n"))
    send(gateway.smtp_port, message(6, "passes", b"See you at the meeting.\r\n"))
    (got,) = sink.wait_for(1, timeout=60)
    assert b"Subject: passes\r\n" in got.data
    deadline = time.monotonic() + 20
    events: list[dict] = []
    while time.monotonic() < deadline and not {"SPAM", "QUARANTINE"} <= {e["event"] for e in events}:
        events = trace_events("as5@sender.test")
        time.sleep(0.2)
    assert [e["event"] for e in events if e["event"] in ("SPAM", "QUARANTINE", "DELIVER")] == ["SPAM", "QUARANTINE"]
    assert len(sink.messages) == 1
