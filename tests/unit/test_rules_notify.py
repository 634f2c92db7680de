"""The notice a ``notify_sender`` rule sends: from the postmaster of the primary domain to the envelope
sender, naming the rule and giving its text, a report routing delivers like a non-delivery report."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import parse_policy
from mailmoat_routing.rules import evaluate
from mailmoat_routing.rules.notify import Notice, build, notice_id, postmaster, trace_event, why_not

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
POLICY = parse_policy("""
organization: {name: Example Corp, hostname: gw.example.com}
accepted_domains: [{domain: example.com}, {domain: example.org}]
""")
DATA = (b"From: a@sender.org\r\nTo: alice@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= Q4\r\n"
        b"Message-ID: <m1@sender.org>\r\n\r\nCard 4111 1111 1111 1111\r\n")


def envelope(**changes: object) -> Envelope:
    base = {"id": "Q1", "mail_from": "a@sender.org", "rcpt_to": ["alice@example.com", "bob@example.com"],
            "message_id_header": "<m1@sender.org>"}
    return Envelope(**{**base, **changes})


def test_the_notice_names_the_rule_and_gives_its_text() -> None:
    env = envelope()
    notice = build(env, DATA, Notice(notice_id(env, 0), "card-numbers", "Card numbers must not be mailed."),
                   POLICY, NOW)
    sent = notice.envelope
    assert sent.id == "Q1S0" and sent.parent_id == "Q1" and sent.kind == "dsn"
    assert sent.mail_from == "" and sent.rcpt_to == ["a@sender.org"] and sent.direction == "outbound"
    assert sent.itinerary == ["routing", "egress"] and sent.size == len(notice.data)
    assert sent.message_id_header == "<Q1S0@gw.example.com>"
    assert b"\r\n" in notice.data and b"\n" not in notice.data.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(notice.data, policy=email.policy.default)
    assert parsed["From"] == "Postmaster <postmaster@example.com>"
    assert parsed["To"] == "a@sender.org"
    assert parsed["Subject"] == 'Your message matched the rule "card-numbers"'
    assert parsed["Auto-Submitted"] == "auto-replied" and parsed["In-Reply-To"] == "<m1@sender.org>"
    body = parsed.get_content()
    assert "Card numbers must not be mailed." in body and '"card-numbers"' in body and "Example Corp" in body
    assert "Grüße Q4" in body and "alice@example.com, bob@example.com" in body
    assert b"4111" not in notice.data  # the message's content never goes back
    assert notice.data.isascii() is False and sent.body_type == "8BITMIME"


def test_a_rule_name_with_line_breaks_stays_one_line_and_ascii_only_is_7bit() -> None:
    env = envelope(message_id_header=None)
    notice = build(env, b"Subject: hi\r\n\r\nx\r\n", Notice("Q1S1", "bad\r\nBcc: x@evil.test", "Stop."), POLICY, NOW)
    parsed = email.message_from_bytes(notice.data, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["In-Reply-To"] is None
    assert parsed["Subject"] == 'Your message matched the rule "bad Bcc: x@evil.test"'
    assert notice.data.isascii() and notice.envelope.body_type is None


def test_an_internationalised_sender_gets_an_smtputf8_notice() -> None:
    env = envelope(mail_from="jürgen@exämple.de")
    notice = build(env, DATA, Notice("Q1S0", "r", "t"), POLICY, NOW)
    assert notice.envelope.smtputf8 and notice.envelope.rcpt_to == ["jürgen@exämple.de"]
    assert "To: <jürgen@exämple.de>" in notice.data.decode() or "jürgen@exämple.de" in notice.data.decode()


def test_who_gets_no_notice() -> None:
    assert why_not(envelope()) is None
    assert why_not(envelope(mail_from="")) == "null sender"
    assert why_not(envelope(kind="dsn")) is not None
    forged = envelope()
    forged.add_verdict(Verdict(stage="antispam", result="spoof", detail={"forged": True}))
    assert why_not(forged) is not None


def test_postmaster_without_accepted_domains_is_at_the_gateways_name() -> None:
    assert postmaster(POLICY) == "postmaster@example.com"
    assert postmaster(parse_policy("organization: {hostname: gw.example.net}\n")) == "postmaster@gw.example.net"


def test_the_notice_is_traced_under_its_own_id() -> None:
    env = envelope()
    event = trace_event(build(env, DATA, Notice("Q1S0", "card-numbers", "t"), POLICY, NOW))
    assert event.event == "RULE" and event.message_id == "Q1S0" and event.recipients == ["a@sender.org"]
    assert event.data == {"parent_id": "Q1", "rule": "card-numbers", "action": "notify_sender"}


def rules_policy(rules: str):
    return parse_policy("organization: {hostname: gw.example.com}\naccepted_domains: [{domain: example.com}]\n"
                        "rules:\n" + rules)


NOTIFY = """
  - name: card-numbers
    conditions: {body_contains: [card]}
    actions:
      notify_sender: {text: Card numbers must not be mailed.}
      set_header: {X-Card: "yes"}
"""


def test_an_enforced_rule_notifies_the_sender_and_the_message_goes_on() -> None:
    policy = rules_policy(NOTIFY)
    outcome = evaluate(envelope(), DATA, policy, NOW)
    assert outcome.final is None and outcome.data.startswith(b"X-Card: yes\r\n")
    (notice,) = outcome.notices
    assert notice.rule == "card-numbers" and notice.envelope.id == "Q1S0"
    assert notice.envelope.rcpt_to == ["a@sender.org"]
    assert b"X-Card" not in notice.data
    (hit,) = outcome.hits
    assert hit.detail["notify_sender"] == {"text": "Card numbers must not be mailed.", "notice_id": "Q1S0",
                                           "to": "a@sender.org"}


def test_two_rules_two_notices_with_their_own_ids_and_a_reject_still_notifies() -> None:
    policy = rules_policy(NOTIFY + """
  - name: refuse
    conditions: {body_contains: [card]}
    actions:
      notify_sender: {text: Refused as well.}
      reject: {text: No cards}
""")
    outcome = evaluate(envelope(), DATA, policy, NOW)
    assert outcome.final == "reject"
    assert [(n.rule, n.envelope.id) for n in outcome.notices] == [("card-numbers", "Q1S0"), ("refuse", "Q1S1")]


def test_no_notice_in_test_mode_or_to_the_null_sender() -> None:
    test_mode = rules_policy(NOTIFY.replace("    conditions:", "    mode: test\n    conditions:"))
    outcome = evaluate(envelope(), DATA, test_mode, NOW)
    assert outcome.notices == [] and outcome.hits[0].mode == "test"
    outcome = evaluate(envelope(mail_from=""), DATA, rules_policy(NOTIFY), NOW)
    assert outcome.notices == []
    assert outcome.hits[0].detail["notify_sender"] == {"text": "Card numbers must not be mailed.",
                                                       "not_sent": "null sender"}
