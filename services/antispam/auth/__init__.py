"""Sender authentication: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489), ARC (RFC 8617), composite
authentication, and the ``Authentication-Results`` header (RFC 8601).

Interface::

    resolver = resolver_for(policy)                              # one per process: timeouts + cache
    result = await authenticate(envelope, data, resolver, policy)
    data = strip_spoofed_authres(data, authserv_id(policy))      # incoming fields claiming our id
    data = authentication_results(authserv_id(policy), result) + data

- ``authenticate(envelope, data, resolver, policy) -> AuthResult``: ``data`` is the message as received.
  Never raises for anything the message or DNS does: DNS failures become ``temperror``, malformed
  records or signatures ``permerror``. All DNS goes through ``resolver`` (``resolver.Resolver``:
  ``async query(name, rdtype) -> DnsAnswer``; ``AuthResolver`` is the real one).
- ``AuthResult``: ``spf`` (``SpfResult``), ``dkim`` (one ``DkimResult`` per DKIM-Signature, top to
  bottom: pass/fail/policy/temperror/permerror; ``[]`` when unsigned), ``dmarc`` (``DmarcResult`` with
  ``policy`` as published and ``effective`` after ``pct`` and a trusted-ARC override), ``arc``
  (``ArcResult``), ``compauth`` (``CompAuth``: pass/fail/softfail/none with a reason code, see
  ``compauth``), ``forged`` (compauth failed: the author domain is judged forged, so no NDR may go to
  the sender). ``detail()`` gives the JSON-ready facts for the verdict.
- ``authentication_results(authserv_id, result) -> bytes``: one header field, folded, CRLF-terminated.
- ``strip_spoofed_authres(data, authserv_id) -> bytes``: removes ``Authentication-Results`` fields
  naming ``authserv_id``; all other bytes unchanged.

Policy fields read: ``antispam.authserv_id``, ``antispam.trusted_arc_sealers``, ``antispam.spf_timeout``,
``organization.hostname``, ``accepted_domains``, ``organization.internal_networks``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

from mailmoat_antispam.auth.compauth import CompAuth, composite
from mailmoat_antispam.auth.dkimverify import ArcResult, DkimResult, verify_arc, verify_dkim
from mailmoat_antispam.auth.dmarc import Discovery, DmarcResult, discover, evaluate
from mailmoat_antispam.auth.headers import from_domains, strip_spoofed_authres
from mailmoat_antispam.auth.resolver import AuthResolver, DnsAnswer, Resolver
from mailmoat_antispam.auth.results import authentication_results
from mailmoat_antispam.auth.spf import SpfResult, check_spf
from mailmoat_common.dns import config_from
from mailmoat_common.models import Envelope
from mailmoat_common.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class AuthResult:
    spf: SpfResult
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: DmarcResult = field(default_factory=DmarcResult)
    arc: ArcResult = field(default_factory=ArcResult)
    compauth: CompAuth = field(default_factory=lambda: CompAuth("none", "300"))
    forged: bool = False

    def detail(self) -> dict[str, Any]:
        """Facts for the antispam verdict (decision 004: ``dmarc`` with the effective ``policy``, ``forged``)."""
        return {
            "spf": {"result": self.spf.result, "domain": self.spf.domain, "identity": self.spf.identity},
            "dkim": [{"result": d.result, "domain": d.domain, "selector": d.selector} for d in self.dkim],
            "dmarc": {"result": self.dmarc.result, "policy": self.dmarc.effective, "published": self.dmarc.policy,
                      "domain": self.dmarc.domain, "override": self.dmarc.override},
            "arc": {"result": self.arc.result, "sealers": list(self.arc.sealers)},
            "compauth": {"result": self.compauth.result, "reason": self.compauth.reason},
            "forged": self.forged,
        }


def resolver_for(policy: Policy) -> AuthResolver:
    """The resolver for the policy's ``dns`` section (build a new one when that section changes)."""
    return AuthResolver(config_from(policy.dns))


def authserv_id(policy: Policy) -> str:
    """The authserv-id: ``antispam.authserv_id``, else ``organization.hostname``."""
    return policy.antispam.authserv_id or policy.organization.hostname


def _trusted(sealer: str, trusted: list[str]) -> bool:
    return any(sealer == t or sealer.endswith("." + t) for t in trusted)


def arc_override(dmarc: DmarcResult, arc: ArcResult, trusted: list[str]) -> DmarcResult:
    """A DMARC failure vouched for by a trusted ARC sealer: a valid chain whose newest seal is by a
    trusted domain that recorded ``dmarc=pass`` in its ``ARC-Authentication-Results``."""
    if dmarc.result != "fail" or arc.result != "pass" or not arc.sealers or not trusted:
        return dmarc
    sealer = arc.sealers[-1]
    if not _trusted(sealer, trusted) or not re.search(r"(^|[;\s])dmarc\s*=\s*pass\b", arc.newest_results, re.I):
        return dmarc
    return replace(dmarc, effective="none", override=f"arc:{sealer}")


async def _spf(envelope: Envelope, resolver: Resolver, policy: Policy) -> SpfResult:
    receiver = authserv_id(policy)
    try:
        async with asyncio.timeout(policy.antispam.spf_timeout):
            return await check_spf(resolver, envelope.client_ip, envelope.mail_from, envelope.helo or "",
                                   receiver=receiver)
    except TimeoutError:
        return _spf_failed(envelope, "temperror", f"SPF took longer than {policy.antispam.spf_timeout}s")
    except Exception as exc:  # a defect must not lose the message: the check is reported as failed
        log.exception("SPF evaluation failed for %s", envelope.id)
        return _spf_failed(envelope, "permerror", f"internal error: {type(exc).__name__}")


def _spf_failed(envelope: Envelope, result: str, reason: str) -> SpfResult:
    domain = envelope.mail_from.rpartition("@")[2] if "@" in envelope.mail_from else (envelope.helo or "")
    identity = "mailfrom" if "@" in envelope.mail_from else "helo"
    return SpfResult(result, domain.lower(), identity, reason)


async def _dmarc_record(resolver: Resolver, authors: list[str]) -> Discovery | None:
    if len(set(authors)) != 1:
        return None
    return await discover(resolver, authors[0])


def _outside(envelope: Envelope, policy: Policy) -> bool:
    return envelope.direction == "inbound" and not policy.is_internal(envelope.client_ip)


async def authenticate(envelope: Envelope, data: bytes, resolver: Resolver, policy: Policy) -> AuthResult:
    """SPF, DKIM, ARC and DMARC of one message (DNS concurrently), then composite authentication."""
    authors = from_domains(data)
    spf, dkim_results, arc, discovery = await asyncio.gather(
        _spf(envelope, resolver, policy),
        verify_dkim(data, resolver),
        verify_arc(data, resolver),
        _dmarc_record(resolver, authors),
    )
    if discovery is None:
        reason = "no From: address" if not authors else "From: names more than one domain"
        dmarc = DmarcResult("none" if not authors else "permerror", reason=reason)
    else:
        dmarc = evaluate(authors[0], discovery, spf, dkim_results, envelope.id)
        dmarc = arc_override(dmarc, arc, policy.antispam.trusted_arc_sealers)
    own = bool(dmarc.domain) and policy.accepted_domain(dmarc.domain) is not None
    comp = composite(outside=_outside(envelope, policy), own_domain=own, spf=spf, dkim=dkim_results, dmarc=dmarc)
    return AuthResult(spf, dkim_results, dmarc, arc, comp, forged=comp.result == "fail")


__all__ = [
    "ArcResult", "AuthResolver", "AuthResult", "CompAuth", "DkimResult", "DmarcResult", "DnsAnswer", "Resolver",
    "SpfResult", "arc_override", "authenticate", "authentication_results", "authserv_id", "resolver_for",
    "strip_spoofed_authres",
]
