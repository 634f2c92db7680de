"""The policy: one YAML file, validated at load, hot-reloaded; a bad edit keeps the last good policy."""

from __future__ import annotations

import asyncio
import bisect
import functools
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from mailmoat_platform.models import TlsMode

log = logging.getLogger(__name__)

MAX_LINE_OCTETS = 998
"""Longest line of a message, in octets without CRLF (RFC 5322 2.1.1; RFC 5321 4.5.3.1.6: 1000 with
the CRLF, not counting a dot doubled for transparency)."""

FILTER_STAGES = ("connection_filter", "antivirus", "antispam")
"""Stages that may stand between ingress and routing, in the order the itinerary lists them."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Organization(_Strict):
    name: str = "mailmoat"
    hostname: str = "mailmoat.localdomain"
    """Name the gateway gives itself in banners, Received headers and DSNs."""
    internal_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)
    """The organisation's own mail servers: the only clients allowed to relay to other domains."""

    @field_validator("internal_networks", mode="before")
    @classmethod
    def _networks(cls, value: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(str(v), strict=False) for v in value or []]


class AcceptedDomain(_Strict):
    domain: str
    type: Literal["authoritative", "internal_relay"] = "authoritative"
    dbeb: bool = False
    """Directory-based edge blocking: refuse recipients not in the directory (authoritative only)."""
    route: str | None = None
    """Name of the hybrid route (smart hosts) that takes this domain's mail; None → MX."""

    @field_validator("domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower().rstrip(".")


class RouteConfig(_Strict):
    hosts: list[str] = Field(min_length=1)
    tls: TlsMode = "opportunistic"
    tls_name: str | None = None


_HOST_NAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))+$")


class OutboundIdentity(_Strict):
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


class TlsRpt(_Strict):
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


class Dane(_Strict):
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


_SELECTOR = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*$")


class DkimKey(_Strict):
    """One signing key of a domain: ``<selector>._domainkey.<domain>`` publishes its public half."""

    selector: str
    key_file: str
    """PEM private key (``mailmoat dkim keygen`` writes one; a k8s Secret can mount it)."""
    algorithm: Literal["rsa", "ed25519"] = "rsa"
    """``rsa`` (rsa-sha256, RFC 6376) or ``ed25519`` (ed25519-sha256, RFC 8463)."""

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not _SELECTOR.match(value):
            raise ValueError(f"{value!r} is not a DKIM selector (DNS labels)")
        return value.lower()


class DkimDomain(_Strict):
    domain: str
    """An accepted domain: mail whose From is at this domain is signed with every key listed."""
    keys: list[DkimKey] = Field(min_length=1)

    @field_validator("domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower().rstrip(".")

    @model_validator(mode="after")
    def _distinct(self) -> DkimDomain:
        selectors = [k.selector for k in self.keys]
        if len(set(selectors)) != len(selectors):
            raise ValueError(f"{self.domain}: a selector is listed twice")
        return self


class Dkim(_Strict):
    """DKIM signing of the organisation's outbound mail (docs/policy.md, ``dkim``)."""

    domains: list[DkimDomain] = Field(default_factory=list)

    def keys_for(self, domain: str) -> list[DkimKey]:
        domain = domain.lower().rstrip(".")
        return next((d.keys for d in self.domains if d.domain == domain), [])


class Arc(_Strict):
    """ARC sealing (RFC 8617) of inbound mail the gateway changed or forwards (docs/policy.md, ``arc``)."""

    domain: str | None = None
    selector: str | None = None
    key_file: str | None = None
    """PEM RSA private key (dkimpy seals with rsa-sha256 only)."""

    @model_validator(mode="after")
    def _complete(self) -> Arc:
        given = [v is not None for v in (self.domain, self.selector, self.key_file)]
        if any(given) and not all(given):
            raise ValueError("arc needs domain, selector and key_file together")
        if self.domain is not None:
            self.domain = self.domain.strip().lower().rstrip(".")
        if self.selector is not None and not _SELECTOR.match(self.selector):
            raise ValueError(f"{self.selector!r} is not a DKIM selector (DNS labels)")
        return self

    @property
    def enabled(self) -> bool:
        return self.key_file is not None


class Srs(_Strict):
    """Sender Rewriting Scheme for outside senders' mail forwarded to outside recipients (``srs``)."""

    domain: str | None = None
    """The domain of the rewritten senders (``SRS0=...@domain``); its bounces come back to the gateway."""
    secret_file: str | None = None
    """Secrets, one per line: the first signs, every one verifies (rotation)."""
    max_age_days: int = Field(21, ge=1, le=1000)
    """Days an SRS address is accepted back (postsrsd: 21)."""

    @model_validator(mode="after")
    def _complete(self) -> Srs:
        if (self.domain is None) != (self.secret_file is None):
            raise ValueError("srs needs domain and secret_file together")
        if self.domain is not None:
            self.domain = self.domain.strip().lower().rstrip(".")
        return self

    @property
    def enabled(self) -> bool:
        return self.domain is not None


class Limits(_Strict):
    max_message_size: int = Field(36_700_160, ge=1024)
    max_recipients: int = Field(500, ge=1)
    max_header_size: int = Field(262_144, ge=1024)
    max_line_length: int = Field(MAX_LINE_OCTETS, ge=78)
    """Longest content line accepted, in octets without CRLF; at most 998 (RFC 5322 2.1.1, RFC 5321
    4.5.3.1.6): what ingress accepts, every next hop must take (docs/decisions/006-line-length.md)."""
    max_commands: int = Field(1_000, ge=10)
    max_received_headers: int = Field(20, ge=1)
    max_sessions: int = Field(200, ge=1)
    """Concurrent SMTP sessions per ingress process; the next one gets 421."""

    @field_validator("max_line_length")
    @classmethod
    def _deliverable_lines(cls, value: int) -> int:
        if value > MAX_LINE_OCTETS:
            raise ValueError(
                f"at most {MAX_LINE_OCTETS} octets (RFC 5322 2.1.1): next hops refuse longer lines, and a "
                "message accepted with them would bounce later (docs/decisions/006-line-length.md)")
        return value


class Delivery(_Strict):
    retry_delays: list[int] = Field(default_factory=lambda: [60, 300, 900, 1800, 3600], min_length=1)
    """Seconds between delivery attempts; the last repeats until the message expires."""
    expire_after: int = Field(172_800, ge=1)
    """Seconds after the first attempt at which a deferred message fails with 4.4.7."""
    connect_timeout: float = Field(30, gt=0)
    command_timeout: float = Field(120, gt=0)


class Dns(_Strict):
    nameservers: list[str] = Field(default_factory=list)
    """Resolver addresses; empty uses the system's resolv.conf."""
    port: int = Field(53, ge=1, le=65535)
    timeout: float = Field(5, gt=0)


class Trace(_Strict):
    retention_days: int = Field(90, ge=1)



@functools.lru_cache(maxsize=4096)
def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client IP as an address (an IPv4-mapped IPv6 address becomes IPv4); None when not an IP.
    Cached: the same few clients connect again and again, and every check asks."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class IpSet:
    """A set of IPv4/IPv6 networks with O(log n) membership: merged integer ranges, searched by bisect.

    Any number of entries and any prefix length; overlapping and adjacent networks are merged.
    """

    def __init__(self, ranges: Iterable[tuple[int, int, int]] = ()):
        """From ``(version, first, last)`` integer ranges (see ``parse_range``)."""
        by_version: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for version, first, last in ranges:
            by_version[version].append((first, last))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, items in by_version.items():
            items.sort()
            starts: list[int] = []
            ends: list[int] = []
            for first, last in items:
                if ends and first <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], last)
                else:
                    starts.append(first)
                    ends.append(last)
            self._starts[version] = starts
            self._ends[version] = ends

    @classmethod
    def of(cls, networks: Iterable[str]) -> IpSet:
        return cls(parse_range(n) for n in networks)

    def __len__(self) -> int:
        """Number of disjoint ranges after merging."""
        return len(self._starts[4]) + len(self._starts[6])

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, str):
            address = client_address(ip)
        elif isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            address = ip
        else:
            return False
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        value = int(address)
        starts = self._starts[address.version]
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= self._ends[address.version][index]


_OCTET = re.compile(r"\A(?:0|[1-9][0-9]{0,2})\Z")


def parse_range(text: str) -> tuple[int, int, int]:
    """``(version, first, last)`` of an address or CIDR network (host bits ignored); ValueError if neither.

    Dotted-quad IPv4 takes a fast path (block lists can hold very many entries).
    """
    addr, slash, plen = text.strip().partition("/")
    parts = addr.split(".")
    if len(parts) == 4 and all(_OCTET.match(p) for p in parts):
        octets = [int(p) for p in parts]
        prefix = int(plen) if plen.isdigit() and plen.isascii() and len(plen) <= 2 else (-1 if slash else 32)
        if max(octets) <= 255 and 0 <= prefix <= 32:
            value = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
            host = (1 << (32 - prefix)) - 1
            return 4, value & ~host, (value & ~host) | host
        raise ValueError(text)
    net = ipaddress.ip_network(text.strip(), strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _parse_networks(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("must be a list of IP addresses or CIDR networks")
    out: list[str] = []
    for index, item in enumerate(value):
        text = str(item).strip()
        try:
            parse_range(text)
        except ValueError:
            raise ValueError(f"entry {index}: {item!r} is not an IPv4 or IPv6 address or CIDR network") from None
        out.append(text)
    return out


_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class DnsblZone(_Strict):
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
        if len(zone) > 200 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
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


class RateLimits(_Strict):
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


class Greylisting(_Strict):
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


class ProxyProtocol(_Strict):
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
        return _parse_networks(value)

    @model_validator(mode="after")
    def _sets(self) -> ProxyProtocol:
        self._trusted = IpSet.of(self.trusted_networks)
        return self

    def trusted(self, ip: str) -> bool:
        return ip in self._trusted


class ConnectionFilter(_Strict):
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
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    greylisting: Greylisting = Field(default_factory=Greylisting)
    proxy_protocol: ProxyProtocol = Field(default_factory=ProxyProtocol)
    _allow: IpSet = PrivateAttr(default_factory=IpSet)
    _block: IpSet = PrivateAttr(default_factory=IpSet)

    @field_validator("ip_allow", "ip_block", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str]:
        return _parse_networks(value)

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

    def allowed(self, ip: str) -> bool:
        """On the IP allow list."""
        return ip in self._allow

    def blocked(self, ip: str) -> bool:
        """On the IP block list and not on the allow list (the allow list takes precedence)."""
        return ip in self._block and ip not in self._allow


COMMON_ATTACHMENT_TYPES = (
    "ace", "apk", "app", "appx", "ani", "arj", "bat", "cab", "cmd", "com", "deb", "dex", "dll", "docm", "elf",
    "exe", "hta", "img", "iso", "jar", "jnlp", "kext", "lha", "lib", "library", "lnk", "lzh", "macho", "msc",
    "msi", "msix", "msp", "mst", "pif", "ppa", "ppam", "reg", "rev", "scf", "scr", "sct", "sys", "uif", "vb",
    "vbe", "vbs", "vxd", "wsc", "wsf", "wsh", "xll", "xz", "z",
)
"""EOP's default common attachment filter: file types blocked by extension and by true type."""


class ArchiveLimits(_Strict):
    max_depth: int = Field(5, ge=1, le=50)
    """Archives nested deeper than this (a zip in a zip ... ) are an archive bomb."""
    max_members: int = Field(1_000, ge=1)
    """Members of all archives of one attachment together."""
    max_total_size: int = Field(104_857_600, ge=1024)
    """Bytes all members of one attachment expand to, together."""
    max_ratio: int = Field(100, ge=2)
    """Expanded size over compressed size of a member (checked for members above ``min_ratio_size``)."""
    min_ratio_size: int = Field(1_048_576, ge=0)
    """Members that expand to less than this are not held to ``max_ratio``."""


class Antimalware(_Strict):
    clamd: str = "127.0.0.1:3310"
    """The clamd to scan with: ``host:port``, ``tcp://host:port``, ``unix:/path`` or ``/path`` (a unix
    socket); the environment variable ``MAILMOAT_CLAMD_ADDRESS`` overrides it."""
    connect_timeout: float = Field(5, gt=0)
    scan_timeout: float = Field(60, gt=0)
    """Seconds for one scan (send and verdict) before clamd counts as unavailable."""
    max_connections: int = Field(8, ge=1, le=256)
    """Concurrent clamd connections per process."""
    stream_max_length: int = Field(26_214_400, ge=1024)
    """Bytes sent to clamd in one scan; keep it at or below clamd's ``StreamMaxLength``. A message
    above it is scanned part by part; a single part above it is ``unscannable``."""
    file_filter: bool = True
    """The common attachment filter: block ``file_types`` by extension and by true type."""
    file_types: list[str] = Field(default_factory=lambda: list(COMMON_ATTACHMENT_TYPES))
    archives: ArchiveLimits = Field(default_factory=ArchiveLimits)
    encrypted: Literal["allow", "block"] = "block"
    """Encrypted archives (which no engine can look into)."""
    unscannable: Literal["allow", "block"] = "block"
    """Parts clamd could not scan (above ``stream_max_length``, engine error)."""
    macros: Literal["allow", "block"] = "block"
    """Office documents with macros (VBA, VBA stomping, Excel 4.0/XLM macro sheets; oletools), also in archives."""
    fail_open: bool = False
    """clamd unreachable or timing out: ``false`` retries the message later (never passed on
    unscanned); ``true`` passes it on unscanned, with a trace event."""
    action: Literal["quarantine", "reject", "strip"] = "quarantine"
    """What routing does with a message whose verdict is not clean."""

    @field_validator("file_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            name = item.strip().lower().lstrip(".")
            if not name or not re.fullmatch(r"[a-z0-9_-]{1,16}", name):
                raise ValueError(f"{item!r} is not a file type name such as exe")
            if name not in out:
                out.append(name)
        return out


SpamCategory = Literal["hcphish", "phish", "hcspam", "spoof", "spam", "bulk"]
"""Antispam verdict categories, strongest first (malware, from the antivirus stage, outranks them all)."""

SpamAction = Literal["deliver", "junk", "prepend_subject", "redirect", "quarantine", "delete", "reject"]
"""What routing does with a message of a category: deliver untouched; deliver with the junk headers
(the mailbox server files it as junk); prepend ``subject_prefix`` to its Subject; redirect it to
``redirect_to``; quarantine it; delete it (traced); reject it with an NDR (DMARC reject only: spam is
never bounced to its forged sender)."""


class SpamActions(_Strict):
    spam: SpamAction = "junk"
    hcspam: SpamAction = "quarantine"
    phish: SpamAction = "quarantine"
    hcphish: SpamAction = "quarantine"
    spoof: SpamAction = "quarantine"
    bulk: SpamAction = "junk"
    dmarc_reject: SpamAction = "reject"
    """A sender domain whose DMARC policy is ``p=reject`` failed DMARC (answer ``5.7.509``)."""
    dmarc_quarantine: SpamAction = "quarantine"
    """A sender domain whose DMARC policy is ``p=quarantine`` failed DMARC."""
    error: SpamAction = "deliver"
    """The antispam stage failed on the message (verdict ``error``, traced with the error): deliver it
    unfiltered by default, as a milter's ``accept`` default action does; ``junk`` or ``quarantine``
    to hold such mail instead (never ``reject``: the sender did nothing wrong)."""

    @model_validator(mode="after")
    def _no_backscatter(self) -> SpamActions:
        for name in ("spam", "hcspam", "phish", "hcphish", "spoof", "bulk", "error"):
            if getattr(self, name) == "reject":
                raise ValueError(f"{name}: reject is not allowed (spam is never bounced to its forged sender)")
        return self


AsfMode = Literal["off", "on", "test"]
"""An advanced spam filter check: off; on (a hit makes the message spam, SCL 9 for the marked-as-spam
checks); test (a hit only adds an ``X-CustomSpam:`` header)."""


class SpamRule(_Strict):
    """A content rule: where to look, a regex or a phrase, and the score a hit adds."""

    name: str
    """Shown in the report header (letters, digits, ``_``, ``.``, ``-``)."""
    where: str = "body"
    """``subject``, ``body`` (decoded text of every text part, HTML as text), ``url`` (each URL found),
    or ``header:<Name>`` (each field of that name, unfolded)."""
    regex: str | None = None
    """A Python regular expression, searched case-insensitively."""
    phrase: str | None = None
    """Plain text, matched case-insensitively as whole words."""
    score: float = 1.0
    category: Literal["phish", "hcphish"] | None = None
    """A hit also puts the message in this category (phishing is found by rules, not by score)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ValueError(f"{value!r} is not a rule name (letters, digits, _ . -)")
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: str) -> str:
        if value in ("subject", "body", "url"):
            return value
        kind, _, name = value.partition(":")
        if kind != "header" or not re.fullmatch(r"[!-9;-~]{1,76}", name):
            raise ValueError(f"{value!r}: where is subject, body, url or header:<Name>")
        return f"header:{name.lower()}"

    @model_validator(mode="after")
    def _one_pattern(self) -> SpamRule:
        if (self.regex is None) == (self.phrase is None):
            raise ValueError(f"rule {self.name!r}: give exactly one of regex or phrase")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"rule {self.name!r}: bad regex: {exc}") from None
        return self


class UriblZone(_Strict):
    zone: str
    """A URI block list zone (SURBL/DBL style): the URL's host name (and registered domain) is asked
    as ``<name>.<zone>``; a 127.0.0.x answer other than 127.255.255.x is a listing."""
    score: float = 4.0


class AdvancedSpamFilter(_Strict):
    """EOP's advanced spam filter options, each ``off``, ``on`` or ``test``."""

    empty_message: AsfMode = "off"
    javascript: AsfMode = "off"
    form_tags: AsfMode = "off"
    frame_tags: AsfMode = "off"
    object_tags: AsfMode = "off"
    embed_tags: AsfMode = "off"
    web_bugs: AsfMode = "off"
    image_links_remote: AsfMode = "off"
    numeric_ip_url: AsfMode = "off"
    url_other_port: AsfMode = "off"
    biz_info_url: AsfMode = "off"
    sensitive_words: AsfMode = "off"
    spf_hard_fail: AsfMode = "off"
    ndr_backscatter: AsfMode = "off"
    sensitive_word_list: list[str] = Field(default_factory=lambda: ["viagra", "cialis", "xxx", "porn", "casino"])
    """Words the ``sensitive_words`` check looks for (whole words, any case)."""

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """YAML reads a bare ``on``/``off`` as true/false."""
        if value is True:
            return "on"
        if value is False:
            return "off"
        return value


class Bayes(_Strict):
    enabled: bool = True
    min_spam: int = Field(200, ge=1)
    """Spam messages that must have been learned before the classifier counts."""
    min_ham: int = Field(200, ge=1)
    """Ham messages that must have been learned before the classifier counts."""
    spam_score: float = 6.0
    """Score added when the spam probability is at or above 0.99 and ``spam_cutoff`` (5/6 of it, spam on its
    own at the default ``spam_score`` of 5, from ``spam_cutoff``)."""
    spam_cutoff: float = Field(0.9, gt=0.5, lt=1.0)
    """Spam probability from which the classifier alone makes a message spam (SpamBayes' default, 0.90)."""
    ham_score: float = -2.0
    """Score added when the spam probability is at or below 0.01."""
    key_prefix: str = "mailmoat:bayes"
    """Redis key prefix of the token store."""


class SpamEngines(_Strict):
    rspamd_url: str | None = None
    """Rspamd's controller or normal worker, e.g. ``http://127.0.0.1:11333`` (``/checkv2`` is asked)."""
    spamd: str | None = None
    """SpamAssassin's spamd as ``host:port`` (SPAMC protocol)."""
    timeout: float = Field(5, gt=0)
    """Seconds an engine may take; an engine that is down or slow is skipped, never waited on."""
    weight: float = 1.0
    """Factor applied to an engine's score before it is added to ours."""


class ProtectedUser(_Strict):
    name: str = Field(min_length=1, max_length=200)
    """The display name the user's mail carries (compared case- and space-insensitively)."""
    address: str = Field(min_length=3)
    """The user's own address: mail from it (authenticated) is not impersonation."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip().lower()
        if value.count("@") != 1 or not all(value.split("@")):
            raise ValueError(f"{value!r} is not an address")
        return value


class Impersonation(_Strict):
    """EOP's anti-phishing impersonation protection: mail from outside whose display name claims a
    protected user or domain is ``phish`` (docs/policy.md, "Impersonation")."""

    protected_users: list[ProtectedUser] = Field(default_factory=list)
    protected_domains: list[str] = Field(default_factory=list)
    """Domains whose name in a display name, on mail not from that domain, is impersonation."""
    include_accepted_domains: bool = True
    """The accepted domains are protected too (EOP's "include domains I own")."""
    address_in_name: bool = True
    """A real address of another organisational domain in the display name: ``phish`` when its domain is
    ours or protected, or when the name is exactly that address and its domain publishes DMARC
    quarantine/reject; otherwise the scored rule ``FROM_NAME_ADDRESS``."""

    @field_validator("protected_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value if d.strip()]


class Antispam(_Strict):
    authserv_id: str | None = None
    """The authserv-id of the ``Authentication-Results`` header (default: ``organization.hostname``)."""
    trusted_arc_sealers: list[str] = Field(default_factory=list)
    """ARC sealer domains (and their subdomains) whose valid chain reporting ``dmarc=pass`` overrides a DMARC
    failure (as EOP's compauth reason 130): mailing lists and forwarders the organisation trusts."""
    spf_timeout: float = Field(20, gt=0)
    """Seconds one SPF evaluation may take in all (RFC 7208 4.6.4); past it the result is ``temperror``."""
    author_check: Literal["reject", "evaluate"] = "reject"
    """Mail from outside whose From is not exactly one mailbox that parses (RFC 5322 3.6): ``reject`` at
    the end of DATA (``550 5.7.512``), or ``evaluate`` every author domain, the strictest DMARC outcome
    applied."""
    impersonation: Impersonation = Field(default_factory=Impersonation)

    @field_validator("trusted_arc_sealers")
    @classmethod
    def _sealer_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value]

    bulk_threshold: int = Field(7, ge=1, le=9)
    """A bulk complaint level (BCL) at or over this makes the message bulk (SCL 6)."""
    actions: SpamActions = Field(default_factory=SpamActions)
    subject_prefix: str = "[SPAM] "
    """Text ``prepend_subject`` puts before the Subject."""
    redirect_to: str | None = None
    """Address ``redirect`` sends the message to instead of its recipients."""
    spam_score: float = 5.0
    """A total score at or over this is spam (SCL 5, SCL 6 from 1.5 times it)."""
    hcspam_score: float = 10.0
    """A total score at or over this is high-confidence spam (SCL 7, up to 9 at twice it)."""
    rules: list[SpamRule] = Field(default_factory=list)
    allowed_senders: list[str] = Field(default_factory=list)
    """Sender addresses (envelope or From:) whose mail skips spam filtering (SCL -1)."""
    allowed_domains: list[str] = Field(default_factory=list)
    blocked_senders: list[str] = Field(default_factory=list)
    """Sender addresses whose mail is always spam (SCL 9); the allowed lists take precedence."""
    blocked_domains: list[str] = Field(default_factory=list)
    bulk_senders: list[str] = Field(default_factory=list)
    """Domains (and their subdomains) known to send bulk mail: BCL at least ``bulk_sender_bcl``."""
    bulk_sender_bcl: int = Field(7, ge=0, le=9)
    uribl: list[UriblZone] = Field(default_factory=list)
    uribl_timeout: float = Field(2, gt=0)
    """Seconds per URI block list look-up; a look-up that fails is skipped."""
    max_urls: int = Field(20, ge=0)
    """Distinct URL host names asked of the URI block lists per message."""
    dnsbl_factor: float = 1.5
    """Factor applied to the connection filter's ``dnsbl_score`` (sum of listed zones' weights)."""
    advanced: AdvancedSpamFilter = Field(default_factory=AdvancedSpamFilter)
    bayes: Bayes = Field(default_factory=Bayes)
    engines: SpamEngines = Field(default_factory=SpamEngines)

    @field_validator("allowed_senders", "blocked_senders", "allowed_domains", "blocked_domains", "bulk_senders")
    @classmethod
    def _lower_list(cls, value: list[str]) -> list[str]:
        return [v.strip().lower().rstrip(".") for v in value]

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, value: list[SpamRule]) -> list[SpamRule]:
        names = [r.name for r in value]
        if len(set(names)) != len(names):
            raise ValueError("a rule name is used twice")
        return value

    @model_validator(mode="after")
    def _redirect_target(self) -> Antispam:
        uses = [k for k, v in self.actions.model_dump().items() if v == "redirect"]
        if uses and not self.redirect_to:
            raise ValueError(f"actions {', '.join(uses)} redirect, but redirect_to is not set")
        return self


class QuarantineRetention(_Strict):
    default_days: int = Field(30, ge=1, le=365)
    spam_days: int = Field(30, ge=1, le=30)
    """Retention of spam, bulk and spoof quarantined by the antispam verdict (1-30 days, as EOP)."""


class Quarantine(_Strict):
    retention: QuarantineRetention = Field(default_factory=QuarantineRetention)
    release_by: dict[str, Literal["admin", "user"]] = Field(
        default_factory=lambda: {"malware": "admin", "hcphish": "admin"}
    )
    """Who may release a message held for a reason (a verdict category or ``rule``); a reason not
    listed may be released by recipients (``user``). Malware is released by administrators only."""
    admin_notify: str | None = None
    """Address told about every message quarantined for malware (``None``: nobody)."""


class Pipeline(_Strict):
    filters: list[str] = Field(default_factory=list)
    """Filter stages between ingress and routing, in order."""
    route_at_ingress: bool = True
    """With no filter stages and no mail-flow rules, ingress runs the routing step in its own process
    (``False``: every message takes the hop through the routing stage)."""

    @field_validator("filters")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in FILTER_STAGES:
                raise ValueError(f"unknown filter stage {name!r} (known: {', '.join(FILTER_STAGES)})")
        if len(set(value)) != len(value):
            raise ValueError("a filter stage is listed twice")
        return value

    def itinerary(self) -> list[str]:
        return [*self.filters, "routing", "egress"]


_TLS_ORDER = ("none", "opportunistic", "required", "verify-ca", "verify")
"""TLS modes from weakest to strongest."""


def stronger_tls(mode: TlsMode, floor: TlsMode) -> TlsMode:
    """The stronger of two TLS modes."""
    return mode if _TLS_ORDER.index(mode) >= _TLS_ORDER.index(floor) else floor


def _domain_patterns(value: list[str], *, allow_special: bool) -> list[str]:
    out = []
    for item in value:
        text = str(item).strip().lower().rstrip(".")
        if allow_special and text in ("*", "accepted"):
            pass
        else:
            name = text[2:] if text.startswith("*.") else text
            labels = name.split(".")
            if not name or not all(_LABEL.match(label) for label in labels):
                raise ValueError(f"{item!r} is not a domain or *.domain pattern")
        if text not in out:
            out.append(text)
    return out


def domain_matches(domain: str, pattern: str) -> bool:
    """``domain`` against ``example.com`` (exact) or ``*.example.com`` (any subdomain of it)."""
    domain = domain.lower().rstrip(".")
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


class InboundConnector(_Strict):
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
        if not isinstance(value, list):
            raise ValueError("must be a list of domains")
        return _domain_patterns(value, allow_special=False)

    @field_validator("sender_ips", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str]:
        return _parse_networks(value)

    @field_validator("tls_cert_name")
    @classmethod
    def _cert_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _domain_patterns([value], allow_special=False)[0]

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


class OutboundConnector(_Strict):
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
        if not isinstance(value, list):
            raise ValueError("must be a list of domains")
        return _domain_patterns(value, allow_special=True)

    @model_validator(mode="after")
    def _scoped(self) -> OutboundConnector:
        if not self.rule_only and not self.recipient_domains:
            raise ValueError(f"connector {self.name!r}: needs recipient_domains or rule_only: true")
        return self


class Connectors(_Strict):
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


# --- mail-flow rules ------------------------------------------------------------------------------

RULE_VERDICTS = (
    "malware", "archive-bomb", "blocked-type", "encrypted", "unscannable",
    "hcphish", "phish", "hcspam", "spoof", "spam", "bulk", "dmarc_reject", "dmarc_quarantine",
    "ip_allow", "dnsbl", "ip_block",
)
"""Names the ``verdict`` rule condition knows (see docs/policy.md, ``rules``)."""

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_PROTECTED_HEADERS = ("x-mailmoat-", "received", "content-", "mime-version")
_ENHANCED_CODE = re.compile(r"^5\.7\.(?:1|9\d\d)$")


def _rule_values(value: list[str], what: str) -> list[str]:
    out = []
    for item in value:
        text = str(item).strip().lower()
        if not text:
            raise ValueError(f"an empty {what}")
        if text not in out:
            out.append(text)
    if not out:
        raise ValueError("must list at least one value")
    return out


def _header_name(name: str, *, writable: bool) -> str:
    name = str(name).strip()
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a header field name")
    if writable and name.lower().startswith(_PROTECTED_HEADERS):
        raise ValueError(f"{name!r}: rules may not set or remove Received, Content-*, MIME-Version or X-Mailmoat-*")
    return name


def _regexes(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("must list at least one pattern")
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {pattern!r}: {exc}") from None
    return value


def _one_line(text: str, what: str, limit: int) -> str:
    if "\r" in text or "\n" in text or len(text) > limit:
        raise ValueError(f"{what} must be one line of at most {limit} characters")
    return text


class _HeaderCondition(_Strict):
    header: str
    """Header field name (case-insensitive); every field of that name is looked at."""

    @field_validator("header")
    @classmethod
    def _name(cls, value: str) -> str:
        return _header_name(value, writable=False)


class HeaderWords(_HeaderCondition):
    words: list[str]
    """Words or phrases, any of which matches (whole words, case-insensitive)."""

    @field_validator("words")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        return _rule_values(value, "word")


class HeaderPatterns(_HeaderCondition):
    patterns: list[str]
    """Regular expressions (Python syntax, case-insensitive), any of which matches."""


class RuleConditions(_Strict):
    """Predicates of a rule, each named by its field; all set ones must match (any value within one)."""

    sender_address: list[str] | None = None
    sender_domain: list[str] | None = None
    from_address: list[str] | None = None
    """The author (``From:``) as a mail client shows it, read by ``mailmoat_mail.author``."""
    from_domain: list[str] | None = None
    recipient_address: list[str] | None = None
    recipient_domain: list[str] | None = None
    sender_location: Literal["inside", "outside"] | None = None
    header_contains: HeaderWords | None = None
    header_matches: HeaderPatterns | None = None
    subject_contains: list[str] | None = None
    subject_matches: list[str] | None = None
    body_contains: list[str] | None = None
    subject_or_body_contains: list[str] | None = None
    attachment_name: list[str] | None = None
    attachment_extension: list[str] | None = None
    attachment_type: list[str] | None = None
    attachment_size_over: int | None = Field(None, ge=0)
    attachment_password_protected: bool | None = None
    message_size_over: int | None = Field(None, ge=0)
    sender_ip: list[str] | None = None
    scl_at_least: int | None = Field(None, ge=-1, le=9)
    bcl_at_least: int | None = Field(None, ge=0, le=9)
    verdict: list[str] | None = None
    impersonation: list[Literal["user", "domain", "address"]] | None = Field(None, min_length=1)
    """The antispam stage found impersonation of these kinds (``antispam.impersonation``)."""
    inbound_connector: list[str] | None = None
    _ips: IpSet = PrivateAttr(default_factory=IpSet)

    @field_validator("sender_address", "recipient_address", "sender_domain", "recipient_domain",
                     "from_address", "from_domain", "attachment_name", "inbound_connector")
    @classmethod
    def _values(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _rule_values(value, "entry")

    @field_validator("subject_contains", "body_contains", "subject_or_body_contains")
    @classmethod
    def _words(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _rule_values(value, "word")

    @field_validator("subject_matches")
    @classmethod
    def _subject_regexes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _regexes(value)

    @field_validator("header_matches")
    @classmethod
    def _header_regexes(cls, value: HeaderPatterns | None) -> HeaderPatterns | None:
        if value is not None:
            _regexes(value.patterns)
        return value

    @field_validator("attachment_extension", "attachment_type")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = [v.lstrip(".") for v in _rule_values(value, "file type")]
        for item in out:
            if not re.fullmatch(r"[a-z0-9_-]{1,16}", item):
                raise ValueError(f"{item!r} is not a file type or extension such as exe")
        return out

    @field_validator("sender_ip", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str] | None:
        if value is None:
            return None
        out = _parse_networks(value)
        if not out:
            raise ValueError("must list at least one address or network")
        return out

    @field_validator("verdict")
    @classmethod
    def _verdicts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = _rule_values(value, "verdict")
        for item in out:
            if item not in RULE_VERDICTS:
                raise ValueError(f"unknown verdict {item!r} (known: {', '.join(RULE_VERDICTS)})")
        return out

    @model_validator(mode="after")
    def _ipset(self) -> RuleConditions:
        self._ips = IpSet.of(self.sender_ip or [])
        return self

    def names(self) -> list[str]:
        """The conditions that are set, in field order."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]

    def sender_ips(self) -> IpSet:
        return self._ips


class RejectAction(_Strict):
    text: str = "Delivery not authorized, message refused"
    """The explanation the NDR (and the trace) gives."""
    code: str = "5.7.1"
    """Enhanced status code: ``5.7.1``, or a custom one from ``5.7.900`` to ``5.7.999``."""

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _one_line(value, "the explanation", 400)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not _ENHANCED_CODE.match(value.strip()):
            raise ValueError(f"{value!r}: the code must be 5.7.1 or from 5.7.900 to 5.7.999")
        return value.strip()


class Disclaimer(_Strict):
    text: str = Field(min_length=1)
    """Appended to plain-text parts (after a blank line)."""
    html: str | None = None
    """Appended to HTML parts (before ``</body>``); default: ``text``, HTML-escaped, in a paragraph."""


class RuleActions(_Strict):
    """What a rule does, each named by its field."""

    reject: RejectAction | None = None
    delete: bool = False
    quarantine: bool = False
    redirect_to: list[str] | None = None
    add_recipients: list[str] | None = None
    set_header: dict[str, str] | None = None
    remove_header: list[str] | None = None
    prepend_subject: str | None = None
    set_scl: int | None = Field(None, ge=-1, le=9)
    route_to_connector: str | None = None
    require_tls: bool = False
    append_disclaimer: Disclaimer | None = None
    bypass_spam_filtering: bool = False

    @field_validator("redirect_to", "add_recipients")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = _rule_values(value, "address")
        for item in out:
            if item.count("@") != 1 or item.startswith("@") or item.endswith("@") or any(c in item for c in " <>,"):
                raise ValueError(f"{item!r} is not an address")
        return out

    @field_validator("set_header")
    @classmethod
    def _set_header(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one header")
        return {_header_name(k, writable=True): _one_line(str(v), f"the value of {k}", 900) for k, v in value.items()}

    @field_validator("remove_header")
    @classmethod
    def _remove_header(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one header")
        return [_header_name(v, writable=True) for v in value]

    @field_validator("prepend_subject")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("the prefix is empty")
        return _one_line(value, "the prefix", 200)

    @model_validator(mode="after")
    def _sensible(self) -> RuleActions:
        if not self.names():
            raise ValueError("a rule needs at least one action")
        final = [n for n in ("reject", "delete", "quarantine") if n in self.names()]
        if len(final) > 1:
            raise ValueError(f"{' and '.join(final)}: a rule can end a message in one way only")
        return self

    def names(self) -> list[str]:
        """The actions that are set, in field order."""
        return [name for name in type(self).model_fields if getattr(self, name) not in (None, False)]


class MailFlowRule(_Strict):
    """A named rule: conditions and exceptions select messages, actions say what happens to them."""

    name: str = Field(min_length=1, max_length=128)
    priority: int = 0
    """Lower runs first; rules of equal priority run in the order listed."""
    mode: Literal["enforce", "test"] = "enforce"
    """``test``: matches are traced, nothing is done."""
    active_from: datetime | None = None
    active_until: datetime | None = None
    stop_processing: bool = False
    """No rule after this one runs on a message it matched."""
    conditions: RuleConditions = Field(default_factory=RuleConditions)
    exceptions: RuleConditions = Field(default_factory=RuleConditions)
    actions: RuleActions

    @field_validator("active_from", "active_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _window(self) -> MailFlowRule:
        if self.active_from and self.active_until and self.active_from >= self.active_until:
            raise ValueError("active_until must be later than active_from")
        return self

    def active(self, now: datetime) -> bool:
        """Within its active window (a missing end is open)."""
        return (self.active_from is None or now >= self.active_from) and (
            self.active_until is None or now < self.active_until
        )


def _check_rules(rules: list[MailFlowRule], connectors: Connectors) -> None:
    """Rule names are unique; a connector a rule routes to exists."""
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.name in seen:
            raise ValueError(f"rules.{index}.name: {rule.name!r} is already the name of rules.{seen[rule.name]}")
        seen[rule.name] = index
        target = rule.actions.route_to_connector
        if target is not None and connectors.outbound_named(target) is None:
            raise ValueError(f"rules.{index}.actions.route_to_connector: no outbound connector named {target!r}")


class Policy(_Strict):
    organization: Organization = Field(default_factory=Organization)
    accepted_domains: list[AcceptedDomain] = Field(default_factory=list)
    directory: list[str] = Field(default_factory=list)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    outbound: Outbound = Field(default_factory=Outbound)
    limits: Limits = Field(default_factory=Limits)
    delivery: Delivery = Field(default_factory=Delivery)
    dns: Dns = Field(default_factory=Dns)
    trace: Trace = Field(default_factory=Trace)
    pipeline: Pipeline = Field(default_factory=Pipeline)
    connection_filter: ConnectionFilter = Field(default_factory=ConnectionFilter)
    antimalware: Antimalware = Field(default_factory=Antimalware)
    antispam: Antispam = Field(default_factory=Antispam)
    quarantine: Quarantine = Field(default_factory=Quarantine)
    connectors: Connectors = Field(default_factory=Connectors)
    rules: list[MailFlowRule] = Field(default_factory=list)
    dkim: Dkim = Field(default_factory=Dkim)
    arc: Arc = Field(default_factory=Arc)
    srs: Srs = Field(default_factory=Srs)

    @model_validator(mode="after")
    def _identities_named(self) -> Policy:
        """Every ``outbound.per_route`` key names a route, an outbound connector, or ``mx``."""
        known = {"mx", *(f"route:{n}" for n in self.routes), *(f"connector:{c.name}" for c in self.connectors.outbound)}
        for key in self.outbound.per_route:
            if key not in known:
                raise ValueError(f"outbound.per_route.{key}: no such route (route:NAME, connector:NAME or mx)")
        return self

    @model_validator(mode="after")
    def _dkim_ours(self) -> Policy:
        """DKIM signs only for the organisation's domains."""
        for index, entry in enumerate(self.dkim.domains):
            if self.accepted_domain(entry.domain) is None:
                raise ValueError(f"dkim.domains.{index}.domain: {entry.domain!r} is not an accepted domain")
        return self

    @field_validator("directory")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"directory entry {address!r} is not an address")
        return [a.strip().lower() for a in value]

    @model_validator(mode="after")
    def _routes_exist(self) -> Policy:
        for index, domain in enumerate(self.accepted_domains):
            if domain.route is not None and domain.route not in self.routes:
                raise ValueError(
                    f"accepted_domains.{index}.route: no route named {domain.route!r} under routes"
                )
        return self

    @model_validator(mode="after")
    def _rules_consistent(self) -> Policy:
        _check_rules(self.rules, self.connectors)
        return self

    @model_validator(mode="after")
    def _partner_allow_list(self) -> Policy:
        """Partner connectors with ``allow_list`` add their IPs to the connection filter's allow list."""
        partner = [ip for c in self.connectors.inbound if c.allow_list for ip in c.sender_ips]
        if partner:
            self.connection_filter._allow = IpSet.of([*self.connection_filter.ip_allow, *partner])
        return self

    def accepted_domain(self, domain: str) -> AcceptedDomain | None:
        """The accepted-domain entry for ``domain`` (exact match, case-insensitive)."""
        domain = domain.lower().rstrip(".")
        for entry in self.accepted_domains:
            if entry.domain == domain:
                return entry
        return None

    def in_directory(self, address: str) -> bool:
        return address.lower() in self._directory_set()

    def _directory_set(self) -> frozenset[str]:
        cached = self.__dict__.get("_dirset")
        if cached is None:
            cached = frozenset(self.directory)
            self.__dict__["_dirset"] = cached
        return cached

    def is_internal(self, ip: str) -> bool:
        """Whether ``ip`` is one of the organisation's own servers."""
        address = client_address(ip)
        return address is not None and any(address in net for net in self.organization.internal_networks)


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file, the field path and the reason."""


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C loader: large lists
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"]) or "(top level)"
            lines.append(f"{source}: {path}: {error['msg']}")
        raise PolicyError("\n".join(lines)) from exc


def load_policy(path: str | os.PathLike[str]) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    return parse_policy(text, str(path))


class PolicyHolder:
    """The policy in force for a service, reloaded when the file changes.

    A new version that fails to load is refused (logged, counted) and the last good one stays.
    """

    def __init__(self, path: str | os.PathLike[str], on_change: Callable[[Policy], None] | None = None):
        self.path = Path(path)
        self.current = load_policy(self.path)
        self._stamp = self._read_stamp()
        self._on_change = on_change
        self.reloads = 0
        self.refused = 0
        self.last_error: str | None = None

    def _read_stamp(self) -> tuple[float, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size, st.st_ino)

    def check(self) -> bool:
        """Reload when the file changed; True when a new policy took effect."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            self.refused += 1
            self.last_error = str(exc)
            log.error("policy refused, keeping the last good one: %s", exc)
            return False
        self.current = policy
        self.reloads += 1
        self.last_error = None
        log.info("policy reloaded from %s", self.path)
        if self._on_change is not None:
            self._on_change(policy)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the file forever (run as a task)."""
        while True:
            await asyncio.sleep(interval)
            self.check()
