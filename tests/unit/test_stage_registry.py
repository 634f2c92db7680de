"""The stage registry (libs/platform/stages.toml): well-formed, and every name in it resolves."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from mailmoat_platform import stages

REPO = Path(__file__).resolve().parents[2]


def test_every_declared_stage_is_a_package_with_a_service() -> None:
    for spec in stages.stages():
        folder = REPO / spec.path
        assert (folder / "__init__.py").is_file(), spec.name
        module = importlib.import_module(f"{spec.package}.service")
        assert callable(module.main), spec.name


def test_every_model_string_resolves() -> None:
    for spec in stages.filters():
        assert spec.policy_class() is not None, spec.name
        if spec.verdict_model:
            assert isinstance(spec.verdict_class(), type), spec.name
        for name, condition in spec.conditions().items():
            assert isinstance(condition, stages.RuleCondition), (spec.name, name)


def test_filters_come_in_precedence_order() -> None:
    ranks = [spec.precedence for spec in stages.by_precedence()]
    assert ranks == sorted(ranks)
    assert {s.name for s in stages.by_precedence()} == set(stages.filter_names())


ENTRY = 'name = "{name}"\npath = "services/{name}"\nmetrics_port = {port}\nkind = "{kind}"\n'


def registry(*entries: str) -> str:
    return "".join(f"[[stage]]\n{entry}\n" for entry in entries)


def test_parse_reads_entries_and_keeps_unknown_keys() -> None:
    text = registry(ENTRY.format(name="a", port=1, kind="smtp") + '[stage.deploy]\nreplicas = 2\n')
    (spec,) = stages.parse(text)
    assert (spec.name, spec.package, spec.kind, spec.extra) == ("a", "mailmoat_a", "smtp", {"deploy": {"replicas": 2}})


@pytest.mark.parametrize(("text", "message"), [
    (registry('name = "a"\nkind = "smtp"\n'), "missing path, metrics_port"),
    (registry(ENTRY.format(name="a", port=1, kind="gateway")), "kind must be one of"),
    (registry(ENTRY.format(name="a", port=1, kind="filter")), "needs policy_section and precedence"),
    (registry(ENTRY.format(name="a", port=1, kind="smtp"), ENTRY.format(name="a", port=2, kind="egress")),
     "share the name a"),
    (registry(ENTRY.format(name="a", port=1, kind="smtp"), ENTRY.format(name="b", port=1, kind="egress")),
     "share the metrics_port 1"),
])
def test_parse_refuses_a_malformed_registry(text: str, message: str) -> None:
    with pytest.raises(stages.RegistryError, match=message):
        stages.parse(text)


def test_resolve_needs_module_and_attribute() -> None:
    assert stages.resolve("mailmoat_platform.stages:parse") is stages.parse
    with pytest.raises(stages.RegistryError):
        stages.resolve("mailmoat_platform.stages")
