"""The pure parts of rate limiting and greylisting: client networks, exemptions, counting, decisions."""

from __future__ import annotations

import pytest

from mailmoat_ingress.greylist import Outcome, decide, triple_id
from mailmoat_ingress.ratelimit import client_network, connection_key, exempt, over, window_key
from mailmoat_policy import Greylisting, parse_policy

POLICY = parse_policy("""
organization: {internal_networks: [10.0.0.0/8]}
connection_filter:
  ip_allow: [192.0.2.10]
  rate_limits: {connections: 2, messages_per_minute: 5}
  greylisting: {enabled: true, delay: 60, retry_window: 3600}
""")


def test_client_networks() -> None:
    assert client_network("192.0.2.7") == "192.0.2.7/32"
    assert client_network("192.0.2.7", ipv4_prefix=24) == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_network("::ffff:192.0.2.7", 24) == "192.0.2.0/24"
    assert client_network("2001:db8::1", ipv6_prefix=48) == "2001:db8::/48"
    assert connection_key("192.0.2.7/32") == "mailmoat:rl:conn:192.0.2.7/32"
    assert window_key("messages", "192.0.2.7/32") == "mailmoat:rl:messages:192.0.2.7/32"


def test_internal_and_allow_listed_clients_are_exempt() -> None:
    assert exempt(POLICY, "10.1.2.3") and exempt(POLICY, "192.0.2.10")
    assert not exempt(POLICY, "192.0.2.11")


@pytest.mark.parametrize(("count", "limit", "result"), [
    (1, 0, False), (10_000, 0, False), (1, 1, False), (2, 1, True), (5, 5, False), (6, 5, True),
])
def test_over(count: int, limit: int, result: bool) -> None:
    assert over(count, limit) is result


def test_policy_defaults_are_off() -> None:
    default = parse_policy("{}").connection_filter
    assert default.rate_limits.connections == default.rate_limits.messages_per_minute == 0
    assert default.rate_limits.recipients_per_minute == 0
    assert not default.greylisting.enabled and default.greylisting.delay == 300
    assert default.greylisting.whitelist_ttl == 36 * 86400
    assert not default.proxy_protocol.trusted("127.0.0.1")
    trusted = parse_policy("connection_filter: {proxy_protocol: {trusted_networks: [10.0.0.0/24, '2001:db8::/32']}}")
    assert trusted.connection_filter.proxy_protocol.trusted("10.0.0.9")
    assert trusted.connection_filter.proxy_protocol.trusted("2001:db8::1")
    assert not trusted.connection_filter.proxy_protocol.trusted("10.0.1.1")


def test_greylist_decisions() -> None:
    settings = Greylisting(enabled=True, delay=60, retry_window=3600)
    assert decide(None, False, 1000.0, settings) is Outcome.NEW
    assert decide(1000.0, False, 1030.0, settings) is Outcome.EARLY
    assert decide(1000.0, False, 1060.0, settings) is Outcome.PASS
    assert decide(1000.0, False, 1000.0 + 3601, settings) is Outcome.NEW
    assert decide(None, True, 5.0, settings) is Outcome.KNOWN
    assert Outcome.NEW.deferred and Outcome.EARLY.deferred
    assert not Outcome.PASS.deferred and not Outcome.KNOWN.deferred


def test_triple_ids() -> None:
    assert triple_id("192.0.2.0/24", "A@Example.com", "b@x.test") == triple_id("192.0.2.0/24", "a@example.com",
                                                                             "B@X.TEST")
    assert triple_id("n", "<>", "r") == triple_id("n", "", "r")
    assert triple_id("n", "a", "r") != triple_id("n", "a", "s") != triple_id("m", "a", "s")
    assert len(triple_id("n", "a" * 500, "r")) == 32
