"""The connection filter end to end: IP block list at greeting (hot-reloaded), the stage's report to the sink."""

from __future__ import annotations

import smtplib
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SERVICES = ("ingress", "connection_filter", "routing", "egress")
FILTER = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [connection_filter]
connection_filter:
  ip_block: [{block}]
  dnsbl:
    - zone: bl.test
      weight: 2
      codes: {{127.0.0.2: TEST}}
"""
MESSAGE = (
    b"From: s@sender.test\r\nTo: alice@example.com\r\nSubject: filtered\r\nMessage-ID: <cf1@sender.test>\r\n"
    b"X-Mailmoat-Connection-Report: forged\r\n\r\nbody line\r\n"
)
ZONE = """
1.0.0.127.bl.test. 60 IN A 127.0.0.2
1.0.0.127.in-addr.arpa. 60 IN PTR localhost.test.
localhost.test. 60 IN A 127.0.0.1
"""


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


def policy(block: str) -> str:
    return textwrap.dedent(POLICY) + textwrap.dedent(FILTER).replace("{block}", block)


def greeting(source: str, port: int) -> tuple[int, str]:
    """Connect from ``source``: the greeting code and text (smtplib raises on a non-220 greeting)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=15) as client:
            client.noop()
            return 220, ""
    except smtplib.SMTPConnectError as exc:
        return exc.smtp_code, exc.smtp_error.decode()


def reject_events(ip: str, timeout: float = 15) -> list[dict]:
    return records.wait_until(lambda: records.events_by("ip", ip), lambda evs: any(e["event"] == "REJECT" for e in evs),
                              f"REJECT of {ip}", timeout)


def test_block_list_at_greeting_report_to_sink_and_hot_reload(gateway_factory, sink: SmtpSink, dns) -> None:
    gateway = gateway_factory(policy("127.0.0.2/32"), services=SERVICES, dns_port=dns.port)

    code, text = greeting("127.0.0.2", gateway.smtp_port)
    assert (code, text) == (550, "5.7.513 Service unavailable, client host [127.0.0.2] blocked using the IP block list")
    events = reject_events("127.0.0.2")
    assert events[0]["service"] == "ingress" and "5.7.513" in events[0]["detail"]

    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, source_address=("127.0.0.1", 0), timeout=30) as client:
        client.ehlo("localhost.test")
        client.sendmail("s@sender.test", ["alice@example.com"], MESSAGE)
    (got,) = sink.wait_for(1, timeout=30)
    header_end = got.data.index(b"\r\nReceived: ") + 2
    report = got.data[:header_end].replace(b"\r\n\t", b"")
    assert report.startswith(b"X-Mailmoat-Connection-Report: CIP:127.0.0.1;IPV:DNSBL;ACT:listed;")
    assert b"DNSBL:bl.test=127.0.0.2/TEST" in report and b"FCRDNS:pass" in report and b"HELOPTR:match" in report
    rest = got.data[header_end:]
    assert rest.endswith(MESSAGE.replace(b"X-Mailmoat-Connection-Report: forged\r\n", b""))
    assert b"forged" not in got.data

    # a new CIDR in the policy file takes effect without a restart
    assert greeting("127.0.0.4", gateway.smtp_port)[0] == 220
    gateway.write_policy(policy("127.0.0.2/32, 127.0.0.4/30").format(sink_port=sink.port, max_size=1_000_000,
                                                                     dns_port=dns.port))
    deadline = time.monotonic() + 15
    code = 220
    while code == 220 and time.monotonic() < deadline:
        time.sleep(0.2)
        code, text = greeting("127.0.0.5", gateway.smtp_port)
    assert (code, text) == (550, "5.7.513 Service unavailable, client host [127.0.0.5] blocked using the IP block list")
    assert greeting("127.0.0.1", gateway.smtp_port)[0] == 220


AT_SMTP = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [connection_filter]
connection_filter:
  at_smtp: true
  dnsbl:
    - zone: bl.test
      weight: 2
      codes: {{127.0.0.2: TEST}}
    - zone: rbl.test
      action: reject
"""
REJECT_ZONE = "3.0.0.127.rbl.test. 60 IN A 127.0.0.2\n"


def test_at_smtp_ingress_judges_the_connection_and_refuses_a_reject_listing(gateway_factory, sink: SmtpSink,
                                                                            dns) -> None:
    """``connection_filter.at_smtp``: the same report reaches the sink without the stage's hop (its trace event
    written by ingress, none by the stage), and a listing whose action is ``reject`` is refused at DATA."""
    dns.add_zone(REJECT_ZONE)
    gateway = gateway_factory(textwrap.dedent(POLICY) + textwrap.dedent(AT_SMTP), services=SERVICES,
                              dns_port=dns.port)

    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, source_address=("127.0.0.1", 0), timeout=30) as client:
        client.ehlo("localhost.test")
        client.mail("s@sender.test")
        client.rcpt("alice@example.com")
        code, reply = client.data(MESSAGE)
    assert code == 250, reply
    queue_id = reply.decode().split()[1]
    (got,) = sink.wait_for(1, timeout=30)
    header_end = got.data.index(b"\r\nReceived: ") + 2
    report = got.data[:header_end].replace(b"\r\n\t", b"")
    assert report.startswith(b"X-Mailmoat-Connection-Report: CIP:127.0.0.1;IPV:DNSBL;ACT:listed;")
    assert b"DNSBL:bl.test=127.0.0.2/TEST" in report and b"DNSBL:rbl.test=clean" in report
    assert b"FCRDNS:pass" in report and b"HELOPTR:match" in report
    assert got.data[header_end:].endswith(MESSAGE.replace(b"X-Mailmoat-Connection-Report: forged\r\n", b""))
    events = records.wait_until(lambda: records.events(queue_id),
                                lambda evs: any(e["event"] == "DELIVER" for e in evs), f"DELIVER of {queue_id}")
    judged = [e for e in events if e["detail"].startswith("connection filter:")]
    assert [(e["event"], e["service"]) for e in judged] == [("AGENTINFO", "ingress")]
    assert judged[0]["data"]["ipv"] == "DNSBL" and judged[0]["data"]["dnsbl_score"] == 2
    assert "connection_filter" not in {e["service"] for e in events}
    names = [e["event"] for e in events]
    assert names.index("RECEIVE") < events.index(judged[0]) < names.index("ROUTE")

    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, source_address=("127.0.0.3", 0), timeout=30) as client:
        client.ehlo("mail.sender.test")
        client.mail("s@sender.test")
        client.rcpt("alice@example.com")
        code, reply = client.data(MESSAGE)
    assert (code, reply.decode()) == (554, "5.7.1 Service unavailable, client host [127.0.0.3] blocked using rbl.test")
    refused = records.wait_until(lambda: records.events_by("ip", "127.0.0.3"),
                                 lambda evs: any(e["event"] == "REJECT" for e in evs), "REJECT of 127.0.0.3")
    assert any("554 5.7.1" in e["detail"] for e in refused if e["event"] == "REJECT")
    time.sleep(1)
    assert len(sink.messages) == 1
