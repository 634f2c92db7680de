"""What the policy takes from the stage registry: the filter stages ``pipeline.filters`` may name, the
quarantine's default release rights, the sections of filter stages (fields, or models in the stage's own
package), and the mail-flow rule conditions stages add. Extra stages come from ``tests.support.fakestages``."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from mailmoat_platform import stages
from mailmoat_platform.stages import RegistryError, RuleCondition
from mailmoat_policy import Policy, PolicyError, parse_policy
from tests.support.fakestages import with_stage

HERE = "tests.unit.test_policy_registry"


class SampleSection(BaseModel):
    """The section model of a stage the policy package does not know."""

    model_config = ConfigDict(extra="forbid")
    level: Literal["low", "high"] = "low"
    words: list[str] = Field(default_factory=list)


Threshold = Annotated[int, Field(ge=1, le=10)]
CONDITIONS = {
    "sample_at_least": RuleCondition(value=Threshold, matches=lambda value, envelope: True),
    "sample_kinds": RuleCondition(value=list[Literal["a", "b"]], matches=lambda value, envelope: True),
}
CLASHING = {"subject_contains": RuleCondition(value=list[str], matches=lambda value, envelope: True)}


def _sample_stage(monkeypatch: pytest.MonkeyPatch, more: str = "") -> None:
    with_stage(monkeypatch, more=f'policy_model = "{HERE}:SampleSection"\n{more}')


def _error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return str(info.value)


# --- sections -------------------------------------------------------------------------------------

def test_the_existing_stage_sections_are_fields_of_the_registrys_models() -> None:
    fields = Policy.model_fields
    built_in = [s for s in stages.filters() if s.policy_section in fields]
    assert {s.policy_section for s in built_in} >= {"connection_filter", "antimalware", "antispam"}
    for spec in built_in:
        assert fields[spec.policy_section].annotation is spec.policy_class(), spec.name


def test_every_filter_stage_has_a_section_with_defaults() -> None:
    policy = Policy()
    for spec in stages.filters():
        section = getattr(policy, spec.policy_section)
        assert isinstance(section, spec.policy_class())
        assert section.model_dump() == spec.policy_class()().model_dump()


def test_a_stage_section_outside_the_package_is_validated_and_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    _sample_stage(monkeypatch)
    policy = parse_policy("sample_filter:\n  level: high\n  words: [x]\n")
    assert policy.sample_filter == SampleSection(level="high", words=["x"])
    assert policy.stage_section("sample_filter") is policy.sample_filter
    assert Policy().sample_filter == SampleSection()  # absent: the model's defaults


def test_errors_in_a_stage_section_name_its_path_with_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    _sample_stage(monkeypatch)
    message = _error("sample_filter:\n  level: medium\n  colour: red\nlimits:\n  max_recipients: 0\n")
    lines = message.splitlines()
    assert lines[0].startswith("p.yaml: limits.max_recipients: ")
    assert any(line.startswith("p.yaml: sample_filter.level: ") for line in lines)
    assert "p.yaml: sample_filter.colour: Extra inputs are not permitted" in lines


def test_an_unknown_top_level_key_is_still_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "p.yaml: sample_filter: Extra inputs are not permitted" in _error("sample_filter: {}\n")
    _sample_stage(monkeypatch)
    assert "p.yaml: nosuch: Extra inputs are not permitted" in _error("sample_filter: {}\nnosuch: 1\n")
    with pytest.raises(AttributeError):
        _ = Policy().nosuch


def test_a_stage_model_that_cannot_be_loaded_is_an_error_of_its_section(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more='policy_model = "mailmoat_nosuchstage.policy:Section"')
    message = _error("sample_filter: {}\n")
    assert message.startswith("p.yaml: sample_filter: the model of stage sample_filter")
    assert "cannot be loaded" in message


def test_a_section_is_not_imported_before_a_policy_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more='policy_model = "mailmoat_nosuchstage.policy:Section"')
    assert Policy().pipeline.filters == []  # the section is absent: nothing to import


class CheckedSection(SampleSection):
    """A section that checks the whole policy: ``level: high`` wants every rule named ``audit-*``."""

    def check_policy(self, policy: Policy) -> None:
        SEEN.append(self)
        if self.level == "high":
            for index, rule in enumerate(policy.rules):
                if not rule.name.startswith("audit-"):
                    raise ValueError(f"rules.{index}.name: {rule.name!r} is not an audit rule (sample_filter.level)")
        if "nowhere" in self.words:
            raise ValueError("the words name no place")


SEEN: list[SampleSection] = []
RULE = "rules:\n  - {name: %s, actions: {delete: true}}\n"


def test_a_section_checks_the_whole_policy_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more=f'policy_model = "{HERE}:CheckedSection"')
    SEEN.clear()
    Policy()
    assert SEEN == [CheckedSection()]  # absent: its defaults are asked
    assert parse_policy("sample_filter: {level: high}\n" + RULE % "audit-1").sample_filter.level == "high"
    message = _error("sample_filter: {level: high}\n" + RULE % "other")
    assert message == "p.yaml: rules.0.name: 'other' is not an audit rule (sample_filter.level)"
    assert _error("sample_filter: {words: [nowhere]}\n") == "p.yaml: (top level): the words name no place"
    SEEN.clear()
    message = _error("sample_filter: {level: high, colour: red}\n" + RULE % "other")
    assert SEEN == [] and "colour" in message  # a section that does not validate is not asked


def test_sections_without_a_check_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    _sample_stage(monkeypatch)
    assert parse_policy("sample_filter: {level: high}\n" + RULE % "other").rules[0].name == "other"


# --- pipeline and quarantine ----------------------------------------------------------------------

def test_pipeline_filters_are_the_registrys_filter_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    names = list(stages.filter_names())
    assert parse_policy(f"pipeline:\n  filters: [{', '.join(names)}]\n").pipeline.filters == names
    message = _error("pipeline:\n  filters: [sample_filter]\n")
    assert f"unknown filter stage 'sample_filter' (known: {', '.join(names)})" in message
    with_stage(monkeypatch)
    assert parse_policy("pipeline:\n  filters: [sample_filter]\n").pipeline.itinerary() == [
        "sample_filter", "routing", "egress"]


def test_pipeline_filters_refuse_a_stage_that_is_not_a_filter() -> None:
    assert "unknown filter stage 'routing'" in _error("pipeline:\n  filters: [routing]\n")
    assert "listed twice" in _error(f"pipeline:\n  filters: [{stages.filter_names()[0]}, {stages.filter_names()[0]}]\n")


def test_quarantine_release_by_defaults_to_the_registrys_release_rights(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {reason: "admin" for spec in stages.stages() for reason in spec.release_by}
    assert {"malware", "hcphish"} <= set(expected)
    assert Policy().quarantine.release_by == expected
    with_stage(monkeypatch, more='release_by = ["leak"]')
    assert Policy().quarantine.release_by == {**expected, "leak": "admin"}
    assert parse_policy("quarantine:\n  release_by: {rule: admin}\n").quarantine.release_by == {"rule": "admin"}


# --- rule conditions stages add -------------------------------------------------------------------

def _rules(conditions: str, exceptions: str = "{}") -> str:
    return (f"rules:\n  - name: r\n    conditions: {conditions}\n    exceptions: {exceptions}\n"
            "    actions: {delete: true}\n")


def test_stage_conditions_are_accepted_validated_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more=f'rule_conditions = "{HERE}:CONDITIONS"')
    policy = parse_policy(_rules("{sample_at_least: '3', subject_contains: [x]}", "{sample_kinds: [b]}"))
    conditions, exceptions = policy.rules[0].conditions, policy.rules[0].exceptions
    assert conditions.names() == ["subject_contains", "sample_at_least"]
    assert conditions.stage_conditions() == {"sample_at_least": (CONDITIONS["sample_at_least"], 3)}
    assert conditions.sample_at_least == 3 and getattr(conditions, "sample_kinds", None) is None
    assert exceptions.names() == ["sample_kinds"]
    assert exceptions.stage_conditions()["sample_kinds"] == (CONDITIONS["sample_kinds"], ["b"])


def test_bad_stage_condition_values_name_their_path(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more=f'rule_conditions = "{HERE}:CONDITIONS"')
    message = _error(_rules("{sample_at_least: 11, sender_ip: [300.1.1.1]}", "{sample_kinds: [c]}"))
    assert "p.yaml: rules.0.conditions.sample_at_least: Input should be less than or equal to 10" in message
    assert "p.yaml: rules.0.conditions.sender_ip: " in message
    assert "p.yaml: rules.0.exceptions.sample_kinds.0: Input should be 'a' or 'b'" in message


def test_an_unknown_condition_is_an_error_naming_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(_rules("{sample_at_least: 3}"))
    assert "p.yaml: rules.0.conditions.sample_at_least: unknown condition 'sample_at_least' (known: " in message
    assert "subject_contains" in message and "sample_kinds" not in message
    with_stage(monkeypatch, more=f'rule_conditions = "{HERE}:CONDITIONS"')
    message = _error(_rules("{}", "{sample_at_most: 3}"))
    assert "rules.0.exceptions.sample_at_most: unknown condition 'sample_at_most'" in message
    assert "sample_at_least, sample_kinds)" in message


def test_a_stage_may_not_redefine_a_built_in_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more=f'rule_conditions = "{HERE}:CLASHING"')
    with pytest.raises(RegistryError, match="'subject_contains' is already a built-in condition"):
        from mailmoat_policy import registry

        registry.stage_conditions(["subject_contains"])
    assert "already a built-in condition" in _error(_rules("{sample: 1}"))
