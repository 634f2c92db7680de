"""The antispam verdict (pure): scores of every check → SCL, BCL, categories, report header.

SCL as Exchange Online Protection: -1 allow-listed (skips filtering), 0-1 clean, 5-6 spam, 7-9
high-confidence spam; a BCL at or over the bulk threshold makes a clean message bulk (SCL 6).
Categories, strongest first: hcphish, phish, hcspam, spoof, spam, bulk.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mailmoat_antispam.asf import INCREASE, MARK, AsfHit
from mailmoat_antispam.bulk import domain_in
from mailmoat_antispam.content import Content
from mailmoat_antispam.rules import Hit
from mailmoat_antispam.verdict import AntispamVerdict
from mailmoat_connection_filter.verdict import ConnectionVerdict
from mailmoat_mail.author import Author, author_of
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import detail_in
from mailmoat_policy import Antispam, Policy

STAGE = "antispam"
REPORT = b"X-Mailmoat-Antispam-Report"
SCL_HEADER = b"X-Mailmoat-SCL"
CATEGORIES = ("hcphish", "phish", "hcspam", "spoof", "spam", "bulk")
IMPERSONATION_CATS = {"user": "UIMP", "domain": "DIMP", "address": "DIMP"}
CAT_CODES = {"hcphish": "HPHSH", "phish": "PHSH", "hcspam": "HSPM", "spoof": "SPOOF", "spam": "SPM", "bulk": "BULK"}
FOLD_AT = 78
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/=+\[\]@-]")


@dataclass(frozen=True)
class Allowance:
    """Why a message skips spam filtering (SCL -1), or why it is blocked outright."""

    kind: str
    """``ip_allow`` (connection filter), ``connector``, ``sender`` (allowed senders/domains),
    ``blocked`` (blocked senders/domains)."""
    reason: str


def allowance(envelope: Envelope, content: Content, policy: Policy, author: Author | None = None,
              blocks: tuple[Collection[str], list[str]] | None = None) -> Allowance | None:
    """Allow lists first (IP allow list via the connection verdict, trusted partner connector, allowed
    senders and domains), then the blocked senders and domains: the policy's, then ``blocks`` (the addresses
    and domains blocked from the console, ``mailmoat_records.senderblocks``), which block alike.

    The From addresses are the author parser's (``author``, else read from ``content``): only a From
    that parses can allow a message (a display name such as ``"boss@partner.test"`` never does), while
    any address a client could show from it can block one."""
    cf = detail_in(envelope, "connection_filter", ConnectionVerdict)
    if cf is not None and cf.scl == -1:
        return Allowance("ip_allow", "connection filter IP allow list")
    if envelope.inbound_connector:
        for connector in policy.connectors.inbound:
            if connector.name == envelope.inbound_connector and connector.allow_list:
                return Allowance("connector", f"partner connector {connector.name}")
    spam = policy.antispam
    author = author if author is not None else author_of(content.header("from"))
    envelope_sender = [envelope.mail_from.lower()] if envelope.mail_from else []
    allowing = envelope_sender + ([m.address.lower() for m in author.mailboxes] if not author.errors else [])
    blocking = envelope_sender + author.addresses
    return (_listed(allowing, spam.allowed_senders, spam.allowed_domains, "sender", "allowed")
            or _listed(blocking, spam.blocked_senders, spam.blocked_domains, "blocked", "blocked")
            or (_listed(blocking, blocks[0], blocks[1], "blocked", "blocked") if blocks else None))


def _listed(addresses: list[str], senders: Collection[str], domains: list[str], kind: str, word: str
            ) -> Allowance | None:
    """The first of ``addresses`` on the ``senders`` list, else the first whose domain is on ``domains``."""
    for address in addresses:
        if address in senders:
            return Allowance(kind, f"{word} sender {address}")
    for domain in _domains(addresses):
        if domain_in(domain, domains):
            return Allowance(kind, f"{word} domain {domain}")
    return None


def _domains(addresses: list[str]) -> list[str]:
    return [a.rpartition("@")[2].rstrip(".") for a in addresses if "@" in a]


@dataclass
class Findings:
    """Everything the checks found, for ``decide``."""

    hits: list[Hit] = field(default_factory=list)
    gtube: bool = False
    asf: list[AsfHit] = field(default_factory=list)
    bcl: int = 0
    bulk_signals: list[str] = field(default_factory=list)
    bayes: float | None = None
    auth: dict[str, Any] | None = None
    impersonation: dict[str, str] | None = None
    """``impersonation.Finding.detail()``: kind (user, domain, address), claimed, sender."""
    notes: list[str] = field(default_factory=list)
    """Checks that could not run (DNS failure, engine down), for the verdict detail."""

    @property
    def score(self) -> float:
        increase = sum(INCREASE for h in self.asf if h.mode == "on" and h.check not in MARK)
        return round(sum(h.score for h in self.hits) + increase, 2)


def scl_for(score: float, spam: Antispam) -> int:
    if score >= 2 * spam.hcspam_score:
        return 9
    if score >= 1.5 * spam.hcspam_score:
        return 8
    if score >= spam.hcspam_score:
        return 7
    if score >= 1.5 * spam.spam_score:
        return 6
    if score >= spam.spam_score:
        return 5
    return 1 if score >= spam.spam_score / 2 else 0


def strongest(categories: list[str]) -> str | None:
    for name in CATEGORIES:
        if name in categories:
            return name
    return None


def decide(findings: Findings, spam: Antispam, allowed: Allowance | None = None) -> Verdict:
    """The verdict from the findings (or the allow/block list entry that decides alone); its detail is an
    ``AntispamVerdict``."""
    auth = findings.auth or {}
    dmarc = auth.get("dmarc") or {"result": "none", "policy": "none", "domain": ""}
    forged = bool(auth.get("forged"))
    base: dict[str, Any] = {"bcl": findings.bcl, "dmarc": dmarc, "forged": forged, "auth": auth}
    if allowed is not None and allowed.kind != "blocked":
        detail = {**base, "scl": -1, "category": None, "categories": [], "rules": [], "score": 0.0,
                  "allowed": allowed.reason, "sfv": "SKA" if allowed.kind == "sender" else "SKN"}
        return Verdict(stage=STAGE, result="allowed", detail=AntispamVerdict.wire(**detail))
    categories: list[str] = []
    score = findings.score
    scl = scl_for(score, spam)
    sfv = "SPM" if scl >= 5 else "NSPM"
    if allowed is not None:
        scl, sfv = 9, "SKB"
    if findings.gtube:
        scl = 9
    if any(h.mode == "on" and h.check in MARK for h in findings.asf):
        scl = 9
    if scl >= 7:
        categories.append("hcspam")
    elif scl >= 5:
        categories.append("spam")
    for hit in findings.hits:
        if hit.category and hit.category not in categories:
            categories.append(hit.category)
            scl = max(scl, 9 if hit.category == "hcphish" else 8)
    if auth.get("compauth", {}).get("result") == "fail":
        categories.append("spoof")
        scl = max(scl, 5)
    if findings.bcl >= spam.bulk_threshold:
        categories.append("bulk")
        scl = max(scl, 6)
    if sfv == "NSPM" and scl >= 5:
        sfv = "SPM"
    category = strongest(categories)
    rules = [h.name for h in findings.hits] + [h.rule for h in findings.asf if h.mode == "on"]
    detail = {**base, "scl": scl, "category": category, "categories": [c for c in CATEGORIES if c in categories],
              "rules": rules, "score": score, "sfv": sfv, "bulk": findings.bulk_signals}
    if findings.impersonation:
        detail["impersonation"] = findings.impersonation
    if findings.bayes is not None:
        detail["bayes"] = round(findings.bayes, 4)
    if findings.asf:
        detail["asf"] = {h.check: h.mode for h in findings.asf}
    if findings.notes:
        detail["notes"] = findings.notes
    return Verdict(stage=STAGE, result=category or "clean", detail=AntispamVerdict.wire(**detail))


def _safe(value: str, limit: int = 100) -> str:
    return _UNSAFE.sub("?", value.replace(" ", "_"))[:limit]


def cat_code(detail: dict[str, Any]) -> str:
    """The report's CAT: the strongest category's code; phishing found by impersonation shows as EOP's
    ``UIMP`` (a protected user) or ``DIMP`` (a protected domain, or an address of another domain in
    the display name)."""
    category = detail.get("category") or ""
    found = detail.get("impersonation") or {}
    if category == "phish" and found.get("kind") in IMPERSONATION_CATS:
        return IMPERSONATION_CATS[found["kind"]]
    return CAT_CODES.get(category, "NONE")


def report_tokens(verdict: Verdict, envelope: Envelope) -> list[str]:
    cf = envelope.verdicts.get("connection_filter")
    cfd = detail_in(envelope, "connection_filter", ConnectionVerdict) or ConnectionVerdict()
    ptr = cfd.ptr.names if cfd.ptr is not None else []
    ipv = "CAL" if cfd.scl == -1 else ("LIS" if cf is not None and cf.result == "listed" else "NLI")
    d = verdict.detail
    tokens = [f"CIP:{_safe(envelope.client_ip) or 'none'}", f"H:{_safe(envelope.helo or '') or 'none'}",
              f"PTR:{_safe(ptr[0]) if ptr else 'none'}", f"IPV:{ipv}", f"SFV:{d.get('sfv', 'NSPM')}",
              f"SCL:{d['scl']}", f"BCL:{d['bcl']}", f"CAT:{cat_code(d)}"]
    if d.get("score") is not None and d["scl"] != -1:
        tokens.append(f"SCORE:{d['score']:g}")
    dmarc = d.get("dmarc") or {}
    if dmarc.get("result") and dmarc.get("result") != "none":
        tokens.append(f"DMARC:{_safe(str(dmarc['result']))}")
    if d.get("rules"):
        tokens.append("RULES:" + ",".join(_safe(r, 64) for r in d["rules"][:40]))
    return tokens


def fold(name: bytes, tokens: list[str], width: int = FOLD_AT) -> bytes:
    """``Name: t1;t2;...`` with CRLF, folded (CRLF + tab) before a token that would pass ``width``."""
    head = name.decode("ascii") + ":"
    lines: list[str] = []
    line = head
    for index, token in enumerate(tokens):
        piece = token + (";" if index < len(tokens) - 1 else "")
        if line != head and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = "\t" + piece
        else:
            line += (" " if line == head else "") + piece
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def headers(verdict: Verdict, envelope: Envelope) -> bytes:
    """The report and SCL header fields the stage prepends."""
    return fold(REPORT, report_tokens(verdict, envelope)) + SCL_HEADER + f": {verdict.detail['scl']}\r\n".encode()
