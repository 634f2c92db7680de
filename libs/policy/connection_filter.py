"""``connection_filter``: IP allow and block lists, DNSBLs, PTR and HELO checks, rate limits, greylisting, PROXY."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mailmoat_policy.base import StrictModel
from mailmoat_policy.domains import DNS_LABEL
from mailmoat_policy.networks import IpSet, parse_networks


class DnsblZone(StrictModel):
    zone: str
    """The DNS block list zone, e.g. ``zen.spamhaus.org``."""
    weight: float = 1.0
    """Score a listing adds to the connection verdict (an input for spam scoring)."""
    codes: dict[str, str] = Field(default_factory=dict)
    """Meaning of each return code (``127.0.0.2: SBL``); a code not in the map means ``listed``."""
    action: Literal["annotate", "reject"] = "annotate"

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone = value.strip().lower().rstrip(".")
        labels = zone.split(".")
        if len(zone) > 200 or len(labels) < 2 or not all(DNS_LABEL.match(label) for label in labels):
            raise ValueError(f"{value!r} is not a DNS zone name")
        return zone

    @field_validator("codes")
    @classmethod
    def _codes(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for code, meaning in value.items():
            try:
                address = ipaddress.IPv4Address(str(code).strip())
            except ValueError:
                raise ValueError(f"return code {code!r} is not an IPv4 address such as 127.0.0.2") from None
            out[str(address)] = str(meaning)
        return out


class RateLimits(StrictModel):
    """Per-client limits shared by every ingress process through Redis (0: off)."""

    connections: int = Field(0, ge=0)
    """Concurrent SMTP connections per client IP; over it ``421 4.7.0`` and close."""
    messages_per_minute: int = Field(0, ge=0)
    """Transactions (MAIL FROM) per client IP per minute; over it ``450 4.7.1``."""
    recipients_per_minute: int = Field(0, ge=0)
    """RCPT TO per client IP per minute; over it ``450 4.7.1``."""
    ipv6_prefix: int = Field(64, ge=32, le=128)
    """IPv6 clients are counted per network of this prefix length (one host usually owns a /64)."""
    connection_ttl: int = Field(120, ge=10)
    """Seconds a connection slot lives in Redis unless its process refreshes it (a dead process leaks none)."""
    redis_timeout: float = Field(0.5, gt=0)
    """Seconds per Redis call; slower or unreachable Redis lets the client through (fail open, logged, counted)."""


class Greylisting(StrictModel):
    """Defer the first attempt of an unknown (client network, sender, recipient) triple at RCPT TO."""

    enabled: bool = False
    delay: int = Field(300, ge=1)
    """Seconds before a retry of the same triple is accepted."""
    retry_window: int = Field(86_400, ge=60)
    """Seconds a deferred triple waits for its retry; later, it starts over."""
    whitelist_ttl: int = Field(3_110_400, ge=60)
    """Seconds a triple that passed stays accepted without delay (36 days), renewed by each pass."""
    ipv4_prefix: int = Field(24, ge=8, le=32)
    ipv6_prefix: int = Field(64, ge=32, le=128)


class ProxyProtocol(StrictModel):
    """PROXY protocol v1/v2 from trusted load balancers: the client address every check sees."""

    trusted_networks: list[str] = Field(default_factory=list)
    """Peers that must send a PROXY header first (without one the connection is dropped); a header
    from any other peer is refused with ``421 4.7.0``."""
    timeout: float = Field(5, gt=0)
    """Seconds a trusted peer has to send its header."""
    _trusted: IpSet = PrivateAttr(default_factory=IpSet)

    @field_validator("trusted_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str]:
        return parse_networks(value)

    @model_validator(mode="after")
    def _sets(self) -> ProxyProtocol:
        self._trusted = IpSet.of(self.trusted_networks)
        return self

    def trusted(self, ip: str) -> bool:
        return ip in self._trusted


class ConnectionFilter(StrictModel):
    ip_allow: list[str] = Field(default_factory=list)
    """Clients whose mail is marked allow-listed (IPV:CAL, SCL -1); takes precedence over ip_block."""
    ip_block: list[str] = Field(default_factory=list)
    """Clients refused at connection time with ``550 5.7.513``."""
    dnsbl: list[DnsblZone] = Field(default_factory=list)
    ptr: bool = True
    """Look up the client's PTR name and confirm it forward (FCrDNS)."""
    helo: bool = True
    """Check the HELO/EHLO name: syntax, address literal against the client IP, name against the PTR."""
    timeout: float | None = Field(None, gt=0)
    """Seconds per DNS look-up of this stage (default: ``dns.timeout``)."""
    cache_ttl: int = Field(300, ge=0)
    """Seconds a look-up result is kept in each process's cache (0: no cache)."""
    at_smtp: bool = False
    """Ingress runs the connection filter itself during the SMTP session (its look-ups start at MAIL FROM)
    and the message skips the stage's broker hop; a ``reject`` verdict is refused at the end of DATA. A
    message whose look-ups are not done within a few seconds goes through the stage as usual."""
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    greylisting: Greylisting = Field(default_factory=Greylisting)
    proxy_protocol: ProxyProtocol = Field(default_factory=ProxyProtocol)
    _allow: IpSet = PrivateAttr(default_factory=IpSet)
    _block: IpSet = PrivateAttr(default_factory=IpSet)

    @field_validator("ip_allow", "ip_block", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str]:
        return parse_networks(value)

    @field_validator("dnsbl")
    @classmethod
    def _unique_zones(cls, value: list[DnsblZone]) -> list[DnsblZone]:
        seen: set[str] = set()
        for entry in value:
            if entry.zone in seen:
                raise ValueError(f"zone {entry.zone!r} is listed twice")
            seen.add(entry.zone)
        return value

    @model_validator(mode="after")
    def _sets(self) -> ConnectionFilter:
        self._allow = IpSet.of(self.ip_allow)
        self._block = IpSet.of(self.ip_block)
        return self

    def allow_also(self, networks: Iterable[str]) -> None:
        """Put more networks on the allow list besides ``ip_allow`` (which stays as written): the policy
        adds its partner connectors' ``sender_ips`` (``allow_list: true``)."""
        extra = list(networks)
        if extra:
            self._allow = IpSet.of([*self.ip_allow, *extra])

    def allowed(self, ip: str) -> bool:
        """On the IP allow list."""
        return ip in self._allow

    def blocked(self, ip: str) -> bool:
        """On the IP block list and not on the allow list (the allow list takes precedence)."""
        return ip in self._block and ip not in self._allow
