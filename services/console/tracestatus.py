"""A traced message's status per recipient, and the antispam verdict decoded (pure).

A message's latest event is often not its status: a quarantine digest's ``AGENTINFO`` follows a ``QUARANTINE``,
a ``DSN`` a ``FAIL``, and of a message to two recipients one may be delivered while the other is deferred.
The status of a recipient is the latest *outcome* event naming it (an event naming no recipient names them all);
a message's status is the distinct statuses of the recipients shown, so an end user sees their own only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

OUTCOMES = frozenset({"RECEIVE", "REJECT", "QUARANTINE", "RELEASE", "REDIRECT", "DELIVER", "DEFER", "FAIL",
                      "DEADLETTER", "DELETE"})
"""Events that say where a recipient's copy is; the others (AGENTINFO, ROUTE, EXPAND, RULE, SCAN, SPAM, MALWARE,
DSN, ERROR) say what happened on the way."""

CAT_CODES = {"hcphish": "HPHSH", "phish": "PHSH", "hcspam": "HSPM", "spoof": "SPOOF", "spam": "SPM", "bulk": "BULK"}
"""The antispam report's CAT codes (``mailmoat_antispam.score.CAT_CODES``)."""
IMPERSONATION_CATS = {"user": "UIMP", "domain": "DIMP", "address": "DIMP"}
SFV_MEANING = {"NSPM": "not spam", "SPM": "spam", "SKB": "blocked sender or domain",
               "SKA": "allowed sender or domain, not filtered", "SKN": "allowed IP or trusted connector, not filtered"}
"""What the report's SFV values say (as EOP's)."""


class EventLike(Protocol):
    at: datetime
    event: str
    service: str
    recipients: list[str]
    detail: str


@dataclass(frozen=True)
class Delivery:
    """Where one recipient's copy is: the latest outcome event naming it."""

    recipient: str
    status: str
    at: datetime
    service: str
    detail: str


def _key(address: str) -> str:
    return address.strip().lower()


def deliveries(events: Iterable[EventLike], recipients: Sequence[str]) -> list[Delivery]:
    """Each of ``recipients``' latest outcome (events oldest first), in the recipients' order; a recipient no
    outcome names is left out. Recipients an event names that are not in ``recipients`` are ignored."""
    wanted = {_key(r): r for r in recipients}
    latest: dict[str, EventLike] = {}
    for event in events:
        if event.event not in OUTCOMES:
            continue
        for recipient in (event.recipients or recipients):
            if _key(recipient) in wanted:
                latest[_key(recipient)] = event
    found = []
    for key, recipient in wanted.items():
        event = latest.get(key)
        if event is not None:
            found.append(Delivery(recipient, event.event, event.at, event.service, event.detail))
    return found


def statuses(found: Sequence[Delivery], fallback: str | None = None) -> list[str]:
    """The distinct statuses of a message's recipients, most pressing first (failed, deferred, held... delivered);
    ``[fallback]`` when no recipient has one."""
    order = ("FAIL", "DEADLETTER", "REJECT", "DEFER", "QUARANTINE", "RECEIVE", "RELEASE", "REDIRECT", "DELETE",
             "DELIVER")
    seen = {d.status for d in found}
    ranked = [s for s in order if s in seen]
    return ranked or ([fallback] if fallback else [])


@dataclass(frozen=True)
class SpamVerdict:
    """The antispam stage's verdict as its report header says it (``X-Mailmoat-Antispam-Report``)."""

    result: str
    scl: Any
    bcl: Any
    sfv: str
    cat: str
    score: Any
    rules: list[str]
    dmarc: str
    author: str

    @property
    def sfv_meaning(self) -> str:
        return SFV_MEANING.get(self.sfv, "")


def spam_verdict(events: Iterable[EventLike]) -> SpamVerdict | None:
    """The latest antispam verdict among the events (the stage's SPAM or AGENTINFO event data), decoded."""
    found = None
    for event in events:
        data = getattr(event, "data", None) or {}
        if event.service == "antispam" and isinstance(data, dict) and "scl" in data:
            found = data
    if found is None:
        return None
    category = found.get("category") or ""
    impersonation = found.get("impersonation") or {}
    cat = CAT_CODES.get(category, "NONE")
    if category == "phish" and isinstance(impersonation, dict) and impersonation.get("kind") in IMPERSONATION_CATS:
        cat = IMPERSONATION_CATS[impersonation["kind"]]
    dmarc = found.get("dmarc") or {}
    author = found.get("author") or {}
    rules = found.get("rules") or []
    return SpamVerdict(result=str(found.get("result") or ""), scl=found.get("scl"), bcl=found.get("bcl"),
                       sfv=str(found.get("sfv") or ""), cat=cat, score=found.get("score"),
                       rules=[str(r) for r in rules] if isinstance(rules, list) else [],
                       dmarc=str(dmarc.get("result") or "") if isinstance(dmarc, dict) else "",
                       author=str(author.get("from") or "") if isinstance(author, dict) else "")


def held_id(events: Iterable[EventLike]) -> str | None:
    """The quarantine id a QUARANTINE event names (the message's id), if it was held."""
    for event in events:
        data = getattr(event, "data", None) or {}
        if event.event == "QUARANTINE" and isinstance(data, dict) and data.get("quarantine_id"):
            return str(data["quarantine_id"])
    return None


@dataclass(frozen=True)
class AuthResult:
    """One result of an ``Authentication-Results`` field: ``spf=pass (comment) smtp.mailfrom=example.net``."""

    method: str
    result: str
    comment: str
    properties: str


def _split_outside_comments(text: str, separator: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_auth_results(value: str) -> tuple[str, list[AuthResult]]:
    """An ``Authentication-Results`` field's value (RFC 8601): its authserv-id and results, for reading (a part
    that is not ``method=result`` is left out)."""
    parts = [" ".join(p.split()) for p in _split_outside_comments(value, ";")]
    serv = parts[0].split(" ")[0] if parts and parts[0] else ""
    found = []
    for part in parts[1:]:
        head, _, rest = part.partition(" ")
        method, equals, result = head.partition("=")
        if not equals or not method or not result:
            continue
        comment, properties = "", rest
        if rest.startswith("("):
            closing = _split_outside_comments(rest, ")")
            comment = closing[0].lstrip("(").strip()
            properties = ")".join(closing[1:]).strip()
        found.append(AuthResult(method.lower(), result.lower(), comment, properties))
    return serv, found


def _text(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())[:300]


def traced_authentication(events: Iterable[EventLike]) -> list[AuthResult]:
    """The sender authentication the antispam stage traced (its event's ``authentication``: SPF, DKIM per signing
    domain, DMARC, ARC, compauth), latest event's, as ``AuthResult``s like the held copy's field; [] when none."""
    found = None
    for event in events:
        data = getattr(event, "data", None) or {}
        if event.service == "antispam" and isinstance(data, dict) and isinstance(data.get("authentication"), dict):
            found = data["authentication"]
    if not found:
        return []
    out: list[AuthResult] = []

    def part(name: str) -> dict[str, Any]:
        value = found.get(name)
        return value if isinstance(value, dict) else {}

    spf = part("spf")
    if spf.get("result"):
        prop = "smtp.helo" if spf.get("identity") == "helo" else "smtp.mailfrom"
        out.append(AuthResult("spf", _text(spf["result"]), "", f"{prop}={_text(spf.get('domain'))}"))
    helo = part("spf_helo")
    if helo.get("result"):
        out.append(AuthResult("spf", _text(helo["result"]), "", f"smtp.helo={_text(helo.get('domain'))}"))
    dkim = found.get("dkim")
    signatures = [d for d in dkim if isinstance(d, dict)] if isinstance(dkim, list) else []
    for sig in signatures:
        out.append(AuthResult("dkim", _text(sig.get("result")), "", f"header.d={_text(sig.get('domain'))}"))
    if dkim == []:
        out.append(AuthResult("dkim", "none", "message not signed", ""))
    dmarc = part("dmarc")
    if dmarc.get("result"):
        action = f"action={_text(dmarc['policy'])}" if dmarc.get("policy") else ""
        domain = f"header.from={_text(dmarc['domain'])}" if dmarc.get("domain") else ""
        out.append(AuthResult("dmarc", _text(dmarc["result"]), action, domain))
    if found.get("arc"):
        out.append(AuthResult("arc", _text(found["arc"]), "", ""))
    compauth = part("compauth")
    if compauth.get("result"):
        out.append(AuthResult("compauth", _text(compauth["result"]), "",
                              f"reason={_text(compauth.get('reason'))}" if compauth.get("reason") else ""))
    return out
