"""Mail-flow rule conditions that stages add: each registry stage's ``rule_conditions``.

A stage names a ``dict[str, RuleCondition]``; the policy accepts ``rules[].conditions.<name>`` (and
``exceptions``) for each, and the engine asks ``cond.matches(value, envelope)`` for it like any built-in
condition (``conditions.CONDITIONS``). The stages' verdicts are in the envelope the rules see.
"""

from __future__ import annotations

from typing import Any

from mailmoat_platform import stages
from mailmoat_platform.stages import RuleCondition, StageSpec
from mailmoat_policy import RuleConditions
from mailmoat_routing.rules.conditions import CONDITIONS
from mailmoat_routing.rules.message import Facts
from mailmoat_routing.rules.registry import RegistryError

_known: tuple[tuple[StageSpec, ...], dict[str, RuleCondition]] | None = None


def stage_conditions() -> dict[str, RuleCondition]:
    """Every condition the registry's stages add, by name (read again when the registry changes)."""
    global _known
    specs = stages.stages()
    if _known is None or _known[0] is not specs:
        found: dict[str, RuleCondition] = {}
        for spec in specs:
            for name, cond in spec.conditions().items():
                if name in found or name in CONDITIONS:
                    raise RegistryError(f"condition {name!r} of stage {spec.name} is defined twice")
                found[name] = cond
        _known = (specs, found)
    return _known[1]


def value_of(spec: RuleConditions, name: str) -> Any:
    """The policy's value of a stage condition (a field of the rule's conditions, or an extra key)."""
    value = getattr(spec, name, None)
    if value is None and spec.model_extra:
        value = spec.model_extra.get(name)
    return value


def check(name: str, facts: Facts, spec: RuleConditions) -> bool:
    """Whether the message meets condition ``name`` of ``spec``: a built-in one, or a stage's."""
    if name in CONDITIONS:
        return CONDITIONS[name](facts, spec)
    cond = stage_conditions().get(name)
    if cond is None:
        raise RegistryError(f"condition {name!r}: no implementation (no stage of the registry adds it)")
    return bool(cond.matches(value_of(spec, name), facts.envelope))
