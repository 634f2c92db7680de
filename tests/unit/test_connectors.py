"""Partner connectors (pure): policy validation, inbound matching and requirements, outbound selection."""

from __future__ import annotations

import ssl

import pytest
import trustme

from mailmoat_ingress.checks import check_client
from mailmoat_ingress.connectors import (
    PeerTls,
    cert_matches,
    check_mail,
    peer_tls,
    server_context,
)
from mailmoat_ingress.replies import STARTTLS_REQUIRED
from mailmoat_platform.models import Envelope
from mailmoat_policy import PolicyError, parse_policy, stronger_tls
from mailmoat_routing.decide import plan_routes, route_for, select_outbound
from tests.support.certs import write_ca, write_leaf

POLICY = """
organization:
  internal_networks: [10.9.0.0/16]
accepted_domains:
  - {domain: example.com, route: onprem}
  - {domain: other.example, route: onprem}
routes:
  onprem: {hosts: ["mail.example.com"], tls: none}
connection_filter:
  ip_block: [198.51.100.0/24]
connectors:
  inbound:
    - name: fabrikam
      sender_domains: [fabrikam.example, "*.fabrikam.example"]
      sender_ips: [198.51.100.16/28]
      require_tls: true
      tls_cert_name: mail.fabrikam.example
      allow_list: true
    - name: contoso
      sender_ips: [192.0.2.7]
      require_tls: true
    - name: loose
      sender_domains: [loose.example]
  outbound:
    - {name: wild, recipient_domains: ["*"], smart_hosts: ["relay.example:2525"], tls: required}
    - {name: subs, recipient_domains: ["*.partner.example"], tls: verify-ca}
    - {name: hybrid, recipient_domains: [accepted], smart_hosts: ["onprem.example"], tls: verify,
       tls_name: onprem.example}
    - {name: exact, recipient_domains: [partner.example, example.com], smart_hosts: ["mx.partner.example"],
       tls: verify, tls_name: mx.partner.example}
    - {name: legal, rule_only: true, smart_hosts: ["legal.example"], tls: opportunistic}
"""


@pytest.fixture(scope="module")
def policy():
    return parse_policy(POLICY)


CERT = {
    "subject": ((("countryName", "XX"),), (("commonName", "mail.fabrikam.example"),)),
    "subjectAltName": (("DNS", "mx2.fabrikam.example"), ("IP Address", "198.51.100.17")),
}


# --- policy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, reason",
    [
        ("connectors: {inbound: [{name: a}]}", "needs sender_domains or sender_ips"),
        ("connectors: {inbound: [{name: a, sender_domains: [x.example], allow_list: true}]}", "allow_list needs"),
        ("connectors: {inbound: [{name: a, sender_ips: [not-an-ip]}]}", "not an IPv4 or IPv6"),
        ("connectors: {inbound: [{name: a, sender_domains: ['bad domain']}]}", "not a domain"),
        ("connectors: {outbound: [{name: a}]}", "needs recipient_domains or rule_only"),
        ("connectors: {outbound: [{name: a, rule_only: true, tls: sometimes}]}", "tls"),
        ("connectors: {outbound: [{name: a, rule_only: true}, {name: a, rule_only: true}]}", "used twice"),
        ("connectors: {outbound: [{name: a, rule_only: true, hosts: [x]}]}", "hosts"),
    ],
)
def test_bad_connectors_refused(text: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        parse_policy(text)


def test_partner_ips_join_the_allow_list(policy) -> None:
    cf = policy.connection_filter
    assert cf.allowed("198.51.100.20") and not cf.blocked("198.51.100.20")
    assert check_client(policy, "198.51.100.20") is None
    assert cf.blocked("198.51.100.40") and check_client(policy, "198.51.100.40") is not None
    assert not cf.allowed("192.0.2.7")  # contoso: allow_list not set
    assert cf.ip_allow == []  # the policy's own list is unchanged


def test_tls_order() -> None:
    assert stronger_tls("opportunistic", "required") == "required"
    assert stronger_tls("verify", "required") == "verify"
    assert stronger_tls("none", "required") == "required"
    assert stronger_tls("verify-ca", "required") == "verify-ca"


# --- inbound ----------------------------------------------------------------------------------------


def test_cert_matches() -> None:
    assert cert_matches(CERT, "mail.fabrikam.example")
    assert cert_matches(CERT, "MX2.fabrikam.example")
    assert cert_matches(CERT, "*.fabrikam.example")
    assert not cert_matches(CERT, "fabrikam.example")
    assert not cert_matches(CERT, "198.51.100.17")
    assert not cert_matches(CERT, "mail.fabrikam.example.evil")
    assert not cert_matches(None, "mail.fabrikam.example")
    wildcard = {"subject": ((("commonName", "*.fabrikam.example"),),)}
    assert cert_matches(wildcard, "mail.fabrikam.example")
    assert not cert_matches(wildcard, "a.b.fabrikam.example")


def test_peer_tls_from_session_extra() -> None:
    assert peer_tls(None) == PeerTls()
    assert peer_tls({"peercert": None, "cipher": ("X", "TLSv1.3", 256)}) == PeerTls(active=True)
    assert peer_tls({"peercert": CERT}).cert == CERT


@pytest.mark.parametrize(
    "ip, sender, tls, connector, reply",
    [
        # identified by sender domain, from anywhere
        ("203.0.113.5", "a@fabrikam.example", PeerTls(), "fabrikam", STARTTLS_REQUIRED),
        ("203.0.113.5", "a@Sub.Fabrikam.Example", PeerTls(), "fabrikam", STARTTLS_REQUIRED),
        ("203.0.113.5", "a@fabrikam.example", PeerTls(active=True), "fabrikam", "550 5.7.51 "),
        ("203.0.113.5", "a@fabrikam.example", PeerTls(True, {"subject": ((("commonName", "x.example"),),)}),
         "fabrikam", "550 5.7.51 "),
        ("203.0.113.5", "a@fabrikam.example", PeerTls(True, CERT), "fabrikam", None),
        # identified by IP, whatever the sender (the null sender too)
        ("198.51.100.17", "", PeerTls(), "fabrikam", STARTTLS_REQUIRED),
        ("198.51.100.17", "x@elsewhere.example", PeerTls(True, CERT), "fabrikam", None),
        ("::ffff:192.0.2.7", "x@elsewhere.example", PeerTls(), "contoso", STARTTLS_REQUIRED),
        ("192.0.2.7", "x@elsewhere.example", PeerTls(active=True), "contoso", None),
        # no requirement: identified, not refused
        ("203.0.113.5", "a@loose.example", PeerTls(), "loose", None),
        # no connector
        ("203.0.113.5", "a@notfabrikam.example", PeerTls(), None, None),
        ("192.0.2.8", "a@elsewhere.example", PeerTls(), None, None),
        # the organisation's own servers are not partners
        ("10.9.1.1", "a@fabrikam.example", PeerTls(), None, None),
    ],
)
def test_check_mail(policy, ip, sender, tls, connector, reply) -> None:
    check = check_mail(policy, ip, sender, tls)
    assert check.connector == connector
    if reply is None:
        assert check.reply is None
    else:
        assert check.reply is not None and check.reply.startswith(reply)


def test_certificate_replies_say_why(policy) -> None:
    missing = check_mail(policy, "203.0.113.5", "a@fabrikam.example", PeerTls(active=True)).reply
    wrong = check_mail(policy, "203.0.113.5", "a@fabrikam.example",
                       PeerTls(True, {"subject": ((("commonName", "x.example"),),)})).reply
    assert missing == ("550 5.7.51 Connector fabrikam requires a trusted client certificate; none was presented")
    assert wrong is not None and "mail.fabrikam.example" in wrong and "does not match" in wrong


def test_first_matching_connector_wins() -> None:
    policy = parse_policy("""
    connectors:
      inbound:
        - {name: first, sender_ips: [192.0.2.0/24]}
        - {name: second, sender_ips: [192.0.2.7], require_tls: true}
    """)
    assert check_mail(policy, "192.0.2.7", "a@x.example", PeerTls()).connector == "first"


# --- outbound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain, name",
    [
        ("partner.example", "exact"),  # exact beats the wildcard
        ("example.com", "exact"),  # exact beats accepted
        ("other.example", "hybrid"),  # accepted beats the wildcard
        ("a.partner.example", "subs"),  # *.domain before *
        ("anything.example", "wild"),
    ],
)
def test_selection_order(policy, domain, name) -> None:
    chosen = select_outbound(domain, policy)
    assert chosen is not None and chosen.name == name


def test_rule_only_never_selected_by_domain() -> None:
    policy = parse_policy("""
    connectors:
      outbound: [{name: legal, rule_only: true, recipient_domains: ["*"], smart_hosts: [legal.example]}]
    """)
    assert select_outbound("x.example", policy) is None
    assert route_for("a@x.example", policy).kind == "mx"


def test_connector_routes(policy) -> None:
    route = route_for("bob@partner.example", policy)
    assert route.name == "connector:exact" and route.kind == "smarthost"
    assert route.hosts == ["mx.partner.example"] and route.tls == "verify" and route.tls_name == "mx.partner.example"
    mx = route_for("bob@a.partner.example", policy)
    assert mx.kind == "mx" and mx.domain == "a.partner.example" and mx.tls == "verify-ca"
    assert mx.name == "connector:subs:a.partner.example"


def test_without_connectors_accepted_routes_then_mx() -> None:
    policy = parse_policy("""
    accepted_domains: [{domain: example.com, route: onprem}]
    routes: {onprem: {hosts: [mail.example.com], tls: none}}
    connectors:
      outbound: [{name: p, recipient_domains: [partner.example], smart_hosts: [mx.partner.example]}]
    """)
    assert route_for("a@example.com", policy).name == "route:onprem"
    assert route_for("a@partner.example", policy).name == "connector:p"
    assert route_for("a@else.example", policy).name == "mx:else.example"


def test_rule_forces_connector_and_tls(policy) -> None:
    envelope = Envelope(rcpt_to=["a@example.com", "b@anything.example", "c@partner.example"])
    splits = plan_routes(envelope, policy, connector="legal", require_tls=True)
    assert len(splits) == 1
    (split,) = splits
    assert split.route.name == "connector:legal" and split.route.hosts == ["legal.example"]
    assert split.route.tls == "required"
    assert split.recipients == envelope.rcpt_to
    with pytest.raises(ValueError, match="no outbound connector named 'nope'"):
        plan_routes(envelope, policy, connector="nope")


def test_require_tls_raises_every_route(policy) -> None:
    envelope = Envelope(rcpt_to=["a@example.com", "b@anything.example", "c@a.partner.example"])
    modes = {s.route.name: s.route.tls for s in plan_routes(envelope, policy, require_tls=True)}
    assert modes == {"connector:exact": "verify", "connector:wild": "required",
                     "connector:subs:a.partner.example": "verify-ca"}
    plain = parse_policy("{}")
    (split,) = plan_routes(Envelope(rcpt_to=["a@x.example"]), plain, require_tls=True)
    assert split.route.kind == "mx" and split.route.tls == "required"
    (split,) = plan_routes(Envelope(rcpt_to=["a@x.example"]), plain)
    assert split.route.tls == "opportunistic"


def test_mx_connector_splits_per_domain(policy) -> None:
    envelope = Envelope(rcpt_to=["a@a.partner.example", "b@b.partner.example", "c@a.partner.example"])
    splits = plan_routes(envelope, policy)
    assert [(s.route.domain, s.recipients) for s in splits] == [
        ("a.partner.example", ["a@a.partner.example", "c@a.partner.example"]),
        ("b.partner.example", ["b@b.partner.example"]),
    ]


def test_server_context_asks_for_client_certificates_only_with_a_ca(tmp_path) -> None:
    ca = trustme.CA()
    cert, key = write_leaf(ca.issue_cert("gw.example"), tmp_path, "gw")
    without = server_context(cert, key, None)
    assert without.verify_mode == ssl.CERT_NONE
    with_ca = server_context(cert, key, write_ca(ca, tmp_path / "ca.pem"))
    assert with_ca.verify_mode == ssl.CERT_OPTIONAL
    assert [c["subject"] for c in with_ca.get_ca_certs()] == [
        c["subject"] for c in ssl.create_default_context(cafile=str(tmp_path / "ca.pem")).get_ca_certs()
    ]  # the partner CAs alone, not the system's
