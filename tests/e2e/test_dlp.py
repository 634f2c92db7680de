"""The DLP stage in the running gateway: mail-flow rules with ``sensitive_information`` reject with an NDR
that explains, quarantine on card numbers in PDF and DOCX attachments, match in test mode (delivered,
traced), notify the sender and route over a connector that requires TLS; the trace and the report header
never hold a number."""

from __future__ import annotations

import email
import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import POLICY
from tests.e2e.test_connectors import ca, certs, partner_sinks, tls_env  # noqa: F401  (fixtures)
from tests.e2e.test_mail_flow import queue_id, send, strip_received, wait_for_event
from tests.e2e.test_rules import rule_events
from tests.support import records
from tests.support.attachments import message
from tests.support.gateway import Gateway
from tests.support.sink import SmtpSink
from tests.unit.test_dlp_extract import docx_with_text, pdf_with_text

pytestmark = pytest.mark.e2e

SERVICES = ("ingress", "dlp", "routing", "egress")
VISA, MASTERCARD, IBAN_GB = "4111 1111 1111 1111", "5555-5555-5555-4444", "GB82 WEST 1234 5698 7654 32"
SECRETS = ("4111111111111111", VISA, "5555555555554444", MASTERCARD, "GB82WEST12345698765432", IBAN_GB)

DLP = POLICY + """
pipeline:
  filters: [dlp]
dlp:
  types: [credit_card, iban]
rules:
{rules}
"""

REJECT = """
  - name: no-cards-by-mail
    conditions:
      sensitive_information: [{{type: credit_card, min_confidence: high}}]
    actions:
      reject:
        code: 5.7.910
        text: Payment card numbers may not be sent by mail
"""

QUARANTINE = """
  - name: cards-in-attachments
    conditions:
      sensitive_information: {{type: credit_card, min_count: 2}}
    actions:
      quarantine: true
"""

TEST_MODE = """
  - name: cards-trial
    mode: test
    conditions:
      sensitive_information: [{{type: credit_card}}]
    actions:
      reject:
        text: would refuse
"""

NOTIFY = """
  - name: iban-notice
    conditions:
      sensitive_information: [{{type: iban, min_confidence: high}}]
    actions:
      notify_sender:
        text: Bank account numbers should go through the payments portal.
"""


CONNECTOR = """
  - name: ibans-over-tls
    conditions:
      sensitive_information: [{{type: iban}}]
    actions:
      route_to_connector: finance-partner
      require_tls: true
connectors:
  outbound:
    - name: finance-partner
      rule_only: true
      smart_hosts: ["127.0.0.1:{good}"]
      tls: opportunistic
      tls_name: mx.partner.example
    - name: finance-plain
      rule_only: true
      smart_hosts: ["127.0.0.1:{plain}"]
      tls: opportunistic
"""


def policy_with(rules: str, **ports: str) -> str:
    """``DLP`` with ``rules``, the conftest's placeholders (and ``ports``' names) left for the factory."""
    return DLP.format(rules=rules, sink_port="{sink_port}", max_size="{max_size}", **{k: f"{{{k}}}" for k in ports})


def accepted(gateway: Gateway, sender: str, data: bytes) -> str:
    """Send ``data`` to alice@example.com; the queue id of the accepted message."""
    code, reply = send(gateway.smtp_port, sender, ["alice@example.com"], data)
    assert code == 250, reply
    return queue_id(reply)


ENDINGS = ("DELIVER", "QUARANTINE", "REJECT", "DSN", "FAIL", "DELETE", "DEADLETTER")


def trace_dump(message_id: str) -> str:
    """The message's whole trace as JSON lines, once it has ended (the recorder writes a moment later)."""
    events = records.wait_until(lambda: records.events(message_id),
                                lambda evs: any(e["event"] in ENDINGS for e in evs), f"the end of {message_id}")
    return "\n".join(json.dumps(e) for e in events)


def dlp_event(message_id: str) -> dict:
    """The DLP stage's event of a message (the recorder may write routing's later events first: the
    stages publish their trace on their own)."""
    events = records.wait_until(lambda: records.events(message_id),
                                lambda evs: any(e["service"] == "dlp" for e in evs), f"the DLP event of {message_id}")
    (event,) = [e for e in events if e["service"] == "dlp"]
    return event


def assert_no_numbers(text: str | bytes) -> None:
    blob = text.decode("latin-1") if isinstance(text, bytes) else text
    for secret in SECRETS:
        assert secret not in blob, f"{secret!r} leaked"


def test_a_card_number_in_the_body_is_rejected_with_an_ndr_that_explains(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(policy_with(REJECT), services=SERVICES)
    data = (b"From: Sender <sender@example.com>\r\nTo: alice@example.com\r\nSubject: my order\r\n"
            b"Message-ID: <dlp1@example.com>\r\n\r\nHere is my credit card: " + VISA.encode() + b", exp 10/29.\r\n")
    qid = accepted(gateway, "sender@example.com", data)
    (ndr,) = sink.wait_for(1, timeout=30)
    assert ndr.mail_from == "" and ndr.rcpt_tos == ["sender@example.com"]
    report = email.message_from_bytes(ndr.data)
    status = report.get_payload()[1].as_string()
    assert "5.7.910" in status and "Payment card numbers may not be sent by mail" in status
    assert_no_numbers(ndr.data)
    events = wait_for_event(qid, "DSN")
    assert "DELIVER" not in events
    (hit,) = rule_events(qid)
    assert hit["data"]["rule"] == "no-cards-by-mail" and hit["data"]["mode"] == "enforce"
    event = dlp_event(qid)
    assert event["event"] == "AGENTINFO" and event["data"]["result"] == "found"
    (finding,) = event["data"]["findings"]
    assert (finding["type"], finding["count"], finding["confidence"]) == ("credit_card", 1, "high")
    assert finding["evidence"] == [{"confidence": "high", "part": "1", "last4": "1111", "label": "visa"}]
    assert_no_numbers(trace_dump(qid))
    time.sleep(1.0)
    assert len(sink.messages) == 1  # the message itself was never delivered


def test_cards_in_pdf_and_docx_attachments_quarantine_the_message(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(policy_with(QUARANTINE), services=SERVICES)
    data = message([
        ("statement.pdf", "application/pdf", pdf_with_text(["Statement", f"Card {VISA}"]), "base64"),
        ("form.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         docx_with_text([["Mastercard number: "], [MASTERCARD[:9], MASTERCARD[9:]]]), "base64"),
    ], subject="documents")
    qid = accepted(gateway, "sender@outside.test", data)
    events = wait_for_event(qid, "QUARANTINE")
    assert "DELIVER" not in events
    (hit,) = rule_events(qid)
    assert hit["data"]["rule"] == "cards-in-attachments"
    (finding,) = dlp_event(qid)["data"]["findings"]
    assert finding["count"] == 2
    assert sorted(e["part"] for e in finding["evidence"]) == ["1.2 statement.pdf", "1.3 form.docx"]
    assert_no_numbers(trace_dump(qid))
    time.sleep(1.0)
    assert sink.messages == []


def test_a_rule_in_test_mode_delivers_and_traces_the_match(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(policy_with(TEST_MODE), services=SERVICES)
    data = (b"From: s@sender.org\r\nTo: alice@example.com\r\nSubject: payment\r\nMessage-ID: <dlp3@sender.org>\r\n"
            b"\r\nPay with 4111-1111-1111-1111 please.\r\n")
    qid = accepted(gateway, "s@sender.org", data)
    (got,) = sink.wait_for(1, timeout=30)
    header = b"X-Mailmoat-DLP: found; credit_card:1/medium; parts=1\r\n"
    assert got.data.startswith(header)
    _, original = strip_received(got.data[len(header):])
    assert original == data
    wait_for_event(qid, "DELIVER")
    (hit,) = rule_events(qid)
    assert hit["data"]["rule"] == "cards-trial" and hit["data"]["mode"] == "test"
    assert "would take reject" in hit["detail"]
    assert_no_numbers(trace_dump(qid))


def test_an_iban_notifies_the_sender_and_the_message_goes_on(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(policy_with(NOTIFY), services=SERVICES)
    data = (b"From: Sender <sender@example.com>\r\nTo: alice@example.com\r\nSubject: refund\r\n"
            b"Message-ID: <dlp4@example.com>\r\n\r\nPlease refund to IBAN " + IBAN_GB.encode() + b".\r\n")
    qid = accepted(gateway, "sender@example.com", data)
    got = {tuple(m.rcpt_tos): m for m in sink.wait_for(2, timeout=30)}
    assert set(got) == {("alice@example.com",), ("sender@example.com",)}
    notice = got[("sender@example.com",)]
    assert b"payments portal" in notice.data and b"iban-notice" in notice.data
    assert_no_numbers(notice.data)
    (hit,) = rule_events(qid)
    assert hit["data"]["rule"] == "iban-notice"
    assert dlp_event(qid)["data"]["findings"][0]["evidence"][0]["label"] == "GB"
    assert_no_numbers(trace_dump(qid))


def test_an_iban_goes_over_a_connector_that_requires_tls(
        gateway_factory, sink: SmtpSink, partner_sinks, certs) -> None:  # noqa: F811
    ports = {name: s.port for name, s in partner_sinks.items()}
    gateway = gateway_factory(policy_with(CONNECTOR, good="", plain=""), env=tls_env(certs), services=SERVICES,
                              **ports)
    iban = (b"From: a@example.com\r\nTo: alice@example.com\r\nSubject: invoice\r\nMessage-ID: <dlp5@example.com>\r\n"
            b"\r\nOur account: " + IBAN_GB.encode() + b"\r\n")
    plain = iban.replace(b"dlp5", b"dlp6").replace(IBAN_GB.encode(), b"on file")
    qid = accepted(gateway, "a@example.com", iban)
    accepted(gateway, "a@example.com", plain)
    (got,) = partner_sinks["good"].wait_for(1, timeout=30)
    assert got.tls and b"<dlp5@example.com>" in got.data  # over TLS to the partner, not the usual route
    (usual,) = sink.wait_for(1, timeout=30)
    assert b"<dlp6@example.com>" in usual.data and b"X-Mailmoat-DLP: none;" in usual.data
    assert partner_sinks["plain"].messages == []
    wait_for_event(qid, "DELIVER")
    events = [json.loads(line) for line in trace_dump(qid).splitlines()]
    (route,) = [e for e in events if e["event"] == "ROUTE"]
    assert route["detail"] == "connector:finance-partner+tls"
    assert_no_numbers(trace_dump(qid))


def test_run_all_starts_the_dlp_stage_the_policy_lists(tmp_path: Path, amqp_url: str, redis_url: str,
                                                      sink: SmtpSink) -> None:
    text = textwrap.dedent(policy_with(TEST_MODE))
    gateway = Gateway(tmp_path / "gw", amqp_url, redis_url,
                      policy_text=text.format(sink_port=sink.port, max_size=1_000_000))
    with gateway:
        gateway.start_all()
        assert ("dlp", 0) in gateway._supervised and gateway.ready("dlp")
        data = b"From: s@sender.org\r\nTo: alice@example.com\r\nSubject: x\r\n\r\ncredit card 4111 1111 1111 1111\r\n"
        qid = accepted(gateway, "s@sender.org", data)
        (got,) = sink.wait_for(1, timeout=30)
        assert got.data.startswith(b"X-Mailmoat-DLP: found; credit_card:1/high; parts=1\r\n")
        (hit,) = rule_events(qid)
        assert hit["data"]["rule"] == "cards-trial" and hit["data"]["mode"] == "test"
