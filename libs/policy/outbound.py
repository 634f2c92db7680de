"""``outbound``: egress's identity, MTA-STS, DANE and TLS reports; TLS modes compared."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailmoat_platform.models import TlsMode
from mailmoat_policy.base import StrictModel

_HOST_NAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))+$")


class OutboundIdentity(StrictModel):
    """Who egress is on a connection: the local address it binds to and the name it greets with."""

    source_address: str | None = None
    """Local IPv4 or IPv6 address outbound connections are bound to (it must be on the host)."""
    helo: str | None = None
    """Name sent in EHLO/HELO (a fully qualified host name whose A/AAAA and PTR match the address)."""

    @field_validator("source_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else str(ipaddress.ip_address(value.strip()))

    @field_validator("helo")
    @classmethod
    def _helo(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_NAME.match(value.strip()):
            raise ValueError(f"{value!r} is not a fully qualified host name")
        return None if value is None else value.strip().lower()


MtaStsHandling = Literal["published", "enforce", "testing", "off"]


class OutboundRoute(OutboundIdentity):
    """``outbound.per_route`` entry: the identity, and the MTA-STS handling of that route."""

    mta_sts: MtaStsHandling | None = None
    """None: as ``outbound.mta_sts``."""


class TlsRpt(StrictModel):
    """``outbound.tls_rpt``: daily TLS reports (RFC 8460) to the ``rua`` of each MTA-STS policy domain."""

    enabled: bool = False
    """Mail yesterday's aggregate report to each domain's ``mailto:`` rua (counting is always on)."""
    organization_name: str | None = None
    """``organization-name`` of the report (default: ``organization.name``)."""
    contact: str | None = None
    """``contact-info`` of the report (default: the sender address)."""
    sender: str | None = None
    """From and envelope sender of the report mail (default: ``tlsrpt-noreply@<organization.hostname>``)."""
    interval: int = Field(600, ge=10, le=86400)
    """Seconds between checks whether yesterday's reports are due (each domain is mailed once a day)."""


def resolver_address(value: str) -> tuple[str, int]:
    """``address``, ``address:port`` or ``[v6]:port`` → (address, port); ValueError when not an address."""
    value = value.strip()
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53"
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{value!r}: bad port")
    return str(ipaddress.ip_address(host)), int(port)


class Dane(StrictModel):
    """``outbound.dane``: DANE (RFC 7672) for MX deliveries, through a DNSSEC-validating resolver."""

    mode: Literal["off", "opportunistic"] = "off"
    """``opportunistic``: where a domain's MX records and its hosts' TLSA records validate, deliver
    only over TLS that matches them (else 4.7.5); DANE then takes precedence over MTA-STS."""
    resolver: str | None = None
    """``address`` or ``address:port`` of the validating resolver (unbound) whose AD bit is trusted;
    required unless ``mode`` is ``off``. Nothing else's AD bit is believed."""
    timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("resolver")
    @classmethod
    def _resolver(cls, value: str | None) -> str | None:
        if value is not None:
            host, port = resolver_address(value)
            value = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return value

    @model_validator(mode="after")
    def _needs_resolver(self) -> Dane:
        if self.mode != "off" and not self.resolver:
            raise ValueError("outbound.dane.resolver is required when DANE is on")
        return self


class Outbound(OutboundIdentity):
    tls: TlsMode = "opportunistic"
    mx_port: int = Field(25, ge=1, le=65535)
    """Port used for hosts found by MX lookup (25 on the internet; tests use another)."""
    mx_loopback: bool = False
    """Deliver to MX hosts whose address is loopback (127.0.0.0/8, ::1) or unspecified (0.0.0.0, ::).
    Off: such a host is this machine, not the domain's mail server; it is skipped, and a domain left with
    no other host fails with 5.4.6 (mail loops back to myself, as Postfix). On for set-ups that answer for
    a domain on loopback (tests)."""
    mta_sts: MtaStsHandling = "published"
    """MTA-STS (RFC 8461) for MX deliveries: ``published`` follows the mode a domain publishes;
    ``enforce``/``testing`` replace the published mode of a domain that has a policy; ``off`` ignores it."""
    mta_sts_port: int = Field(443, ge=1, le=65535)
    """HTTPS port the policy is fetched from (443 on the internet; tests use another)."""
    dane: Dane = Field(default_factory=Dane)
    """DANE (RFC 7672) for MX deliveries (off unless a validating resolver is named)."""
    tls_rpt: TlsRpt = Field(default_factory=TlsRpt)
    """Daily TLS reports (RFC 8460) to the recipient domains' ``rua`` addresses."""
    per_route: dict[str, OutboundRoute] = Field(default_factory=dict)
    """``source_address``/``helo`` per route, keyed as the trace names routes: ``route:NAME`` (a hybrid
    route), ``connector:NAME`` (an outbound connector), ``mx`` (MX deliveries without a connector);
    what a key leaves unset comes from ``outbound.source_address``/``helo``."""

    def identity_for(self, route_name: str) -> tuple[str | None, str | None]:
        """(source address, HELO name or None for ``organization.hostname``) of a route by its name."""
        kind, _, rest = route_name.partition(":")
        key = "mx" if kind == "mx" else f"{kind}:{rest.partition(':')[0]}"
        specific = self.per_route.get(key)
        source = specific.source_address if specific and specific.source_address else self.source_address
        helo = specific.helo if specific and specific.helo else self.helo
        return source, helo

    def mta_sts_for(self, route_name: str) -> MtaStsHandling:
        """The MTA-STS handling of a route by its name (``per_route`` key as for ``identity_for``)."""
        kind, _, rest = route_name.partition(":")
        specific = self.per_route.get("mx" if kind == "mx" else f"{kind}:{rest.partition(':')[0]}")
        return specific.mta_sts if specific and specific.mta_sts else self.mta_sts


_TLS_ORDER = ("none", "opportunistic", "required", "verify-ca", "verify")
"""TLS modes from weakest to strongest."""


def stronger_tls(mode: TlsMode, floor: TlsMode) -> TlsMode:
    """The stronger of two TLS modes."""
    return mode if _TLS_ORDER.index(mode) >= _TLS_ORDER.index(floor) else floor
