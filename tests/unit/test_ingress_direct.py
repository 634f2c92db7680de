"""When ingress runs the routing step itself."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mailmoat_ingress.direct import routes_at_ingress
from mailmoat_policy import Pipeline, Policy, load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "policy.example.yaml"


@pytest.mark.parametrize(("route_at_ingress", "filters", "expected"), [
    (False, [], False),
    (True, [], True),
    (True, ["connection_filter"], False),
    (True, ["antivirus", "antispam"], False),
])
def test_only_when_asked_and_without_filter_stages(route_at_ingress: bool, filters: list[str], expected: bool) -> None:
    policy = Policy(pipeline=Pipeline(filters=filters, route_at_ingress=route_at_ingress))
    assert routes_at_ingress(policy) is expected


def test_not_when_the_policy_has_mail_flow_rules() -> None:
    pipeline = Pipeline(route_at_ingress=True)
    assert routes_at_ingress(SimpleNamespace(pipeline=pipeline, rules=[]))  # type: ignore[arg-type]
    assert not routes_at_ingress(SimpleNamespace(pipeline=pipeline, rules=[object()]))  # type: ignore[arg-type]


def test_on_by_default_for_a_plain_relay() -> None:
    assert routes_at_ingress(Policy())
    example = load_policy(EXAMPLE)
    assert not example.pipeline.filters and routes_at_ingress(example)
    assert not routes_at_ingress(Policy(pipeline=Pipeline(filters=["antispam"])))
    assert not routes_at_ingress(Policy(pipeline=Pipeline(route_at_ingress=False)))
