"""Source address and HELO per route: egress binds its connections to the configured local address and
greets with the configured name, per route, falling back to ``outbound``'s and then the system's."""

from __future__ import annotations

import pytest

from tests.e2e.test_mail_flow import send
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

IDENTITIES = """
organization:
  hostname: gw.mailmoat.test
  internal_networks: [127.0.0.10/32]
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
outbound:
  helo: out.mailmoat.test
  per_route:
    "connector:partners": {{source_address: 127.0.0.33, helo: partners-out.mailmoat.test}}
connectors:
  outbound:
    - {{name: partners, recipient_domains: [partner.example], smart_hosts: ["127.0.0.1:{sink_port}"], tls: none}}
"""


def message(to: str) -> bytes:
    return f"From: alice@example.com\r\nTo: {to}\r\nSubject: identity\r\n\r\nhello\r\n".encode("ascii")


def test_each_route_connects_from_its_address_and_greets_with_its_name(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(IDENTITIES)
    code, reply = send(gateway.smtp_port, "alice@example.com", ["bob@partner.example", "carol@example.com"],
                       message("bob@partner.example, carol@example.com"), source="127.0.0.10")
    assert code == 250, reply
    by_rcpt = {m.rcpt_tos[0]: m for m in sink.wait_for(2, timeout=30)}
    partner, onprem = by_rcpt["bob@partner.example"], by_rcpt["carol@example.com"]
    assert (partner.peer, partner.helo) == ("127.0.0.33", "partners-out.mailmoat.test")
    assert (onprem.peer, onprem.helo) == ("127.0.0.1", "out.mailmoat.test")  # outbound's name, any address
