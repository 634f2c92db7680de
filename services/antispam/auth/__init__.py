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
- ``AuthResult``: ``spf`` (``SpfResult`` of the MAIL FROM identity, or of HELO for the null sender),
  ``spf_helo`` (the HELO identity checked as well, RFC 7208 2.3; None when HELO is not a domain or is
  the identity ``spf`` already checked), ``dkim`` (one ``DkimResult`` per DKIM-Signature, top to
  bottom: pass/fail/policy/temperror/permerror; ``[]`` when unsigned), ``dmarc`` (``DmarcResult`` with
  ``policy`` as published and ``effective`` after ``pct`` and a trusted-ARC override), ``arc``
  (``ArcResult``), ``compauth`` (``CompAuth``: pass/fail/softfail/none with a reason code, see
  ``compauth``), ``forged`` (compauth failed: the author domain is judged forged, so no NDR may go to
  the sender), ``author`` (``mailmoat_mail.author.Author``: the From fields as a client shows them),
  ``dmarc_all`` (one ``DmarcResult`` per author domain; ``dmarc`` is the strictest of them).
  ``detail()`` gives the JSON-ready facts for the verdict.

Every author domain is judged (RFC 7489 6.6.1): a From that names several mailboxes, several From
fields, or a From that does not parse (then the addresses a client could show from it) — the strictest
DMARC outcome applies, and compauth is the worst of the domains' (reason 020 when a message with such
a From is not authenticated for every one of them).
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
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from mailmoat_antispam.auth.compauth import CompAuth, composite
from mailmoat_antispam.auth.dkimverify import ArcResult, DkimResult, verify_arc, verify_dkim
from mailmoat_antispam.auth.dmarc import Discovery, DmarcResult, discover, evaluate
from mailmoat_antispam.auth.headers import strip_spoofed_authres
from mailmoat_antispam.auth.resolver import AuthResolver, DnsAnswer, Resolver
from mailmoat_antispam.auth.results import authentication_results
from mailmoat_antispam.auth.spf import SpfResult, check_spf, valid_domain
from mailmoat_mail.author import Author, read_author
from mailmoat_mail.dns import config_from
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class AuthResult:
    spf: SpfResult
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: DmarcResult = field(default_factory=DmarcResult)
    arc: ArcResult = field(default_factory=ArcResult)
    compauth: CompAuth = field(default_factory=lambda: CompAuth("none", "300"))
    forged: bool = False
    spf_helo: SpfResult | None = None
    author: Author = field(default_factory=Author)
    dmarc_all: list[DmarcResult] = field(default_factory=list)

    def detail(self) -> dict[str, Any]:
        """Facts for the antispam verdict (decision 004: ``dmarc`` with the effective ``policy``, ``forged``)."""
        out = {
            "spf": {"result": self.spf.result, "domain": self.spf.domain, "identity": self.spf.identity},
            "dkim": [{"result": d.result, "domain": d.domain, "selector": d.selector} for d in self.dkim],
            "dmarc": {"result": self.dmarc.result, "policy": self.dmarc.effective, "published": self.dmarc.policy,
                      "domain": self.dmarc.domain, "override": self.dmarc.override},
            "arc": {"result": self.arc.result, "sealers": list(self.arc.sealers)},
            "compauth": {"result": self.compauth.result, "reason": self.compauth.reason},
            "forged": self.forged,
            "author": author_detail(self.author),
        }
        if self.spf_helo is not None:
            out["spf_helo"] = {"result": self.spf_helo.result, "domain": self.spf_helo.domain}
        if len(self.dmarc_all) > 1:
            out["dmarc_all"] = [{"result": d.result, "policy": d.effective, "domain": d.domain}
                                for d in self.dmarc_all]
        return out


def author_detail(author: Author) -> dict[str, Any]:
    """The author facts the verdict carries (for rules, the quarantine and the trace)."""
    out: dict[str, Any] = {"from": author.display()[:300], "addresses": author.addresses[:10],
                           "domains": author.domains[:10]}
    if author.problem:
        out["problem"] = author.problem[:200]
    return out


def resolver_for(policy: Policy) -> AuthResolver:
    """The resolver for the policy's ``dns`` section (build a new one when that section changes)."""
    return AuthResolver(config_from(policy.dns))


def authserv_id(policy: Policy) -> str:
    """The authserv-id: ``antispam.authserv_id``, else ``organization.hostname``."""
    return policy.antispam.authserv_id or policy.organization.hostname


def _trusted(sealer: str, trusted: list[str]) -> bool:
    return any(sealer == t or sealer.endswith("." + t) for t in trusted)


_DMARC_PASS = re.compile(r"(?:^|[;\s])dmarc\s*=\s*pass\b([^;]*)", re.I)
_HEADER_FROM = re.compile(r"\bheader\.from\s*=\s*([^\s;()]+)", re.I)


def vouches_for(results: str, domain: str) -> bool:
    """The ``ARC-Authentication-Results`` text records ``dmarc=pass`` for ``header.from`` ``domain``: a pass
    about another author domain (or naming none) vouches for nothing here."""
    wanted = domain.lower().rstrip(".")
    for match in _DMARC_PASS.finditer(results):
        found = _HEADER_FROM.search(match.group(1))
        if found and found.group(1).lower().rstrip(".") == wanted:
            return True
    return False


def arc_override(dmarc: DmarcResult, arc: ArcResult, trusted: list[str]) -> DmarcResult:
    """A DMARC failure vouched for by a trusted ARC sealer: a valid chain whose newest seal is by a
    trusted domain that recorded ``dmarc=pass`` for this author domain (``header.from``) in its
    ``ARC-Authentication-Results``."""
    if dmarc.result != "fail" or arc.result != "pass" or not arc.sealers or not trusted:
        return dmarc
    sealer = arc.sealers[-1]
    if not _trusted(sealer, trusted) or not vouches_for(arc.newest_results, dmarc.domain):
        return dmarc
    return replace(dmarc, effective="none", override=f"arc:{sealer}")


async def _spf(envelope: Envelope, resolver: Resolver, policy: Policy, *, helo_only: bool = False) -> SpfResult:
    receiver = authserv_id(policy)
    mail_from = "" if helo_only else envelope.mail_from
    try:
        async with asyncio.timeout(policy.antispam.spf_timeout):
            return await check_spf(resolver, envelope.client_ip, mail_from, envelope.helo or "", receiver=receiver)
    except TimeoutError:
        return _spf_failed(envelope, "temperror", f"SPF took longer than {policy.antispam.spf_timeout}s", helo_only)
    except Exception as exc:  # a defect must not lose the message: the check is reported as failed
        log.exception("SPF evaluation failed for %s", envelope.id)
        return _spf_failed(envelope, "permerror", f"internal error: {type(exc).__name__}", helo_only)


def _spf_failed(envelope: Envelope, result: str, reason: str, helo_only: bool = False) -> SpfResult:
    mailfrom = "@" in envelope.mail_from and not helo_only
    domain = envelope.mail_from.rpartition("@")[2] if mailfrom else (envelope.helo or "")
    return SpfResult(result, domain.lower(), "mailfrom" if mailfrom else "helo", reason)


async def _spf_helo(envelope: Envelope, resolver: Resolver, policy: Policy) -> SpfResult | None:
    """The HELO identity (RFC 7208 2.3), when it is a domain and not already the identity checked."""
    helo = (envelope.helo or "").strip()
    if "@" not in envelope.mail_from or not valid_domain(helo):
        return None
    return await _spf(envelope, resolver, policy, helo_only=True)


_EFFECTIVE = {"reject": 3, "quarantine": 2}
_RESULT = {"fail": 4, "temperror": 3, "permerror": 2, "none": 1, "pass": 0}
_COMPAUTH = {"fail": 3, "softfail": 2, "none": 1, "pass": 0}


def strictest(results: list[DmarcResult]) -> DmarcResult:
    """The DMARC outcome to apply: the strictest effective policy, then the strictest published one,
    then the worst result (fail, temperror, permerror, none, pass); the first of equals."""
    return max(results, key=lambda d: (_EFFECTIVE.get(d.effective, 0), _EFFECTIVE.get(d.policy, 0),
                                       _RESULT.get(d.result, 0)))


def _outside(envelope: Envelope, policy: Policy) -> bool:
    return envelope.direction == "inbound" and not policy.is_internal(envelope.client_ip)


def _composite(author: Author, results: list[DmarcResult], *, outside: bool, policy: Policy, spf: SpfResult,
               dkim: list[DkimResult]) -> CompAuth:
    """The worst composite verdict over the author domains; a From with more than one author (or one
    that does not parse) passes only when every author domain passed (else reason 020)."""
    verdicts = [composite(outside=outside, own_domain=bool(d.domain) and policy.accepted_domain(d.domain) is not None,
                          spf=spf, dkim=dkim, dmarc=d) for d in results]
    worst = max(verdicts, key=lambda c: _COMPAUTH.get(c.result, 0))
    if outside and author.problem and worst.result in ("none", "softfail") and any(
            c.result != "pass" for c in verdicts):
        return CompAuth("fail", "020", f"{author.problem}, and not every author domain is authenticated")
    return worst


async def _guarded(check: Awaitable[T], fallback: T, name: str, envelope: Envelope) -> T:
    """One check's result, or ``fallback`` (never a pass) when the check has a defect: the others, DMARC
    above all, are still evaluated for the message."""
    try:
        return await check
    except Exception:
        log.exception("%s evaluation failed for %s", name, envelope.id)
        return fallback


async def authenticate(envelope: Envelope, data: bytes, resolver: Resolver, policy: Policy) -> AuthResult:
    """SPF, DKIM, ARC and DMARC of one message (DNS concurrently), then composite authentication."""
    author = read_author(data)
    domains = author.domains
    spf, spf_helo, dkim_results, arc, *discoveries = await asyncio.gather(
        _spf(envelope, resolver, policy),
        _spf_helo(envelope, resolver, policy),
        _guarded(verify_dkim(data, resolver), [], "DKIM", envelope),
        _guarded(verify_arc(data, resolver), ArcResult("fail", "internal error"), "ARC", envelope),
        *(_guarded(discover(resolver, d), Discovery("temperror", reason=f"_dmarc.{d}: internal error"),
                   "DMARC", envelope) for d in domains),
    )
    outside = _outside(envelope, policy)
    if not domains:
        dmarc = DmarcResult("none" if author.problem in (None, "no From field") else "permerror",
                            reason=author.problem or "no author domain")
        results = [dmarc]
    else:
        trusted = policy.antispam.trusted_arc_sealers
        results = [arc_override(evaluate(d, found, spf, dkim_results, envelope.id), arc, trusted)
                   for d, found in zip(domains, discoveries, strict=True)]
        dmarc = strictest(results)
    comp = _composite(author, results, outside=outside, policy=policy, spf=spf, dkim=dkim_results)
    return AuthResult(spf, dkim_results, dmarc, arc, comp, forged=comp.result == "fail", spf_helo=spf_helo,
                      author=author, dmarc_all=results if domains else [])


__all__ = [
    "ArcResult",
    "AuthResolver",
    "AuthResult",
    "CompAuth",
    "DkimResult",
    "DmarcResult",
    "DnsAnswer",
    "Resolver",
    "SpfResult",
    "arc_override",
    "authenticate",
    "authentication_results",
    "author_detail",
    "authserv_id",
    "resolver_for",
    "strictest",
    "strip_spoofed_authres",
]
