"""The stage registry (``stages.toml`` beside this module): one declaration per service.

Read without importing any service; a declaration names its models as ``"module:Class"`` strings,
imported only when asked for (``StageSpec.policy_class``, ``StageSpec.verdict_class``).
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

REGISTRY = Path(__file__).with_name("stages.toml")
Kind = Literal["smtp", "filter", "routing", "egress", "recorder", "console", "dev"]


class RegistryError(ValueError):
    """The registry file is not as ``stages.toml`` describes."""


@dataclass(frozen=True)
class StageSpec:
    """One stage as the registry declares it."""

    name: str
    path: str
    metrics_port: int
    kind: Kind
    description: str = ""
    policy_section: str | None = None
    policy_model: str | None = None
    verdict_model: str | None = None
    precedence: int | None = None
    release_by: tuple[str, ...] = ()
    rule_conditions: str | None = None
    """``"module:NAME"`` of a ``dict[str, RuleCondition]``: mail-flow rule conditions the stage adds."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this module does not read (deploy settings and the like)."""

    @property
    def package(self) -> str:
        return f"mailmoat_{self.name}"

    @property
    def is_filter(self) -> bool:
        return self.kind == "filter"

    def policy_class(self) -> type | None:
        return resolve(self.policy_model) if self.policy_model else None

    def verdict_class(self) -> type | None:
        return resolve(self.verdict_model) if self.verdict_model else None

    def conditions(self) -> dict[str, RuleCondition]:
        return dict(resolve(self.rule_conditions)) if self.rule_conditions else {}


@dataclass(frozen=True)
class RuleCondition:
    """A mail-flow rule condition a stage adds (``rules[].conditions.<name>`` in the policy)."""

    value: Any
    """The type of the condition's value in the policy, validated with pydantic's ``TypeAdapter``."""
    matches: Callable[[Any, Any], bool]
    """``matches(value, envelope)``: whether the message matches (reads the stage's verdict)."""


def resolve(target: str) -> Any:
    """The object a ``"module:attribute"`` string names."""
    module, _, attribute = target.partition(":")
    if not module or not attribute:
        raise RegistryError(f"{target!r} is not of the form module:attribute")
    return getattr(importlib.import_module(module), attribute)


_KNOWN = {f for f in StageSpec.__dataclass_fields__ if f != "extra"}
_KINDS = ("smtp", "filter", "routing", "egress", "recorder", "console", "dev")


def parse(text: str) -> tuple[StageSpec, ...]:
    """The declarations of a registry file's text, checked."""
    specs: list[StageSpec] = []
    for index, entry in enumerate(tomllib.loads(text).get("stage", [])):
        where = f"stage {index} ({entry.get('name', '?')})"
        missing = [k for k in ("name", "path", "metrics_port", "kind") if k not in entry]
        if missing:
            raise RegistryError(f"{where}: missing {', '.join(missing)}")
        if entry["kind"] not in _KINDS:
            raise RegistryError(f"{where}: kind must be one of {', '.join(_KINDS)}")
        known = {k: v for k, v in entry.items() if k in _KNOWN}
        known["release_by"] = tuple(known.get("release_by", ()))
        spec = StageSpec(**known, extra={k: v for k, v in entry.items() if k not in _KNOWN})
        if spec.is_filter and (spec.policy_section is None or spec.precedence is None):
            raise RegistryError(f"{where}: a filter stage needs policy_section and precedence")
        specs.append(spec)
    for attribute in ("name", "metrics_port", "policy_section"):
        values = [getattr(s, attribute) for s in specs if getattr(s, attribute) is not None]
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise RegistryError(f"two stages share the {attribute} {', '.join(dupes)}")
    return tuple(specs)


QUEUE_PREFIX = "mailmoat."


def stage_queue(stage: str) -> str:
    """The queue a stage consumes: ``mailmoat.<name>`` (``mailmoat_platform.bus`` publishes to it)."""
    return QUEUE_PREFIX + stage


@cache
def stages() -> tuple[StageSpec, ...]:
    """Every declared stage, in registry order."""
    return parse(REGISTRY.read_text())


def names() -> tuple[str, ...]:
    return tuple(s.name for s in stages())


def get(name: str) -> StageSpec:
    for spec in stages():
        if spec.name == name:
            return spec
    raise KeyError(name)


def of_kind(*kinds: Kind) -> tuple[StageSpec, ...]:
    """The stages of these kinds, in registry order."""
    return tuple(s for s in stages() if s.kind in kinds)


def filters() -> tuple[StageSpec, ...]:
    """The filter stages, in registry order."""
    return tuple(s for s in stages() if s.is_filter)


def filter_names() -> tuple[str, ...]:
    return tuple(s.name for s in filters())


def by_precedence() -> tuple[StageSpec, ...]:
    """The filter stages, the one whose verdict decides first leading."""
    return tuple(sorted(filters(), key=lambda s: (s.precedence, s.name)))
