"""DANE (RFC 7672) applied to an MX delivery: the validated look-ups, the check each MX host's
target carries, and what the attempt counts for TLS reporting (``policy-type: tlsa``).

Every look-up goes to the one resolver ``outbound.dane.resolver`` names, asking for validation
(DO and AD bits); only that resolver's AD bit is believed. DANE applies to a domain when its MX
RRset (or, without MX records, its address) validates and at least one MX host whose address
validates publishes TLSA records at ``_<port>._tcp.<mx-host>`` that validate. Then:

- a host with usable TLSA records gets TLS that matches them, or nothing (4.7.5, never clear text,
  never unauthenticated TLS);
- a host whose TLSA records are all unusable gets TLS without authentication, or nothing;
- a host whose TLSA look-up fails (SERVFAIL, which is also what a bogus answer gives, or a timeout)
  is not used (4.7.5);
- a host without TLSA records, or with an unvalidated address, is used as without DANE;
- a domain whose MX look-up fails at the validating resolver (SERVFAIL, which a bogus answer gives,
  or a timeout) is deferred (4.7.5), as Postfix does, rather than delivered without DANE;
- MTA-STS is not applied to the domain (DANE takes precedence, RFC 8461 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from mailmoat_egress import tlsrpt
from mailmoat_egress.dane import DaneCheck, Tlsa, parse_tlsa, usable
from mailmoat_egress.delivery import RcptResult, Target
from mailmoat_egress.targets import NoRoute
from mailmoat_platform.models import Route, utcnow
from mailmoat_policy import Policy, resolver_address

log = logging.getLogger(__name__)

MAX_MX_HOSTS = 10


class LookupFailed(Exception):
    """The validating resolver gave no usable answer (SERVFAIL — also a bogus answer — or timeout)."""


@dataclass(frozen=True)
class SecureAnswer:
    records: tuple[str, ...]
    """Rdata in presentation form (empty: NODATA or NXDOMAIN)."""
    secure: bool
    """The resolver set the AD bit: the answer (or its denial) validated."""
    nxdomain: bool = False


async def secure_query(name: str, rdtype: str, server: tuple[str, int], timeout: float) -> SecureAnswer:
    """One query with DO and AD set to the validating resolver ``server``; raises LookupFailed."""
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    query.flags |= dns.flags.AD | dns.flags.RD
    try:
        response, _ = await dns.asyncquery.udp_with_fallback(query, server[0], timeout=timeout, port=server[1])
    except (dns.exception.DNSException, OSError) as exc:
        raise LookupFailed(f"{name} {rdtype}: {exc or type(exc).__name__}") from exc
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise LookupFailed(f"{name} {rdtype}: {dns.rcode.to_text(rcode)}")
    wanted = dns.rdatatype.from_text(rdtype)
    records = tuple(rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset)
    return SecureAnswer(records, bool(response.flags & dns.flags.AD), rcode == dns.rcode.NXDOMAIN)


@dataclass(frozen=True)
class DanePlan:
    domain: str = ""
    hosts: dict[str, DaneCheck] = field(default_factory=dict)
    """MX hosts (validated) that have DANE checks; a validated host without TLSA records is absent."""
    mx_hosts: tuple[str, ...] = ()
    """All validated MX hosts of the domain."""
    error: str | None = None
    """The MX look-up through the validating resolver failed (SERVFAIL — bogus — or no answer): the
    delivery is deferred rather than made without knowing whether DANE applies."""

    @property
    def active(self) -> bool:
        return bool(self.hosts) or self.error is not None

    def check(self) -> None:
        """Raises NoRoute (4.7.5) when the MX look-up failed (before the route's own MX look-up)."""
        if self.error is not None:
            raise NoRoute(451, f"4.7.5 {self.error}")

    def apply(self, targets: list[Target]) -> list[Target]:
        """Targets with their host's DANE check; a host the validated MX RRset does not name is not used."""
        self.check()
        if not self.active:
            return targets
        out = []
        for target in targets:
            check = self.hosts.get(target.label.lower())
            if check is None and target.label.lower() not in self.mx_hosts:
                check = DaneCheck(error=f"not among the DNSSEC-validated MX hosts of {self.domain}")
            out.append(replace(target, dane=check) if check is not None else target)
        return out

    def records(self) -> tuple[Tlsa, ...]:
        return tuple(r for check in self.hosts.values() for r in check.records)


async def plan_for(domain: str, server: tuple[str, int], port: int, timeout: float) -> DanePlan:
    """The DANE plan of ``domain`` (inactive when its MX RRset does not validate or no host has TLSA)."""
    domain = domain.lower().rstrip(".")
    try:
        mx = await secure_query(domain, "MX", server, timeout)
    except LookupFailed as exc:
        log.warning("DANE: MX look-up of %s failed (%s); deferred", domain, exc)
        return DanePlan(domain, error=f"DNSSEC MX look-up failed: {exc}")
    if not mx.secure or mx.nxdomain:
        return DanePlan(domain)
    if mx.records:
        ranked = sorted((int(pref), host.rstrip(".").lower()) for pref, host in (r.split() for r in mx.records))
        names = [host for _, host in ranked if host][:MAX_MX_HOSTS]
    else:
        names = [domain]
    hosts: dict[str, DaneCheck] = {}
    for host in names:
        reference = (host, domain) if host != domain else (host,)
        try:
            address = await secure_query(host, "A", server, timeout)
            if not address.secure:
                continue
            tlsa = await secure_query(f"_{port}._tcp.{host}", "TLSA", server, timeout)
        except LookupFailed as exc:
            hosts[host] = DaneCheck(names=reference, error=f"TLSA look-up failed: {exc}")
            continue
        if not tlsa.secure or not tlsa.records:
            continue
        parsed = []
        for text in tlsa.records:
            try:
                parsed.append(parse_tlsa(text))
            except ValueError as exc:
                log.info("DANE: %s: %s", host, exc)
        hosts[host] = DaneCheck(usable(parsed), reference)
    return DanePlan(domain, hosts, tuple(names))


def session_result(plan: DanePlan, result: RcptResult) -> str | None:
    """The RFC 8460 result of one attempt under DANE, from its first recipient's result."""
    if not plan.active:
        return None
    if result.remote_host:
        return tlsrpt.SUCCESS if result.tls else "starttls-not-supported"
    if "failed DANE" in result.text:
        return "tlsa-invalid"
    if "look-up failed" in result.text or "DNSSEC-validated" in result.text:
        return "dnssec-invalid"
    if result.enhanced == "4.7.4":
        return "starttls-not-supported"
    if result.enhanced == "4.7.5":
        return "validation-failure"
    return None


class Dane:
    """Look-ups and reporting for egress."""

    def __init__(self, redis: Callable[[], Any]):
        self.redis = redis

    async def plan(self, route: Route, policy: Policy) -> DanePlan:
        settings = policy.outbound.dane
        if settings.mode == "off" or not settings.resolver or route.kind != "mx" or not route.domain:
            return DanePlan()
        return await plan_for(route.domain, resolver_address(settings.resolver), policy.outbound.mx_port,
                              settings.timeout)

    async def report(self, plan: DanePlan, results: list[RcptResult], sending_ip: str | None = None) -> None:
        outcome = session_result(plan, results[0]) if results else None
        if outcome is None:
            return
        applied = tlsrpt.AppliedPolicy("tlsa", tuple(r.text() for r in plan.records()), tuple(plan.hosts))
        detail = tlsrpt.FailureDetail(outcome, sending_ip or "", results[0].remote_host)
        await tlsrpt.record(self.redis(), plan.domain, outcome, utcnow(), policy=applied, detail=detail)


__all__ = ["Dane", "DanePlan", "LookupFailed", "SecureAnswer", "plan_for", "secure_query", "session_result"]
