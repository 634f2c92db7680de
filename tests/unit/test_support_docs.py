"""The policy reference (docs/policy.md) covers every field of the policy model, and its example
and the shipped example policy both validate."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from mailmoat_policy import Policy, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")


def fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every field of ``model`` and of the models nested in it."""
    paths = []
    for name, info in model.model_fields.items():
        paths.append(prefix + name)
        for arg in (info.annotation, *typing.get_args(info.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                paths += fields(arg, f"{prefix}{name}.")
    return paths


def test_every_policy_field_is_documented() -> None:
    paths = fields(Policy)
    assert "limits.max_sessions" in paths and "accepted_domains.dbeb" in paths and "routes.tls_name" in paths
    sections = set(re.findall(r"^## (\w+)$", DOC, re.MULTILINE))
    missing = []
    for path in paths:
        top, _, leaf = path.rpartition(".")
        if not top:
            if path not in sections:
                missing.append(path)
        elif f"| `{leaf}` |" not in DOC:
            missing.append(path)
    assert missing == []


def test_the_documented_example_is_a_valid_policy() -> None:
    (example,) = re.findall(r"## A complete example\n\n```yaml\n(.*?)```", DOC, re.DOTALL)
    policy = parse_policy(example, "docs/policy.md")
    assert policy.routes["onprem"].tls == "verify"
    assert sorted(policy.model_dump()) == sorted(Policy.model_fields)


def test_the_shipped_example_policy_is_valid_and_routes_example_com_to_the_devmailbox() -> None:
    policy = load_policy(REPO / "config" / "policy.example.yaml")
    entry = policy.accepted_domain("example.com")
    assert entry is not None and entry.route is not None
    assert policy.routes[entry.route].hosts == ["127.0.0.1:2526"]
