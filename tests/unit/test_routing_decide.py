"""Routing decisions: hybrid smart hosts for accepted domains, MX otherwise, one copy per route."""

from __future__ import annotations

from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from mailmoat_routing.decide import copies_for, domain_of, plan_routes, route_for

POLICY = parse_policy(
    """
accepted_domains:
  - domain: example.com
    route: onprem
  - domain: sub.example.com
    route: onprem
  - domain: branch.example.com
    route: branch
  - domain: relay.example.com
    type: internal_relay
routes:
  onprem: {hosts: ["10.0.0.1:25", "10.0.0.2:2525"], tls: verify, tls_name: mx.example.com}
  branch: {hosts: ["10.9.0.1"], tls: required}
outbound: {tls: opportunistic}
"""
)


def test_domain_of() -> None:
    assert domain_of("Alice@Example.COM") == "example.com"
    assert domain_of('"a@b"@c.org') == "c.org"
    assert domain_of("postmaster") == ""


def test_accepted_domain_with_route_goes_to_its_smart_hosts() -> None:
    route = route_for("alice@EXAMPLE.com", POLICY)
    assert route.kind == "smarthost"
    assert route.name == "route:onprem"
    assert route.hosts == ["10.0.0.1:25", "10.0.0.2:2525"]
    assert (route.tls, route.tls_name) == ("verify", "mx.example.com")


def test_other_domains_go_to_mx_with_outbound_tls() -> None:
    route = route_for("bob@partner.org", POLICY)
    assert (route.kind, route.domain, route.name, route.tls) == ("mx", "partner.org", "mx:partner.org", "opportunistic")
    assert route_for("x@relay.example.com", POLICY).kind == "mx"


def test_split_per_route_keeps_id_and_order() -> None:
    envelope = Envelope(
        mail_from="s@sender.org",
        rcpt_to=["a@example.com", "b@partner.org", "c@sub.example.com", "d@branch.example.com",
                 "e@partner.org", "a@example.com"],
        itinerary=["routing", "egress"],
    )
    splits = plan_routes(envelope, POLICY)
    assert [(s.route.name, s.recipients) for s in splits] == [
        ("route:onprem", ["a@example.com", "c@sub.example.com"]),
        ("mx:partner.org", ["b@partner.org", "e@partner.org"]),
        ("route:branch", ["d@branch.example.com"]),
    ]
    copies = copies_for(envelope, splits)
    assert {c.id for c in copies} == {envelope.id}
    assert [c.rcpt_to for c in copies] == [s.recipients for s in splits]
    assert all(c.verdicts["routing"].detail["copies"] == 3 for c in copies)
    assert envelope.route is None and len(envelope.rcpt_to) == 6  # original untouched
    assert "routing" not in envelope.verdicts
    assert len({id(c.verdicts) for c in copies}) == 3 and len({id(c.rcpt_to) for c in copies}) == 3
    assert [c.route.name for c in copies if c.route] == [s.route.name for s in splits]
