"""Hosts to try for a route: the smart hosts as configured, or the domain's MX hosts looked up now."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from mailmoat_egress.delivery import Target, parse_hostport
from mailmoat_mail.dns import DnsError, ResolverConfig, config_from, resolve_addresses, resolve_mx
from mailmoat_platform.models import Route
from mailmoat_policy import Policy

MX_MISMATCH = "no MX host matches the MTA-STS policy"

MX_ADDRESS_LIMIT = 5
"""Addresses tried per MX delivery attempt (as Postfix's smtp_mx_address_limit), so that a domain
with many unreachable hosts cannot hold a consumer for long."""


class NoRoute(Exception):
    """The route cannot be resolved to hosts: ``permanent`` and an SMTP-style reply say why."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def permanent(self) -> bool:
        return self.code >= 500


def loops_back(address: str) -> bool:
    """A loopback or unspecified address (IPv4-mapped IPv6 included): this machine, whatever the port."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def resolver_config(policy: Policy) -> ResolverConfig:
    return config_from(policy.dns)


def smarthost_targets(route: Route) -> list[Target]:
    targets = []
    for entry in route.hosts:
        host, port = parse_hostport(entry)
        targets.append(Target(host, port, host))
    if not targets:
        raise NoRoute(554, f"5.3.5 route {route.name} has no hosts")
    return targets


async def targets_for(route: Route, policy: Policy, allow: Callable[[str], bool] | None = None) -> list[Target]:
    """Targets in preference order; raises NoRoute when DNS says no (permanent) or cannot say (temporary).
    ``allow``: only MX hosts it accepts (MTA-STS ``enforce``); none accepted is a 4.7.5 NoRoute."""
    if route.kind == "smarthost":
        return smarthost_targets(route)
    if not route.domain:
        raise NoRoute(554, f"5.3.5 MX route {route.name} has no domain")
    config = resolver_config(policy)
    try:
        mx_hosts = await resolve_mx(route.domain, config)
    except DnsError as exc:
        code = 550 if exc.permanent else 451
        if exc.status == "5.1.10":
            code = 556
        raise NoRoute(code, f"{exc.status} {exc.message}") from exc
    targets: list[Target] = []
    seen: set[str] = set()
    temporary: DnsError | None = None
    looped: str | None = None
    if allow is not None:
        if not any(allow(mx.host) for mx in mx_hosts):
            raise NoRoute(451, f"4.7.5 {MX_MISMATCH} of {route.domain}")
        mx_hosts = [mx for mx in mx_hosts if allow(mx.host)]
    for mx in mx_hosts:
        if len(targets) >= MX_ADDRESS_LIMIT:
            break
        try:
            addresses = await resolve_addresses(mx.host, config)
        except DnsError as exc:
            if not exc.permanent:
                temporary = exc
            continue
        for address in addresses:
            if not policy.outbound.mx_loopback and loops_back(address):
                looped = looped or f"{mx.host} is {address}"
                continue
            if address not in seen and len(targets) < MX_ADDRESS_LIMIT:
                seen.add(address)
                targets.append(Target(address, policy.outbound.mx_port, mx.host))
    if not targets:
        if temporary is not None:
            raise NoRoute(451, f"4.4.3 {temporary.message}")
        if looped is not None:
            raise NoRoute(550, f"5.4.6 mail for {route.domain} loops back to myself: MX host {looped}")
        raise NoRoute(550, f"5.4.4 no MX host of {route.domain} has an address")
    return targets
