"""Mail-flow rules through the whole pipeline: a rule rejecting by attachment type sends an NDR to the
sender; a rule in test mode changes nothing but is traced; an enforced rule's changes reach the sink."""

from __future__ import annotations

import base64
import email
import time

import pytest

from tests.e2e.conftest import POLICY
from tests.e2e.test_mail_flow import queue_id, send, strip_received, wait_for_event
from tests.support import records
from tests.support.attachments import message, mz_executable
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

RULES = POLICY + """
rules:
  - name: no-executables
    priority: 10
    conditions:
      attachment_type: [exe]
    actions:
      reject:
        code: 5.7.901
        text: Executable attachments are not accepted here
  - name: trial-footer
    priority: 20
    mode: test
    conditions:
      subject_contains: [trial]
    actions:
      append_disclaimer:
        text: Confidential.
      set_header:
        X-Trial: "yes"
      redirect_to: [audit@example.com]
      reject:
        text: would refuse
  - name: tag-and-copy
    priority: 30
    conditions:
      subject_contains: [enforced]
    actions:
      set_header:
        X-Tagged: by-rule
      add_recipients: [audit@example.com]
      append_disclaimer:
        text: Sent through the gateway.
"""


def rule_events(message_id: str) -> list[dict]:
    """The RULE events of a message, once one is traced (the recorder writes a moment after delivery)."""
    records.wait_event(message_id, "RULE")
    return [e for e in records.events(message_id) if e["event"] == "RULE"]


def test_a_rule_rejects_an_executable_by_type_with_an_ndr_to_the_sender(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(RULES)
    data = message([("invoice.pdf", "application/pdf", mz_executable(), "base64")], subject="invoice")
    code, reply = send(gateway.smtp_port, "sender@example.com", ["alice@example.com"], data)
    assert code == 250, reply
    qid = queue_id(reply)
    (ndr,) = sink.wait_for(1, timeout=30)
    assert ndr.mail_from == "" and ndr.rcpt_tos == ["sender@example.com"]
    report = email.message_from_bytes(ndr.data)
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1].as_string()
    assert "5.7.901" in status and "Executable attachments are not accepted here" in status
    # only the headers go back, never the attachment (neither encoded nor decoded)
    assert base64.b64encode(mz_executable())[:40] not in ndr.data
    assert mz_executable()[:64] not in ndr.data
    events = wait_for_event(qid, "DSN")
    assert "FAIL" in events and "DELIVER" not in events and "ROUTE" not in events
    (hit,) = rule_events(qid)
    assert hit["data"]["rule"] == "no-executables" and hit["data"]["mode"] == "enforce"
    time.sleep(1.0)
    assert len(sink.messages) == 1  # the message itself was never delivered


def test_a_rule_in_test_mode_changes_nothing_but_is_traced(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(RULES)
    data = (b"From: s@sender.org\r\nTo: alice@example.com\r\nSubject: trial run\r\nMessage-ID: <t1@sender.org>\r\n"
            b"\r\nBody line one\r\n\xc3\xbc 8-bit\r\n")
    code, reply = send(gateway.smtp_port, "s@sender.org", ["alice@example.com"], data)
    assert code == 250, reply
    qid = queue_id(reply)
    (got,) = sink.wait_for(1, timeout=30)
    assert got.rcpt_tos == ["alice@example.com"]
    _, original = strip_received(got.data)
    assert original == data
    wait_for_event(qid, "DELIVER")
    (hit,) = rule_events(qid)
    assert hit["data"]["rule"] == "trial-footer" and hit["data"]["mode"] == "test"
    assert hit["data"]["actions"] == ["reject", "redirect_to", "set_header", "append_disclaimer"]
    assert "trial-footer" in hit["detail"] and "would take" in hit["detail"]


def test_an_enforced_rule_changes_only_what_it_touches(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(RULES)
    data = (b"From: s@sender.org\r\nTo: alice@example.com\r\nSubject: enforced\r\nMessage-ID: <t2@sender.org>\r\n"
            b"\r\nBody line one\r\n")
    code, reply = send(gateway.smtp_port, "s@sender.org", ["alice@example.com"], data)
    assert code == 250, reply
    qid = queue_id(reply)
    (got,) = sink.wait_for(1, timeout=30)
    assert got.rcpt_tos == ["alice@example.com", "audit@example.com"]  # one route, one copy
    tag = b"X-Tagged: by-rule\r\n"  # a new field goes on top
    assert got.data.startswith(tag)
    _, rest = strip_received(got.data[len(tag):])
    assert rest == data + b"\r\nSent through the gateway.\r\n"
    wait_for_event(qid, "DELIVER")
    (hit,) = rule_events(qid)
    assert hit["data"]["rule"] == "tag-and-copy" and hit["data"]["add_recipients"] == {"added": ["audit@example.com"]}
