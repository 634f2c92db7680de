"""Evaluate Kubernetes NetworkPolicies for one connection, as the API documents their semantics:
a pod selected by no policy of a direction is open in that direction; a selected pod admits only
what the union of the selecting policies' rules allows; a connection needs both the source's
egress and the destination's ingress to allow it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

Resource = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    """A pod: namespace, its namespace's labels, its labels and its named container ports."""

    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


@dataclass(frozen=True)
class External:
    """An address outside the cluster."""

    ip: str


Endpoint = Pod | External


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); an empty selector matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(policy: Resource) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _peer_matches(peer: dict[str, Any], endpoint: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if not isinstance(endpoint, External):
            return False
        address = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(c) for c in block.get("except", []))
    if not isinstance(endpoint, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], endpoint.ns_labels()):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector"), endpoint.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, destination: Endpoint) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        value = entry.get("port")
        if value is None:
            return True
        if isinstance(value, str):
            if isinstance(destination, Pod) and destination.ports.get(value) == port:
                return True
            continue
        if value <= port <= entry.get("endPort", value):
            return True
    return False


def _side_allows(
    policies: list[Resource], pod: Pod, peer: Endpoint, destination: Endpoint, port: int, protocol: str,
    direction: str,
) -> bool:
    selecting = [
        p for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and direction in policy_types(p)
        and selector_matches(p["spec"].get("podSelector"), pod.labels)
    ]
    if not selecting:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(p, peer, policy["metadata"]["namespace"]) for p in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol, destination):
                return True
    return False


def allowed(
    policies: list[Resource], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Whether a connection from ``source`` to ``destination:port`` gets through."""
    policies = [p for p in policies if p["kind"] == "NetworkPolicy"]
    if isinstance(source, Pod) and not _side_allows(policies, source, destination, destination, port, protocol,
                                                    "Egress"):
        return False
    if isinstance(destination, Pod):
        return _side_allows(policies, destination, source, destination, port, protocol, "Ingress")
    return True
