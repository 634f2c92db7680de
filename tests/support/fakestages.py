"""A registry with one more stage than ``stages.toml`` declares, for tests of what derives from it."""

from __future__ import annotations

import pytest

from mailmoat_platform import stages

EXTRA = """
[[stage]]
name = "{name}"
path = "services/{name}"
metrics_port = {port}
kind = "{kind}"
description = "A stage only tests know"
{more}
"""


def with_stage(monkeypatch: pytest.MonkeyPatch, name: str = "sample_filter", port: int = 9171,
               kind: str = "filter", more: str = "") -> stages.StageSpec:
    """Make ``mailmoat_platform.stages.stages()`` answer the real registry plus one stage; a filter
    stage gets a policy section and a precedence unless ``more`` names them."""
    if kind == "filter" and "policy_section" not in more:
        more = f'policy_section = "{name}"\nprecedence = 90\n{more}'
    text = stages.REGISTRY.read_text() + EXTRA.format(name=name, port=port, kind=kind, more=more)
    parsed = stages.parse(text)
    monkeypatch.setattr(stages, "stages", lambda: parsed)
    return stages.get(name)
