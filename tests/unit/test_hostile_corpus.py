"""The generated hostile corpus: well-formed as a test input, and walked without exceptions by every
MIME reader of the filter stages and routing (the end-to-end run is tests/e2e/test_corpus.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mailmoat_antispam.content import parse
from mailmoat_antivirus.decide import analyse, decide, report_header
from mailmoat_mail import mimeedit, mimeparts
from mailmoat_policy import Antimalware, Limits
from tests.support.hostile import cases, write

CASES = cases()


def test_cases_are_deterministic_named_once_and_within_the_limits() -> None:
    assert [c.data for c in cases()] == [c.data for c in CASES]
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"[a-z0-9-]+", n) for n in names)
    assert {c.expect for c in CASES} == {"deliver", "quarantine", "refuse"}
    for case in CASES:
        assert len(case.data) < 1_000_000 and case.data.endswith(b"\r\n"), case.name
        lines = case.data[:-2].split(b"\r\n")
        assert all(len(line) <= 998 for line in lines), case.name
        bare = any(b"\r" in line or b"\n" in line for line in lines)
        over = mimeparts.too_many(mimeparts.parse(case.data, Limits().max_mime_parts))
        # Ingress refuses bare CR/LF and more MIME entities than its limit, and only those.
        assert (bare or over) == (case.expect == "refuse"), case.name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_reader_walks_it(case) -> None:
    policy = Antimalware()
    findings, _ = analyse(case.data, policy)
    verdict = decide(findings, policy)
    json.dumps(verdict.model_dump(mode="json"))
    assert report_header(verdict).isascii()
    if case.expect == "deliver":
        assert verdict.result == "clean", (verdict.result, verdict.detail.get("findings"))
    parse(case.data)
    mimeedit.attachments(case.data)
    mimeedit.replace_parts(case.data, [s.path for s in mimeedit.attachments(case.data)], "test")


def test_written_out_as_eml_files(tmp_path: Path) -> None:
    paths = write(tmp_path / "hostile")
    assert len(paths) == len(CASES) and paths[0].read_bytes() == CASES[0].data


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_mail_flow_rule_facts_read_it(case) -> None:
    """Routing's rule conditions read subject, body and attachments of any message (8-bit parameters
    made ``attachments`` raise, as they did the antivirus stage)."""
    from mailmoat_platform.models import Envelope
    from mailmoat_policy import parse_policy
    from mailmoat_routing.rules.message import Facts

    envelope = Envelope(mail_from="s@example.org", rcpt_to=["r@example.com"], itinerary=["routing", "egress"])
    facts = Facts(envelope, case.data, parse_policy("{}"), ["r@example.com"], None)
    assert isinstance(facts.subject, str) and isinstance(facts.body, str)
    json.dumps([a.name for a in facts.attachments])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_routing_edits_take_it(case) -> None:
    """Disclaimers, header edits and the Subject prefix on any message (``charset=base64`` made the
    disclaimer raise: a codec Python has that is no charset)."""
    from mailmoat_routing.rules.edits import append_disclaimer, remove_header, set_header

    append_disclaimer(case.data, "Vertraulich \u00e4", None)
    remove_header(set_header(case.data, "X-Test", "v"), "X-Test")
    mimeedit.prepend_subject(case.data, "[SPAM] \u00e4")
