"""Conditional routing: a mail-flow rule sends mail carrying a header through a partner connector that
requires a verified certificate — delivered to the partner with the right certificate, deferred then
bounced (never sent in clear text) with a wrong name and with a server that offers no certificate."""

from __future__ import annotations

import email

import pytest

from tests.e2e.test_connectors import (  # noqa: F401  (fixtures)
    ca,
    certs,
    partner_sinks,
    send,
    tls_env,
    trace_for_sender,
)
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

POLICY = """
organization:
  hostname: gw.mailmoat.test
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
delivery:
  retry_delays: [1]
  expire_after: 4
connectors:
  outbound:
    - name: partner-good
      rule_only: true
      smart_hosts: ["127.0.0.1:{good}"]
      tls: verify
      tls_name: mx.partner.example
    - name: partner-wrong
      rule_only: true
      smart_hosts: ["127.0.0.1:{wrong}"]
      tls: verify
      tls_name: mx.partner.example
    - name: partner-plain
      rule_only: true
      smart_hosts: ["127.0.0.1:{plain}"]
      tls: opportunistic
rules:
  - name: to-good
    conditions:
      header_matches: {{header: X-Partner-Route, patterns: ["^good$"]}}
    actions:
      route_to_connector: partner-good
  - name: to-wrong
    conditions:
      header_matches: {{header: X-Partner-Route, patterns: ["^wrong$"]}}
    actions:
      route_to_connector: partner-wrong
  - name: to-plain
    conditions:
      header_matches: {{header: X-Partner-Route, patterns: ["^plain$"]}}
    actions:
      route_to_connector: partner-plain
      require_tls: true
"""


def message(route: str) -> bytes:
    return (f"From: {route}@example.com\r\nTo: alice@example.com\r\nSubject: for the partner\r\n"
            f"X-Partner-Route: {route}\r\nMessage-ID: <{route}@rules.test>\r\n\r\nHello partner.\r\n").encode()


def test_a_rule_routes_by_header_through_a_verified_partner_connector(
        gateway_factory, sink: SmtpSink, partner_sinks, certs) -> None:  # noqa: F811
    ports = {name: s.port for name, s in partner_sinks.items()}
    gateway = gateway_factory(POLICY, env=tls_env(certs), **ports)
    for route in ("good", "wrong", "plain"):
        code, reply = send(gateway.smtp_port, f"{route}@example.com", ["alice@example.com"], message(route))
        assert code == 250, (route, reply)

    # the right certificate: delivered to the partner over TLS, not to the recipient's usual route
    (got,) = partner_sinks["good"].wait_for(1)
    assert got.tls and got.rcpt_tos == ["alice@example.com"] and b"X-Partner-Route: good" in got.data
    events = trace_for_sender("good@example.com", "DELIVER")
    rule = next(e for e in events if e["event"] == "RULE")
    route = next(e for e in events if e["event"] == "ROUTE")
    assert rule["data"]["rule"] == "to-good" and rule["data"]["route_to_connector"] == {"connector": "partner-good"}
    assert route["detail"] == "connector:partner-good" and route["data"]["route"]["tls"] == "verify"

    # a wrong name, and a server without STARTTLS (no certificate at all; require_tls raised the
    # connector's opportunistic mode): deferred, then bounced to the sender, never sent
    dsns = {m.rcpt_tos[0]: m for m in sink.wait_for(2, timeout=60) if m.mail_from == ""}
    assert sorted(dsns) == ["plain@example.com", "wrong@example.com"]
    for name, why, route in (("wrong", "CERTIFICATE_VERIFY_FAILED", "connector:partner-wrong"),
                             ("plain", "4.7.4 TLS is required, but was not offered", "connector:partner-plain+tls")):
        events = trace_for_sender(f"{name}@example.com", "DSN")
        kinds = [e["event"] for e in events]
        assert "RULE" in kinds and "DEFER" in kinds and "DELIVER" not in kinds, (name, kinds)
        defer = next(e for e in events if e["event"] == "DEFER")
        assert why in defer["detail"] and defer["data"]["route"] == route, (name, defer)
        assert "4.4.7" in email.message_from_bytes(dsns[f"{name}@example.com"].data).get_payload()[1].as_string()
    assert partner_sinks["wrong"].messages == [] and partner_sinks["plain"].messages == []
    assert [m for m in sink.messages if m.mail_from != ""] == []  # never delivered on the usual route
