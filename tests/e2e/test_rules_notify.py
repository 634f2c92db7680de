"""A mail-flow rule with notify_sender through the running gateway: the message reaches its recipient
and the sender gets the notice from the postmaster, delivered by egress like a non-delivery report."""

from __future__ import annotations

import email
import email.policy

import pytest

from tests.e2e.conftest import POLICY
from tests.e2e.test_mail_flow import queue_id, send, strip_received, wait_for_event
from tests.e2e.test_rules import rule_events
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

NOTIFY = POLICY + """
rules:
  - name: confidential-outside
    conditions:
      subject_contains: [confidential]
    actions:
      notify_sender:
        text: Confidential mail is tagged and archived; use the secure portal next time.
      set_header:
        X-Confidential: tagged
"""


def test_the_message_goes_on_and_the_sender_is_notified(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(NOTIFY)
    data = (b"From: Sender <sender@example.com>\r\nTo: alice@example.com\r\nSubject: confidential plans\r\n"
            b"Message-ID: <n1@example.com>\r\n\r\nThe plans.\r\n")
    code, reply = send(gateway.smtp_port, "sender@example.com", ["alice@example.com"], data)
    assert code == 250, reply
    qid = queue_id(reply)
    got = {tuple(m.rcpt_tos): m for m in sink.wait_for(2, timeout=30)}
    assert set(got) == {("alice@example.com",), ("sender@example.com",)}
    original = got[("alice@example.com",)]
    assert original.mail_from == "sender@example.com"
    assert original.data.startswith(b"X-Confidential: tagged\r\n")
    _, rest = strip_received(original.data[len(b"X-Confidential: tagged\r\n"):])
    assert rest == data
    notice = got[("sender@example.com",)]
    assert notice.mail_from == ""
    parsed = email.message_from_bytes(notice.data, policy=email.policy.default)
    assert parsed["From"] == "Postmaster <postmaster@example.com>"
    assert parsed["Subject"] == 'Your message matched the rule "confidential-outside"'
    assert parsed["In-Reply-To"] == "<n1@example.com>"
    body = parsed.get_body(("plain",)).get_content()
    assert "use the secure portal next time" in body and "confidential plans" in body
    assert b"The plans." not in notice.data
    # traced: the rule's event names the notice, which has its own trace up to egress's delivery
    (hit,) = rule_events(qid)
    sent = hit["data"]["notify_sender"]
    assert sent["to"] == "sender@example.com" and sent["notice_id"] == f"{qid}S0"
    assert "DELIVER" in wait_for_event(f"{qid}S0", "DELIVER")
    assert wait_for_event(qid, "DELIVER").count("DELIVER") == 1
