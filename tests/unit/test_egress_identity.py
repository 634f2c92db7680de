"""Source address and HELO per route: the policy's mapping from route names, and the pool key."""

from __future__ import annotations

import pytest

from mailmoat_egress.delivery import Target, destination_for
from mailmoat_policy import PolicyError, parse_policy

POLICY = """
routes: {onprem: {hosts: [10.0.0.5]}}
connectors:
  outbound: [{name: partners, recipient_domains: [partner.example]}]
outbound:
  source_address: 192.0.2.25
  per_route:
    "route:onprem": {source_address: 10.0.0.1, helo: GW-Internal.Example.com}
    "connector:partners": {helo: partners.example.com}
    mx: {source_address: "2001:db8::25"}
"""


def test_identity_by_route_name() -> None:
    outbound = parse_policy(POLICY).outbound
    assert outbound.identity_for("route:onprem") == ("10.0.0.1", "gw-internal.example.com")
    assert outbound.identity_for("connector:partners") == ("192.0.2.25", "partners.example.com")
    assert outbound.identity_for("connector:partners:partner.example") == ("192.0.2.25", "partners.example.com")
    assert outbound.identity_for("mx:elsewhere.example") == ("2001:db8::25", None)
    assert parse_policy("{}").outbound.identity_for("mx:x.example") == (None, None)


@pytest.mark.parametrize(("text", "error"), [
    ('outbound: {per_route: {"route:nowhere": {helo: a.example.com}}}', "no such route"),
    ("outbound: {source_address: 300.1.1.1}", "does not appear to be an IPv4 or IPv6 address"),
    ("outbound: {helo: localhost}", "fully qualified"),
])
def test_bad_identities_are_refused(text: str, error: str) -> None:
    with pytest.raises(PolicyError, match=error):
        parse_policy(text)


def test_sessions_are_shared_only_within_one_identity() -> None:
    target = Target("192.0.2.1", 25, "mx1.example.com")
    plain = destination_for(target, "opportunistic", None)
    assert plain == destination_for(target, "opportunistic", None, None, None)
    assert plain != destination_for(target, "opportunistic", None, "192.0.2.25", None)
    assert plain != destination_for(target, "opportunistic", None, None, "out.example.com")
