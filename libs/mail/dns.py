"""Asynchronous DNS look-ups for delivery (dnspython's asyncio resolver): MX with the implicit-MX rule.

Failures are classified for SMTP: a domain that does not exist or refuses mail (null MX, RFC 7505)
is permanent; a timeout or SERVFAIL is temporary, so the message is deferred, not bounced.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename


class DnsError(Exception):
    """A look-up that failed; ``permanent`` decides bounce or retry, ``status`` is the RFC 3463 code."""

    permanent = False
    status = "4.4.3"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class DnsTemporary(DnsError):
    """Timeout, SERVFAIL, no server reachable: try again later."""


class NoSuchDomain(DnsError):
    """NXDOMAIN, or a name without any address (RFC 5321 5.1: no implicit MX to use)."""

    permanent = True
    status = "5.1.2"


class NullMx(DnsError):
    """The domain publishes a null MX (``0 .``): it accepts no mail."""

    permanent = True
    status = "5.1.10"


@dataclass(frozen=True)
class MxHost:
    preference: int
    host: str
    """Exchange name without the trailing dot."""


@dataclass(frozen=True)
class ResolverConfig:
    nameservers: tuple[str, ...] = ()
    """Empty: the system's resolv.conf."""
    port: int = 53
    timeout: float = 5.0


class DnsSettings(Protocol):
    """What the policy's ``dns`` section provides."""

    nameservers: list[str]
    port: int
    timeout: float


def config_from(settings: DnsSettings) -> ResolverConfig:
    """A resolver configuration from the policy's ``dns`` section."""
    return ResolverConfig(tuple(settings.nameservers), settings.port, settings.timeout)


def make_resolver(config: ResolverConfig) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=not config.nameservers)
    if config.nameservers:
        resolver.nameservers = list(config.nameservers)
    resolver.port = config.port
    resolver.timeout = config.timeout
    resolver.lifetime = config.timeout
    resolver.cache = None
    return resolver


async def _query(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> dns.resolver.Answer | None:
    """An answer, or None for NOERROR without records of that type; raises DnsError otherwise."""
    try:
        return await resolver.resolve(name, rdtype, search=False)
    except dns.resolver.NoAnswer:
        return None
    except dns.resolver.NXDOMAIN as exc:
        raise NoSuchDomain(f"{name}: no such domain") from exc
    except dns.resolver.NoNameservers as exc:
        raise DnsTemporary(f"{name} {rdtype}: no name server answered (SERVFAIL)") from exc
    except dns.exception.Timeout as exc:
        raise DnsTemporary(f"{name} {rdtype}: look-up timed out") from exc
    except dns.exception.DNSException as exc:
        raise DnsTemporary(f"{name} {rdtype}: {exc}") from exc


def _host(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


async def resolve_mx(domain: str, config: ResolverConfig) -> list[MxHost]:
    """MX hosts of ``domain`` by preference (ties in answer order); the domain itself when it has
    no MX but has an address (implicit MX)."""
    resolver = make_resolver(config)
    answer = await _query(resolver, domain, "MX")
    if answer is None:
        if not await resolve_addresses(domain, config):
            raise NoSuchDomain(f"{domain}: no MX and no address")
        return [MxHost(0, domain.lower().rstrip("."))]
    records = [(r.preference, _host(r.exchange)) for r in answer]
    if any(host in ("", ".") for _, host in records) or any(r.exchange == dns.name.root for r in answer):
        raise NullMx(f"{domain}: null MX, the domain accepts no mail")
    records.sort(key=lambda item: item[0])
    return [MxHost(preference, host) for preference, host in records]


async def resolve_addresses(host: str, config: ResolverConfig) -> list[str]:
    """IPv4 then IPv6 addresses of ``host`` (an address literal is returned as is); [] when none."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    resolver = make_resolver(config)
    addresses: list[str] = []
    answer = await _query(resolver, host, "A")
    if answer is not None:
        addresses.extend(r.address for r in answer)
    try:
        answer = await _query(resolver, host, "AAAA")
    except DnsTemporary:
        if not addresses:
            raise
        answer = None
    if answer is not None:
        addresses.extend(r.address for r in answer)
    return addresses


async def lookup(name: str, rdtype: str, config: ResolverConfig) -> list[str]:
    """Records of one type as presentation text; [] when the name exists without such records.
    Raises NoSuchDomain (NXDOMAIN) or DnsTemporary."""
    answer = await _query(make_resolver(config), name, rdtype)
    return [] if answer is None else [r.to_text() for r in answer]


async def resolve_txt(name: str, config: ResolverConfig) -> list[str]:
    """TXT records, each with its character-strings joined (as SPF and DKIM read them)."""
    answer = await _query(make_resolver(config), name, "TXT")
    if answer is None:
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


async def resolve_ptr(address: str, config: ResolverConfig) -> list[str]:
    """PTR names of an IPv4 or IPv6 address, without the trailing dot; [] when there is none."""
    try:
        answer = await _query(make_resolver(config), dns.reversename.from_address(address).to_text(), "PTR")
    except NoSuchDomain:
        return []
    return [] if answer is None else [_host(r.target) for r in answer]


__all__ = [
    "DnsError", "DnsSettings", "DnsTemporary", "MxHost", "NoSuchDomain", "NullMx", "ResolverConfig",
    "config_from", "lookup", "resolve_addresses", "resolve_mx", "resolve_ptr", "resolve_txt",
]
