"""Malware end to end with a real clamd: quarantine and release (once, across a restart), reject with
an NDR to the sender's server, strip; and a DNS block list listing that rejects with an NDR."""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat_mail import mimeedit
from tests.e2e.actions_support import events_of, id_by_msgid, quarantine_cli, wait_event
from tests.support.attachments import message
from tests.support.clamd import EICAR, ClamdServer
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

AV = ("ingress", "antivirus", "routing", "egress")
POLICY = """
organization:
  hostname: gw.mailmoat.test
accepted_domains:
  - domain: example.com
    route: onprem
  - domain: outside.test
    route: senders
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
  senders:
    hosts: ["127.0.0.1:{sender_port}"]
    tls: none
delivery:
  retry_delays: [1, 2]
  expire_after: 600
pipeline:
  filters: [{filters}]
antimalware:
  clamd: "127.0.0.1:{clamd_port}"
  action: {action}
quarantine:
  admin_notify: {notify}
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
connection_filter:
  dnsbl:
    - zone: bl.test
      action: reject
"""
INFECTED = message([("eicar.com", "application/octet-stream", EICAR, "base64")], subject="infected")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with ClamdServer(Path(tmp_path_factory.mktemp("clamd"))) as server:
        yield server


@pytest.fixture
def sender_sink() -> Iterator[SmtpSink]:
    """The sender's own mail server (outside.test), where NDRs arrive."""
    with SmtpSink() as server:
        yield server


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer("1.0.0.127.bl.test. 60 IN A 127.0.0.2\n") as server:
        yield server


def start(gateway_factory, clamd: ClamdServer, sender_sink: SmtpSink, dns: DnsServer, *, action: str = "quarantine",
          notify: str = "null", filters: str = "antivirus", services: tuple[str, ...] = AV):
    return gateway_factory(POLICY, services=services, sender_port=sender_sink.port, clamd_port=clamd.port,
                           action=action, notify=notify, filters=filters, dns_port=dns.port)


def send(port: int, data: bytes, sender: str = "sender@outside.test") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, ["alice@example.com"], data)


def held_ids(amqp_url: str) -> list[str]:
    listing = quarantine_cli(amqp_url, "list", "--reason", "malware")
    assert listing.returncode == 0, listing.stderr
    return [line.split()[0] for line in listing.stdout.splitlines()]


def wait_held(amqp_url: str, count: int) -> list[str]:
    import time

    deadline = time.monotonic() + 60
    while len(ids := held_ids(amqp_url)) < count:
        assert time.monotonic() < deadline, f"{len(ids)} held, expected {count}"
        time.sleep(0.2)
    return ids


def test_eicar_quarantined_released_once_and_after_a_restart(
        gateway_factory, clamd, sink: SmtpSink, sender_sink, dns, amqp_url: str) -> None:
    gateway = start(gateway_factory, clamd, sender_sink, dns, notify="security@example.com")
    send(gateway.smtp_port, INFECTED)
    send(gateway.smtp_port, INFECTED.replace(b"<av-test@", b"<av-test-2@"))
    # Held in whichever order the antivirus stage finished them: tell them apart by Message-ID.
    first, second = id_by_msgid("av-test@outside.test"), id_by_msgid("av-test-2@outside.test")
    assert set(wait_held(amqp_url, 2)) == {first, second}
    # the administrator hears of both; nothing else reaches anyone
    notices = sink.wait_for(2, timeout=60)
    assert sorted(m.rcpt_tos[0] for m in notices) == ["security@example.com"] * 2
    assert all(m.mail_from == "" and b"Malware quarantined" in m.data for m in notices)
    assert wait_event(first, "QUARANTINE")["data"]["result"] == "malware"
    assert "DELIVER" not in events_of(first)

    shown = quarantine_cli(amqp_url, "show", first)
    assert shown.returncode == 0
    assert "reason:      malware" in shown.stdout and "Eicar-Test-Signature" in shown.stdout
    assert "Subject: infected" in shown.stdout and "release by:  admin" in shown.stdout
    refused = quarantine_cli(amqp_url, "release", first, "--as", "user")
    assert refused.returncode == 1 and "only an administrator" in refused.stderr

    sink.clear()
    done = quarantine_cli(amqp_url, "release", first)
    assert done.returncode == 0 and "released to alice@example.com" in done.stdout
    (delivered,) = sink.wait_for(1, timeout=60)
    assert delivered.rcpt_tos == ["alice@example.com"] and delivered.data.endswith(INFECTED)
    wait_event(first, "DELIVER")
    again = quarantine_cli(amqp_url, "release", first)
    assert again.returncode == 0 and "already released to alice@example.com" in again.stdout
    assert "released to" not in again.stdout.replace("already released to", "")

    # every service stops; a new gateway on the same Redis releases the second message
    gateway.stop()
    gateway = start(gateway_factory, clamd, sender_sink, dns, notify="security@example.com")
    assert set(held_ids(amqp_url)) == {first, second}
    assert quarantine_cli(amqp_url, "release", second).returncode == 0
    assert len(sink.wait_for(2, timeout=60)) == 2
    wait_event(second, "DELIVER")
    assert [m.data.endswith(INFECTED) for m in sink.messages].count(True) == 1  # the first, once
    assert sum(1 for m in sink.messages if b"<av-test-2@" in m.data) == 1
    assert events_of(first).count("DELIVER") == 1 and events_of(first).count("RELEASE") == 1


def test_reject_sends_ndr_to_the_sender_but_not_to_the_null_sender(
        gateway_factory, clamd, sink: SmtpSink, sender_sink, dns) -> None:
    gateway = start(gateway_factory, clamd, sender_sink, dns, action="reject")
    send(gateway.smtp_port, INFECTED)
    send(gateway.smtp_port, INFECTED.replace(b"<av-test@", b"<av-null@"), sender="")
    (ndr,) = sender_sink.wait_for(1, timeout=60)
    assert ndr.mail_from == "" and ndr.rcpt_tos == ["sender@outside.test"]
    report = email.message_from_bytes(ndr.data, policy=email.policy.default)
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status").as_string()
    assert "Status: 5.7.1" in status and "Final-Recipient: rfc822; alice@example.com" in status
    assert b"Message rejected: malware detected (Eicar-Test-Signature" in ndr.data
    assert EICAR not in ndr.data and b"Message-ID: <av-test@outside.test>" in ndr.data
    # the null-sender message: rejected, traced, no report
    null_id = id_by_msgid("av-null@outside.test")
    assert "550 5.7.1" in wait_event(null_id, "FAIL")["detail"]
    assert "no non-delivery report: null sender" in wait_event(null_id, "AGENTINFO")["detail"]
    assert len(sender_sink.messages) == 1 and sink.messages == []


def test_strip_replaces_the_attachment_and_keeps_every_other_byte(
        gateway_factory, clamd, sink: SmtpSink, sender_sink, dns) -> None:
    gateway = start(gateway_factory, clamd, sender_sink, dns, action="strip")
    send(gateway.smtp_port, INFECTED)
    (got,) = sink.wait_for(1, timeout=60)
    span = mimeedit.find(mimeedit.parts(INFECTED), "1.2")
    assert span is not None and span.filename == "eicar.com"
    start_at = got.data.index(INFECTED[: span.start])  # prepended trace headers, then the original bytes
    prepended = [line.split(b":", 1)[0] for line in got.data[:start_at].split(b"\r\n") if line[:1] not in b" \t"]
    assert set(prepended) == {b"Received", b"X-Mailmoat-Malware-Report"}
    rest = got.data[start_at + span.start :]
    assert rest.endswith(INFECTED[span.end :])
    notice = rest[: len(rest) - len(INFECTED) + span.end]
    assert notice.startswith(b"Content-Type: text/plain; charset=us-ascii\r\n")
    assert b'"eicar.com", which was removed: malware detected (Eicar-Test-Signature' in notice
    parsed = email.message_from_bytes(got.data, policy=email.policy.default)
    assert [p.get_content_type() for p in parsed.walk()] == ["multipart/mixed", "text/plain", "text/plain"]
    stripped = id_by_msgid("av-test@outside.test")
    assert "replaced part(s) 1.2" in wait_event(stripped, "MALWARE", service="routing")["detail"]


def test_dnsbl_reject_sends_ndr(gateway_factory, clamd, sink: SmtpSink, sender_sink, dns) -> None:
    gateway = start(gateway_factory, clamd, sender_sink, dns, filters="connection_filter",
                    services=("ingress", "connection_filter", "routing", "egress"))
    clean = message([], subject="listed client").replace(b"<av-test@", b"<dnsbl@")
    send(gateway.smtp_port, clean)
    (ndr,) = sender_sink.wait_for(1, timeout=60)
    assert ndr.mail_from == "" and ndr.rcpt_tos == ["sender@outside.test"]
    assert b"Status: 5.7.1" in ndr.data and b"client host [127.0.0.1] blocked using bl.test" in ndr.data
    assert sink.messages == []
