"""The deployment rules (tests/deploy/rules.py) on every overlay, with and without the filter stages;
and each rule shown to catch the mistake it is there for."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import rules
from tests.deploy.kustomize import render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
FILTERS = K8S / "components" / "filters"
TARGETS = ("base", "overlays/dev", "overlays/production")
CASES = [(t, f) for t in TARGETS for f in (False, True)]
IDS = [f"{t}{'+filters' if f else ''}" for t, f in CASES]

Resource = dict[str, Any]


@cache
def rendered(target: str, filters: bool) -> tuple[Resource, ...]:
    return tuple(render(K8S / target, [FILTERS] if filters else None))


def production() -> list[Resource]:
    return copy.deepcopy(list(rendered("overlays/production", True)))


def named(resources: list[Resource], kind: str, name: str) -> Resource:
    return next(r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)


@pytest.mark.parametrize(("target", "filters"), CASES, ids=IDS)
def test_every_container_is_restricted(target: str, filters: bool) -> None:
    assert rules.restricted(list(rendered(target, filters))) == []


@pytest.mark.parametrize(("target", "filters"), CASES, ids=IDS)
def test_replicas_spread_over_nodes(target: str, filters: bool) -> None:
    assert rules.spread(list(rendered(target, filters))) == []


@pytest.mark.parametrize(("target", "filters"), CASES, ids=IDS)
def test_disruption_budgets(target: str, filters: bool) -> None:
    assert rules.budgets(list(rendered(target, filters))) == []


@pytest.mark.parametrize("filters", [False, True], ids=["production", "production+filters"])
def test_production_runs_two_replicas_of_everything_on_the_mail_path(filters: bool) -> None:
    assert rules.minimum_replicas(list(rendered("overlays/production", filters)), 2) == []


@pytest.mark.parametrize(("target", "filters"), CASES, ids=IDS)
def test_no_network_policy_hole(target: str, filters: bool) -> None:
    assert rules.network_holes(list(rendered(target, filters)), "mailmoat") == []


# --- each rule catches what it is for -----------------------------------------------------------------


def test_restricted_catches_root_capabilities_and_host_paths() -> None:
    resources = production()
    clamd = named(resources, "Deployment", "mailmoat-clamd")
    container = clamd["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {**container["securityContext"], "runAsUser": 0, "capabilities": {
        "drop": ["ALL"], "add": ["CHOWN"]}}
    clamd["spec"]["template"]["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/var"}})
    sidecar = clamd["spec"]["template"]["spec"]["initContainers"][1]
    del sidecar["securityContext"]["allowPrivilegeEscalation"]
    problems = rules.restricted(resources)
    assert any("mailmoat-clamd container clamd: runs as uid 0" in p for p in problems)
    assert any("adds capabilities" in p for p in problems)
    assert any("hostPath" in p for p in problems)
    assert any("container freshclam: allowPrivilegeEscalation" in p for p in problems)


def test_spread_catches_replicas_that_may_share_a_node() -> None:
    resources = production()
    del named(resources, "Deployment", "mailmoat-redis-proxy")["spec"]["template"]["spec"]["affinity"]
    named(resources, "RabbitmqCluster", "mailmoat-rabbitmq")["spec"].pop("affinity")
    problems = rules.spread(resources)
    assert any("mailmoat-redis-proxy" in p for p in problems) and any("RabbitmqCluster" in p for p in problems)


def test_budgets_catch_a_missing_or_blocking_budget() -> None:
    resources = production()
    resources.remove(named(resources, "PodDisruptionBudget", "mailmoat-rabbitmq"))
    named(resources, "PodDisruptionBudget", "mailmoat-redis")["spec"]["minAvailable"] = 3
    problems = rules.budgets(resources)
    assert "RabbitmqCluster/mailmoat-rabbitmq: 0 PodDisruptionBudgets" in problems
    assert "StatefulSet/mailmoat-redis: minAvailable 3 of 3 (a drain blocks or nothing is kept)" in problems


def test_minimum_replicas_catches_a_single_stage() -> None:
    resources = production()
    named(resources, "ScaledObject", "mailmoat-antispam")["spec"]["minReplicaCount"] = 1
    assert rules.minimum_replicas(resources, 2) == ["Deployment/mailmoat-antispam: 1 replicas, below 2"]
    assert rules.minimum_replicas(list(rendered("overlays/dev", True)), 2) != []  # dev runs one of each


def test_network_rules_catch_open_ports_open_dns_and_metadata() -> None:
    resources = production()
    smtp_out = named(resources, "NetworkPolicy", "mailmoat-egress-smtp")["spec"]["egress"][0]
    smtp_out["ports"].append({"protocol": "TCP", "port": 443})
    smtp_out["to"][0]["ipBlock"].pop("except")
    named(resources, "NetworkPolicy", "mailmoat-backends")["spec"]["egress"][0].pop("to")
    named(resources, "NetworkPolicy", "mailmoat-metrics")["spec"]["ingress"][0].pop("from")
    deny = named(resources, "NetworkPolicy", "mailmoat-default-deny")
    deny["spec"]["podSelector"] = {"matchLabels": {"app.kubernetes.io/name": "mailmoat"}}
    resources.remove(named(resources, "NetworkPolicy", "mailmoat-redis-proxy"))
    problems = rules.network_holes(resources, "mailmoat")
    assert any("mailmoat-egress-smtp: Deployment/mailmoat-egress reaches anywhere on [25, 443, 587]" in p
               for p in problems)
    assert any("reaches link-local" in p for p in problems)
    assert any("DNS to any resolver" in p for p in problems)
    assert any("mailmoat-metrics: Deployment/mailmoat-routing open to anyone" in p for p in problems)
    assert "Deployment/mailmoat-redis-proxy: no policy restricts its ingress" in problems
    assert "Deployment/mailmoat-redis-proxy: no policy restricts its egress" in problems
