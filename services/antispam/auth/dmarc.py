"""DMARC (RFC 7489): record discovery at the author domain then its organisational domain (Public
Suffix List bundled with ``publicsuffixlist``, no network), identifier alignment, p/sp/pct.

``discover`` does the DNS; ``evaluate`` is pure: it takes the record, SPF and DKIM results and a
sampling key (the message id, so ``pct`` is deterministic per message).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailmoat_antispam.auth.dkimverify import DkimResult
from mailmoat_antispam.auth.resolver import Resolver
from mailmoat_antispam.auth.spf import SpfResult
from mailmoat_mail.author import dns_name

_POLICIES = ("none", "quarantine", "reject")


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The registrable domain (one label below the public suffix); the name itself when it is a suffix
    (the last 4096 answers kept: a message asks for the same few names several times)."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


@dataclass(frozen=True)
class DmarcRecord:
    domain: str
    """Where the record was found (the author domain or its organisational domain)."""
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


@dataclass(frozen=True)
class Discovery:
    status: str
    """found, none, temperror or permerror."""
    record: DmarcRecord | None = None
    reason: str = ""


@dataclass(frozen=True)
class DmarcResult:
    result: str = "none"
    """pass, fail, none, temperror or permerror."""
    domain: str = ""
    """The author (From:) domain."""
    org_domain: str = ""
    record_domain: str = ""
    policy: str = "none"
    """The published policy that applies (``p``, or ``sp`` for a subdomain under the organisational record)."""
    effective: str = "none"
    """What the receiver should do after ``pct`` sampling and any trusted-ARC override: none, quarantine, reject."""
    pct: int = 100
    sampled_out: bool = False
    """``pct`` below 100 and this message fell outside the sample: the policy was lowered one step (6.6.4)."""
    spf_aligned: bool = False
    dkim_aligned: bool = False
    override: str = ""
    """Why the policy was not applied (e.g. ``arc:lists.example.org``); empty when it was."""
    reason: str = ""


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s,!]+(?:![0-9]+[kmgt]?)?$", re.I)


def valid_rua(value: str) -> bool:
    """``rua`` names at least one syntactically valid URI (6.4: a comma-separated list, ``!size`` allowed)."""
    return any(_URI.match(part.strip()) for part in value.split(","))


def parse_record(domain: str, text: str) -> DmarcRecord:
    """A DMARC record's tags; ValueError when it is not usable (6.3). A missing or invalid ``p`` (or an
    invalid ``sp``) with a valid ``rua`` counts as ``p=none`` (6.6.3); an invalid ``sp`` without one
    falls back to ``p``."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        if not equals:
            raise ValueError(f"bad tag {part.strip()!r}")
        tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or next(iter(tags)) != "v":
        raise ValueError("v=DMARC1 must come first")
    p = tags.get("p", "").lower()
    sp = tags.get("sp", p).lower()
    if p not in _POLICIES or sp not in _POLICIES:
        if valid_rua(tags.get("rua", "")):  # 6.6.3 step 6: act as if p=none was published
            p = sp = "none"
        elif p not in _POLICIES:
            raise ValueError(f"p={tags.get('p', '')!r} is not none, quarantine or reject (and no valid rua)")
        else:
            sp = p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if re.fullmatch(r"\d{1,3}", pct_text) else 100
    return DmarcRecord(domain, p, sp, adkim if adkim in ("r", "s") else "r", aspf if aspf in ("r", "s") else "r",
                       min(pct, 100))


async def _lookup(resolver: Resolver, domain: str) -> Discovery:
    answer = await resolver.query(f"_dmarc.{domain}", "TXT")
    if answer.status == "temperror":
        return Discovery("temperror", reason=f"_dmarc.{domain}: {answer.error or 'DNS error'}")
    candidates = [r for r in answer.records if re.match(r"^\s*v\s*=\s*DMARC1\s*(;|$)", r)]
    if len(candidates) != 1:
        why = "no DMARC record" if not candidates else "more than one DMARC record"
        return Discovery("none", reason=f"_dmarc.{domain}: {why}")
    try:
        return Discovery("found", parse_record(domain, candidates[0].strip()))
    except ValueError as exc:
        return Discovery("permerror", reason=f"_dmarc.{domain}: {exc}")


async def discover(resolver: Resolver, domain: str) -> Discovery:
    """The policy record for an author domain: at the domain itself, else at its organisational domain (6.6.3)."""
    domain = domain.lower().rstrip(".")
    found = await _lookup(resolver, domain)
    if found.status != "none":
        return found
    org = organizational_domain(domain)
    if org == domain:
        return found
    return await _lookup(resolver, org)


def aligned(identifier: str, author: str, mode: str) -> bool:
    """Strict: the same name; relaxed: the same organisational domain (3.1)."""
    identifier, author = identifier.lower().rstrip("."), author.lower().rstrip(".")
    identifier, author = dns_name(identifier) or identifier, dns_name(author) or author  # U-labels as A-labels
    if not identifier or not author:
        return False
    if mode == "s":
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


def _sample(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "replace")).digest()[:4], "big") % 100


def _lower(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


def evaluate(author: str, discovery: Discovery, spf: SpfResult, dkim: list[DkimResult], sample_key: str) -> DmarcResult:
    """The DMARC result and the policy to apply for one author domain."""
    author = author.lower().rstrip(".")
    org = organizational_domain(author) if author else ""
    record = discovery.record
    adkim = record.adkim if record else "r"
    aspf = record.aspf if record else "r"
    spf_ok = spf.result == "pass" and aligned(spf.domain, author, aspf)
    dkim_ok = any(d.result == "pass" and aligned(d.domain, author, adkim) for d in dkim)
    common = {"domain": author, "org_domain": org, "spf_aligned": spf_ok, "dkim_aligned": dkim_ok}
    if discovery.status != "found" or record is None:
        return DmarcResult(discovery.status if discovery.status != "found" else "none", reason=discovery.reason,
                           **common)
    policy = record.sp if record.domain != author else record.p
    base = {"record_domain": record.domain, "policy": policy, "pct": record.pct, **common}
    if spf_ok or dkim_ok:
        how = " and ".join(n for n, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
        return DmarcResult("pass", effective="none", reason=f"{how} aligned with {author}", **base)
    effective = policy
    sampled_out = False
    if policy != "none" and record.pct < 100 and _sample(sample_key) >= record.pct:
        effective, sampled_out = _lower(policy), True
    return DmarcResult("fail", effective=effective, sampled_out=sampled_out,
                       reason=f"neither SPF nor DKIM aligned with {author}", **base)


__all__ = ["Discovery", "DmarcRecord", "DmarcResult", "aligned", "discover", "evaluate", "organizational_domain",
           "parse_record", "valid_rua"]
