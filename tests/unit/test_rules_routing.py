"""Routes after the rules: connectors and TLS floors per recipient, raised routes named apart."""

from __future__ import annotations

from datetime import UTC, datetime

from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from mailmoat_routing.rules import evaluate
from mailmoat_routing.rules.routing import plan_with_rules

POLICY = """
accepted_domains:
  - {domain: example.com, route: onprem}
routes:
  onprem: {hosts: ["10.0.0.1"], tls: opportunistic}
connectors:
  outbound:
    - {name: partner, rule_only: true, smart_hosts: ["mx.partner.test"], tls: verify-ca}
rules:
"""
DATA = b"Subject: s\r\nX-Route: partner\r\n\r\nbody\r\n"
NOW = datetime(2026, 11, 29, tzinfo=UTC)


def plan(rules: str, rcpts: list[str]) -> dict[str, tuple[str, list[str]]]:
    policy = parse_policy(POLICY + rules)
    envelope = Envelope(mail_from="s@outside.test", rcpt_to=rcpts)
    outcome = evaluate(envelope, DATA, policy, NOW)
    return {s.route.name: (s.route.tls, s.recipients) for s in plan_with_rules(envelope, policy, outcome)}


RCPTS = ["a@example.com", "b@partner.test", "c@example.com"]


def test_without_recipient_conditions_a_rule_routes_every_recipient() -> None:
    rules = "  - {name: r, conditions: {header_contains: {header: X-Route, words: [partner]}}, " \
            "actions: {route_to_connector: partner, require_tls: true}}\n"
    assert plan(rules, RCPTS) == {"connector:partner": ("verify-ca", RCPTS)}  # verify-ca is stronger: kept


def test_recipient_conditions_scope_the_routing_actions() -> None:
    rules = "  - {name: r, conditions: {recipient_domain: [partner.test]}, actions: {route_to_connector: partner}}\n"
    assert plan(rules, RCPTS) == {
        "route:onprem": ("opportunistic", ["a@example.com", "c@example.com"]),
        "connector:partner": ("verify-ca", ["b@partner.test"]),
    }
    rules = "  - {name: r, conditions: {recipient_address: [c@example.com]}, actions: {require_tls: true}}\n"
    assert plan(rules, RCPTS) == {
        "route:onprem": ("opportunistic", ["a@example.com"]),
        "mx:partner.test": ("opportunistic", ["b@partner.test"]),
        "route:onprem+tls": ("required", ["c@example.com"]),
    }


def test_a_later_rule_for_every_recipient_overrides_earlier_scoped_ones() -> None:
    rules = ("  - {name: a, conditions: {recipient_domain: [partner.test]}, actions: {route_to_connector: partner}}\n"
             "  - {name: b, actions: {require_tls: true}}\n")
    assert plan(rules, RCPTS) == {
        "route:onprem+tls": ("required", ["a@example.com", "c@example.com"]),
        "connector:partner": ("verify-ca", ["b@partner.test"]),
    }


def test_no_rule_outcome_is_plain_routing() -> None:
    policy = parse_policy(POLICY + "  []\n")
    envelope = Envelope(mail_from="s@outside.test", rcpt_to=RCPTS)
    assert [s.route.name for s in plan_with_rules(envelope, policy, None)] == ["route:onprem", "mx:partner.test"]
