"""Every condition and every message-changing action over the MIME corpus (well-formed and malformed
messages): evaluation never fails, and a disclaimer leaves every attachment byte-identical."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailmoat_mail import mimeedit
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import parse_policy
from mailmoat_routing.rules import evaluate

CONDITIONS = [
    "sender_address: ['*@*']", "sender_domain: ['*']", "recipient_address: ['*']", "recipient_domain: ['*']",
    "sender_location: outside", "header_contains: {header: Subject, words: [test, the]}",
    "header_matches: {header: Content-Type, patterns: ['multipart|text']}", "subject_contains: [a, the]",
    "subject_matches: ['.']", "body_contains: [the, a]", "subject_or_body_contains: [the]",
    "attachment_name: ['*']", "attachment_extension: [txt, exe, pdf]", "attachment_type: [exe, zip, pdf]",
    "attachment_size_over: 0", "attachment_password_protected: true", "message_size_over: 10",
    "sender_ip: [192.0.2.0/24]", "scl_at_least: 0", "bcl_at_least: 0", "verdict: [spam, malware]",
    "inbound_connector: [p]",
]


def policy():
    rules = [f"  - {{name: c{i}, conditions: {{{c}}}, actions: {{set_header: {{X-C{i}: hit}}}}}}"
             for i, c in enumerate(CONDITIONS)]
    rules.append("  - {name: edit, actions: {remove_header: [X-C0], prepend_subject: '[ext] ', "
                 "append_disclaimer: {text: 'Vertraulich \u2013 confidential.'}}}")
    return parse_policy("accepted_domains: [{domain: example.com}]\nrules:\n" + "\n".join(rules) + "\n")


def corpus(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.eml"))


def test_every_rule_over_the_corpus(corpus_dir: Path) -> None:
    files = corpus(corpus_dir)
    if not files:
        pytest.skip(f"no corpus under {corpus_dir}")
    rules = policy()
    spam = Verdict(stage="antispam", result="spam", detail={"scl": 5, "bcl": 3})
    for path in files:
        data = re.sub(rb"\r?\n|\r", b"\r\n", path.read_bytes())
        envelope = Envelope(mail_from="s@sender.test", rcpt_to=["a@example.com"], client_ip="192.0.2.1",
                            verdicts={"antispam": spam})
        outcome = evaluate(envelope, data, rules, datetime(2026, 11, 29, tzinfo=UTC))
        assert outcome.hits and outcome.hits[-1].rule == "edit", path
        for span in mimeedit.attachments(data):
            assert data[span.start:span.end] in outcome.data, (path, span.path)
