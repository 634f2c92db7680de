"""Inbound partner connectors at SMTP time (pure): which connector a session falls under, and whether
it meets the connector's TLS and client-certificate requirements.

A connector applies when the client IP is in its ``sender_ips`` or the envelope sender's domain is in
its ``sender_domains`` (either is enough, so mail claiming a partner's domain cannot dodge the
requirement by coming from elsewhere). The organisation's own servers are never held to a partner
connector. Replies:

- no TLS when the connector requires it: ``530 5.7.0 Must issue a STARTTLS command first`` (RFC 3207);
- no client certificate, or one that does not carry the configured name: ``550 5.7.51`` (EOP's code
  for a partner connector whose certificate restriction is not met; RFC 3463 class X.7, security).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

from mailmoat_ingress import replies
from mailmoat_policy import InboundConnector, Policy, domain_matches

CLIENT_CA_ENV = "MAILMOAT_TLS_CLIENT_CA"
"""PEM file of the CAs trusted to issue partner client certificates."""

@dataclass(frozen=True)
class PeerTls:
    """What the session knows about TLS: whether it is on, and the verified client certificate."""

    active: bool = False
    cert: dict[str, Any] | None = None
    """``ssl.SSLSocket.getpeercert()`` form; only a certificate that chained to a trusted CA."""


@dataclass(frozen=True)
class ConnectorCheck:
    connector: str | None = None
    """Name of the connector the session falls under, if any."""
    reply: str | None = None
    """The refusal, or None to go on."""


def peer_tls(extra: dict[str, Any] | None) -> PeerTls:
    """The session's TLS facts from aiosmtpd's ``session.ssl`` (the TLS transport's extra info)."""
    if not extra:
        return PeerTls()
    return PeerTls(active=True, cert=extra.get("peercert") or None)


def cert_names(cert: dict[str, Any] | None) -> list[str]:
    """Subject common names and DNS subject alternative names of a certificate, lower-cased."""
    if not cert:
        return []
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    return [n.lower().rstrip(".") for n in names]


def cert_matches(cert: dict[str, Any] | None, expected: str) -> bool:
    """Whether a name of the certificate is ``expected`` (``*.example.com``: any name under example.com);
    a wildcard in the certificate covers one label (``*.example.com`` carries ``mx.example.com``)."""
    expected = expected.lower().rstrip(".")
    for name in cert_names(cert):
        if domain_matches(name, expected):
            return True
        if name.startswith("*.") and not expected.startswith("*."):
            head, _, rest = expected.partition(".")
            if head and rest == name[2:]:
                return True
    return False


def find_connector(policy: Policy, client_ip: str, sender_domain: str) -> InboundConnector | None:
    """The first inbound connector the client IP or the sender domain falls under."""
    if client_ip and policy.is_internal(client_ip):
        return None
    for connector in policy.connectors.inbound:
        if connector.matches_ip(client_ip) or connector.matches_sender(sender_domain):
            return connector
    return None


def check_connector(connector: InboundConnector, tls: PeerTls) -> str | None:
    """The refusal when the session breaks the connector's requirements, else None."""
    if (connector.require_tls or connector.tls_cert_name) and not tls.active:
        return replies.STARTTLS_REQUIRED
    if connector.tls_cert_name:
        if not tls.cert:
            return replies.no_certificate(connector.name)
        if not cert_matches(tls.cert, connector.tls_cert_name):
            return replies.wrong_certificate(connector.name, connector.tls_cert_name)
    return None


def check_mail(policy: Policy, client_ip: str, sender: str, tls: PeerTls) -> ConnectorCheck:
    """At MAIL FROM: the connector of this transaction and the refusal, if its requirement is broken."""
    domain = sender.rpartition("@")[2].lower().rstrip(".") if "@" in sender else ""
    connector = find_connector(policy, client_ip, domain)
    if connector is None:
        return ConnectorCheck()
    return ConnectorCheck(connector.name, check_connector(connector, tls))


def client_ca_file() -> str | None:
    return os.environ.get(CLIENT_CA_ENV) or None


def server_context(cert: str, key: str, cafile: str | None) -> ssl.SSLContext:
    """The STARTTLS server context. With ``cafile`` it asks clients for a certificate (optional: most
    senders have none) and verifies one that is given against ``cafile`` alone."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_OPTIONAL if cafile else ssl.CERT_NONE
    return context
