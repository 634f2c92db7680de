"""``connectors``: partners' inbound servers and outbound deliveries with their own hosts and TLS."""

from __future__ import annotations

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mailmoat_platform.models import TlsMode
from mailmoat_policy.base import StrictModel
from mailmoat_policy.domains import domain_matches, domain_patterns
from mailmoat_policy.networks import IpSet, parse_networks


class InboundConnector(StrictModel):
    """A partner's servers: identified by sender domain or client IP, held to TLS requirements at SMTP."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    sender_domains: list[str] = Field(default_factory=list)
    """Envelope sender domains (``example.com`` or ``*.example.com``) that identify the partner."""
    sender_ips: list[str] = Field(default_factory=list)
    """Client addresses or CIDR networks that identify the partner."""
    require_tls: bool = False
    """The partner must use STARTTLS before MAIL FROM (``530 5.7.0`` otherwise)."""
    tls_cert_name: str | None = None
    """The partner must present a client certificate, trusted by the ingress client CA file, whose
    subject CN or a DNS SAN is this name (``*.example.com``: any name under it); implies require_tls."""
    allow_list: bool = False
    """Put ``sender_ips`` on the IP allow list (``IPV:CAL``, SCL -1), as ``connection_filter.ip_allow``."""
    _ips: IpSet = PrivateAttr(default_factory=IpSet)

    @field_validator("sender_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> list[str]:
        return domain_patterns(value, allow_special=False)

    @field_validator("sender_ips", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str]:
        return parse_networks(value)

    @field_validator("tls_cert_name")
    @classmethod
    def _cert_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return domain_patterns([value], allow_special=False)[0]

    @model_validator(mode="after")
    def _identified(self) -> InboundConnector:
        if not self.sender_domains and not self.sender_ips:
            raise ValueError(f"connector {self.name!r}: needs sender_domains or sender_ips")
        if self.allow_list and not self.sender_ips:
            raise ValueError(f"connector {self.name!r}: allow_list needs sender_ips")
        self._ips = IpSet.of(self.sender_ips)
        return self

    def matches_ip(self, ip: str) -> bool:
        return bool(ip) and ip in self._ips

    def matches_sender(self, domain: str) -> bool:
        return bool(domain) and any(domain_matches(domain, p) for p in self.sender_domains)


class OutboundConnector(StrictModel):
    """Delivery to partners or to the organisation's servers with its own hosts and TLS requirement."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    recipient_domains: list[str] = Field(default_factory=list)
    """Domains it takes: ``example.com``, ``*.example.com``, ``*`` (every domain) or ``accepted``
    (every accepted domain)."""
    rule_only: bool = False
    """Used only when a mail-flow rule routes a message through it (``recipient_domains`` ignored)."""
    smart_hosts: list[str] = Field(default_factory=list)
    """``host`` or ``host:port`` in preference order; empty: the recipient domain's MX."""
    tls: TlsMode = "opportunistic"
    tls_name: str | None = None
    """Name the server certificate must carry under ``verify`` (default: the host connected to)."""

    @field_validator("recipient_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> list[str]:
        return domain_patterns(value, allow_special=True)

    @model_validator(mode="after")
    def _scoped(self) -> OutboundConnector:
        if not self.rule_only and not self.recipient_domains:
            raise ValueError(f"connector {self.name!r}: needs recipient_domains or rule_only: true")
        return self


class Connectors(StrictModel):
    inbound: list[InboundConnector] = Field(default_factory=list)
    outbound: list[OutboundConnector] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Connectors:
        for kind, items in (("inbound", self.inbound), ("outbound", self.outbound)):
            names = [c.name for c in items]
            for name in names:
                if names.count(name) > 1:
                    raise ValueError(f"{kind}: connector name {name!r} is used twice")
        return self

    def outbound_named(self, name: str) -> OutboundConnector | None:
        return next((c for c in self.outbound if c.name == name), None)
