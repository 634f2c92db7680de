"""Rule conditions a stage adds through the registry (``rule_conditions``): the engine asks the stage's
``matches(value, envelope)`` for them, as it asks the built-in conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.stages import RuleCondition
from mailmoat_policy import parse_policy
from mailmoat_routing.rules import RegistryError, evaluate
from mailmoat_routing.rules.message import Facts
from mailmoat_routing.rules.stage_conditions import check, stage_conditions, value_of
from tests.support.fakestages import with_stage

SEEN: list[tuple[Any, str]] = []


def _at_least(value: int, envelope: Envelope) -> bool:
    SEEN.append((value, envelope.id))
    verdict = envelope.verdicts.get("sample_filter")
    return verdict is not None and int(verdict.detail.get("count", 0)) >= value


CONDITIONS = {"sample_count_at_least": RuleCondition(int, _at_least)}
CLASHING = {"subject_contains": RuleCondition(list[str], lambda value, envelope: True)}
HERE = "tests.unit.test_rules_stage_conditions"


def facts(count: int) -> Facts:
    envelope = Envelope(id="Q9", mail_from="a@sender.org", rcpt_to=["alice@example.com"])
    envelope.add_verdict(Verdict(stage="sample_filter", result="found", detail={"count": count}))
    return Facts(envelope, b"Subject: x\r\n\r\nbody\r\n", None, list(envelope.rcpt_to), None)  # type: ignore[arg-type]


def test_a_stage_condition_is_asked_with_the_policys_value_and_the_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more=f'rule_conditions = "{HERE}:CONDITIONS"')
    assert "sample_count_at_least" in stage_conditions()
    spec = SimpleNamespace(sample_count_at_least=2, model_extra=None)
    SEEN.clear()
    assert check("sample_count_at_least", facts(3), spec)  # type: ignore[arg-type]
    assert not check("sample_count_at_least", facts(1), spec)  # type: ignore[arg-type]
    assert SEEN == [(2, "Q9"), (2, "Q9")]


def test_the_value_may_be_an_extra_key_of_the_rules_conditions() -> None:
    spec = SimpleNamespace(model_extra={"sample_count_at_least": 4})
    assert value_of(spec, "sample_count_at_least") == 4  # type: ignore[arg-type]


def test_a_condition_no_stage_adds_is_an_error() -> None:
    assert "sample_count_at_least" not in stage_conditions()
    with pytest.raises(RegistryError, match="no stage of the registry adds it"):
        check("sample_count_at_least", facts(1), SimpleNamespace(model_extra=None))  # type: ignore[arg-type]


def test_a_stage_may_not_redefine_a_built_in_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more=f'rule_conditions = "{HERE}:CLASHING"')
    with pytest.raises(RegistryError, match="defined twice"):
        stage_conditions()


def test_rules_of_a_policy_use_a_stage_condition_and_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more=f'rule_conditions = "{HERE}:CONDITIONS"')
    policy = parse_policy("""
rules:
  - name: many
    conditions: {sample_count_at_least: 3}
    exceptions: {sender_domain: [trusted.example]}
    actions: {set_header: {X-Many: "yes"}}
  - name: unless-lots
    conditions: {subject_contains: [report]}
    exceptions: {sample_count_at_least: 10}
    actions: {prepend_subject: "[few] "}
""")
    now = datetime(2026, 12, 5, tzinfo=UTC)

    def hits(count: int, sender: str = "a@sender.org") -> list[str]:
        envelope = Envelope(id="Q9", mail_from=sender, rcpt_to=["alice@example.com"])
        envelope.add_verdict(Verdict(stage="sample_filter", result="found", detail={"count": count}))
        return [hit.rule for hit in evaluate(envelope, b"Subject: report\r\n\r\nx\r\n", policy, now).hits]

    assert hits(3) == ["many", "unless-lots"]
    assert hits(2) == ["unless-lots"]
    assert hits(12) == ["many"]
    assert hits(12, "b@trusted.example") == []
