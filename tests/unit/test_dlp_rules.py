"""The DLP stage's rule condition ``sensitive_information`` (validation, matching on the verdict, through
the policy and the rules engine), its report header and its handler (verdict, trace, fault)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter, ValidationError

from mailmoat_dlp import service
from mailmoat_dlp.policy import Dlp
from mailmoat_dlp.rules import CONDITIONS, matches
from mailmoat_dlp.scan import result_of, scan
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_policy import ArchiveLimits, PolicyError, parse_policy
from mailmoat_routing.rules import evaluate

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
CARDS = (b"Subject: order\r\n\r\nCredit card 4111 1111 1111 1111 and 5555555555554444 (visa, mastercard).\r\n"
         b"ref 536-90-4399\r\n")
CONDITION = CONDITIONS["sensitive_information"]


def envelope_for(data: bytes, policy: Dlp | None = None) -> Envelope:
    detail = scan(data, policy or Dlp(), ArchiveLimits())
    envelope = Envelope(mail_from="a@example.com", rcpt_to=["b@outside.test"], itinerary=["dlp", "routing", "egress"])
    envelope.add_verdict(Verdict(stage="dlp", result=result_of(detail), detail=detail.as_detail()))
    return envelope


def condition(value: object):
    return TypeAdapter(CONDITION.value).validate_python(value)


def test_the_condition_value_is_validated() -> None:
    (one,) = condition({"type": "credit_card"})  # one entry without the list
    assert (one.type, one.min_count, one.min_confidence) == ("credit_card", 1, "medium")
    assert len(condition([{"type": "iban"}, {"type": "employee_id", "min_count": 3, "min_confidence": "low"}])) == 2
    for bad in ([], [{"type": "Credit Card"}], [{"type": "iban", "min_count": 0}],
                [{"type": "iban", "min_confidence": "certain"}], [{"type": "iban", "extra": 1}]):
        with pytest.raises(ValidationError):
            condition(bad)


def test_it_matches_on_count_and_confidence() -> None:
    envelope = envelope_for(CARDS)
    assert matches(condition({"type": "credit_card", "min_count": 2, "min_confidence": "high"}), envelope)
    assert not matches(condition({"type": "credit_card", "min_count": 3}), envelope)
    assert not matches(condition({"type": "us_ssn"}), envelope)  # low: formatted, no SSN keyword
    assert matches(condition({"type": "us_ssn", "min_confidence": "low"}), envelope)
    assert matches(condition([{"type": "iban"}, {"type": "credit_card"}]), envelope)  # any entry
    assert not matches(condition({"type": "iban"}), envelope)


def test_no_dlp_verdict_or_an_error_verdict_never_matches() -> None:
    bare = Envelope(mail_from="a@example.com", rcpt_to=["b@outside.test"])
    assert not matches(condition({"type": "credit_card", "min_confidence": "low"}), bare)
    bare.add_verdict(Verdict(stage="dlp", result="error", detail={"error": "X: y", "error_type": "X"}))
    assert not matches(condition({"type": "credit_card", "min_confidence": "low"}), bare)


def test_a_rule_with_the_condition_through_the_policy_and_the_rules_engine() -> None:
    policy = parse_policy("""
pipeline: {filters: [dlp]}
dlp: {types: [credit_card]}
rules:
  - name: cards-out
    conditions:
      sensitive_information: [{type: credit_card, min_count: 2}]
    exceptions:
      recipient_domain: [partner.test]
    actions:
      reject: {text: "Payment card numbers may not be sent by mail"}
""")
    assert policy.rules[0].conditions.names() == ["sensitive_information"]
    outcome = evaluate(envelope_for(CARDS, policy.dlp), CARDS, policy, NOW)
    assert outcome.final == "reject" and outcome.text == "Payment card numbers may not be sent by mail"
    one = b"Subject: x\r\n\r\ncredit card 4111 1111 1111 1111\r\n"
    assert evaluate(envelope_for(one, policy.dlp), one, policy, NOW).final is None


POLICY_TYPES = """
dlp:
  types: [credit_card, iban]
  custom_types: [{name: employee_id, pattern: 'EMP-[0-9]{6}'}]
rules:
  - name: fine
    conditions: {sensitive_information: [{type: credit_card}, {type: employee_id}]}
    exceptions: {sensitive_information: {type: iban}}
    actions: {quarantine: true}
"""


def _refused(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return str(info.value)


def test_a_rule_may_name_only_types_the_dlp_section_looks_for() -> None:
    assert len(parse_policy(POLICY_TYPES).rules) == 1
    off = _refused(POLICY_TYPES + "  - {name: ssn, conditions: {sensitive_information: {type: us_ssn}}, "
                   "actions: {delete: true}}\n")
    assert off == ("p.yaml: rules.1.conditions.sensitive_information.0.type: the built-in type 'us_ssn' is not in "
                   "dlp.types (credit_card, iban), so this could never match")
    unknown = _refused(POLICY_TYPES + "  - name: badge\n    conditions: {subject_contains: [x]}\n"
                       "    exceptions: {sensitive_information: [{type: iban}, {type: badge_no}]}\n"
                       "    actions: {delete: true}\n")
    assert unknown == ("p.yaml: rules.1.exceptions.sensitive_information.1.type: 'badge_no' is neither a built-in "
                       "type (credit_card, iban, us_ssn) nor a custom type of dlp.custom_types (employee_id), so "
                       "this could never match")


def test_without_a_dlp_section_rules_may_name_the_built_in_types_only() -> None:
    rule = "rules:\n  - {name: r, conditions: {sensitive_information: {type: %s}}, actions: {delete: true}}\n"
    assert parse_policy(rule % "us_ssn").rules[0].conditions.names() == ["sensitive_information"]
    assert "'employee_id' is neither a built-in type" in _refused(rule % "employee_id")
    assert "dlp.types (empty)" in _refused("dlp: {types: []}\n" + rule % "iban")
    Dlp().check_policy(parse_policy(rule % "iban"))  # the hook itself, on a loaded policy
    with pytest.raises(ValueError, match=r"^rules\.0\.conditions\.sensitive_information\.0\.type: the built-in type"):
        Dlp(types=["credit_card"]).check_policy(parse_policy(rule % "iban"))


def test_the_example_policy_has_the_dlp_stage_commented_out_ready_to_turn_on() -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "policy.example.yaml").read_text()
    assert "dlp" not in parse_policy(text).pipeline.filters
    lines = [line for line in text.splitlines() if not line.startswith("  filters: []")]
    start = lines.index("# dlp:")
    lines = [line.replace("# filters:", "filters:") for line in lines[:start]] + [
        line.removeprefix("# ") for line in lines[start:]]
    policy = parse_policy("\n".join(lines), "policy.example.yaml (dlp on)")
    assert policy.pipeline.filters == ["dlp"] and "employee_id" in policy.dlp.type_names()
    sender = {"mail_from": "alice@example.com", "client_ip": "192.0.2.10"}
    envelope = envelope_for(CARDS, policy.dlp).model_copy(update=sender)
    outcome = evaluate(envelope, CARDS, policy, NOW)
    assert [(hit.rule, hit.mode) for hit in outcome.hits] == [("no-card-numbers-out", "test")]


def test_the_report_header_names_types_and_counts_never_numbers() -> None:
    envelope = envelope_for(CARDS)
    detail = scan(CARDS, Dlp(), ArchiveLimits())
    header = service.report_header(result_of(detail), detail)
    assert header == b"X-Mailmoat-DLP: found; credit_card:2/high us_ssn:1/low; parts=1\r\n"
    assert envelope.verdicts["dlp"].detail["findings"][0]["evidence"][0]["last4"] in ("1111", "4444")
    many = Dlp(custom_types=[{"name": f"type_number_{i}", "pattern": "order"} for i in range(8)])
    folded = service.report_header("found", scan(CARDS, many, ArchiveLimits()))
    assert all(len(line) <= 78 for line in folded.split(b"\r\n")) and folded.count(b"\r\n ") >= 1


class _Trace:
    def __init__(self) -> None:
        self.events: list = []

    async def record(self, event, **_: object) -> None:
        self.events.append(event)


def runtime_with(policy_text: str = "pipeline: {filters: [dlp]}\n") -> Runtime:
    """A runtime that is never started: its policy and trace replaced, its ``finish`` the real one."""
    runtime = Runtime("dlp", Settings())
    runtime.policy = SimpleNamespace(current=parse_policy(policy_text))  # type: ignore[assignment]
    runtime.trace = _Trace()  # type: ignore[assignment]
    return runtime


def test_the_handler_adds_verdict_header_and_a_redacted_trace_event() -> None:
    runtime = runtime_with()
    envelope = Envelope(mail_from="a@example.com", rcpt_to=["b@outside.test"], itinerary=["dlp", "routing", "egress"])
    (published,) = asyncio.run(service.make_handler(runtime)(envelope, CARDS))
    assert published.envelope.verdicts["dlp"].result == "found"
    message = published.message
    assert message.startswith(b"X-Mailmoat-DLP: found; credit_card:2/high") and message.endswith(CARDS)
    assert published.envelope.size == len(message)
    (event,) = runtime.trace.events
    assert event.event == "AGENTINFO" and event.service == "dlp"
    dumped = event.model_dump_json()
    assert "4111111111111111" not in dumped and "4111 1111 1111 1111" not in dumped and "5555555555554444" not in dumped
    assert json.loads(dumped)["data"]["findings"][0]["type"] == "credit_card"


def test_a_fault_on_one_message_is_an_error_verdict_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object):
        raise RuntimeError("extractor blew up")

    monkeypatch.setattr(service, "scan", broken)
    runtime = runtime_with()
    envelope = Envelope(mail_from="a@example.com", rcpt_to=["b@outside.test"], itinerary=["dlp", "routing", "egress"])
    (published,) = asyncio.run(service.make_handler(runtime)(envelope, CARDS))
    verdict = published.envelope.verdicts["dlp"]
    assert verdict.result == "error" and verdict.detail["error_type"] == "RuntimeError"
    assert published.message.startswith(b"X-Mailmoat-DLP: error; none; parts=0; err=RuntimeError\r\n")
    (event,) = runtime.trace.events
    assert event.event == "ERROR"


def test_a_stuck_scan_is_an_error_verdict_and_a_full_pool_does_not_hold_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def stuck(*_: object, **__: object):
        release.wait(10)  # a library that never checks the budget (bounded so the test ends)
        raise RuntimeError("released")

    monkeypatch.setattr(service, "scan", stuck)
    monkeypatch.setattr(service, "GRACE", 0.2)
    monkeypatch.setattr(service, "START_WAIT", 0.3)
    runtime = runtime_with("pipeline: {filters: [dlp]}\ndlp: {limits: {max_seconds: 0.1}}\n")
    scanner = service.Scanner(threads=1)
    handle = service.make_handler(runtime, scanner)

    async def two() -> list:
        first = Envelope(mail_from="a@example.com", rcpt_to=["b@x.test"], itinerary=["dlp", "routing", "egress"])
        second = first.model_copy(deep=True)
        started = time.monotonic()
        out = [await handle(first, CARDS), await handle(second, CARDS)]
        assert time.monotonic() - started < 3
        return out

    try:
        (one,), (other,) = asyncio.run(two())
    finally:
        release.set()
        scanner.pool.shutdown(wait=True)
    for published, why in ((one, "after the scan began"), (other, "no scan thread free")):
        verdict = published.envelope.verdicts["dlp"]
        assert verdict.result == "error" and verdict.detail["error_type"] == "ScanTimeout"
        assert why in verdict.detail["error_message"]
