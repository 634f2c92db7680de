"""Content rules (pure): GTUBE, the policy's header/subject/body/URL rules, header heuristics.

Each check returns ``Hit``s: a named rule with its score; names appear in the report header.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from mailmoat_antispam.content import Content, url_href
from mailmoat_policy import SpamRule

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
"""The Generic Test for Unsolicited Bulk Email: a message carrying it is high-confidence spam."""


@dataclass(frozen=True)
class Hit:
    name: str
    score: float
    detail: str = ""
    category: str | None = None
    """``phish`` or ``hcphish`` for a policy rule that says so."""


@functools.lru_cache(maxsize=4096)
def _compiled(regex: str | None, phrase: str | None) -> re.Pattern[str]:
    if regex is not None:
        return re.compile(regex, re.IGNORECASE)
    assert phrase is not None
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in phrase.split()) + r"(?!\w)", re.IGNORECASE)


def _targets(rule: SpamRule, content: Content) -> list[str]:
    if rule.where == "subject":
        return [content.subject]
    if rule.where == "body":
        return [content.text]
    if rule.where == "url":  # each as written and as the browser writes it out, when that differs
        return [form for url in content.urls for form in dict.fromkeys((url, url_href(url) or url))]
    return content.header(rule.where.partition(":")[2])


def policy_rules(rules: list[SpamRule], content: Content) -> list[Hit]:
    """Every policy rule that matches somewhere it looks (each rule counts once)."""
    hits = []
    for rule in rules:
        pattern = _compiled(rule.regex, rule.phrase)
        for target in _targets(rule, content):
            if pattern.search(target):
                hits.append(Hit(rule.name, rule.score, category=rule.category))
                break
    return hits


def gtube(content: Content, data: bytes) -> bool:
    return GTUBE in content.text or GTUBE.encode() in data


_ADDR = re.compile(r"[^<>\s@]@[^<>\s@]")
"""Something shaped like an address: an ``@`` between two characters an address may hold. (The pattern of
the whole address, searched, backtracks quadratically on a long field without one.)"""
_RECEIVED_FROM = re.compile(r"(?i)^from\s+(\S+)(?:\s+\(([^)]*)\))?")
_IP = re.compile(r"\[?(\d{1,3}(?:\.\d{1,3}){3})\]?")


def header_heuristics(content: Content) -> list[Hit]:
    """Malformed or missing header fields and forged-looking Received chains."""
    hits: list[Hit] = []
    counts: dict[str, int] = {}
    for name, _ in content.headers:
        counts[name] = counts.get(name, 0) + 1
    if not counts.get("from"):
        hits.append(Hit("MISSING_FROM", 2.0))
    elif not _ADDR.search(content.first("from") or ""):
        hits.append(Hit("MALFORMED_FROM", 1.5))
    for name in ("from", "subject", "date", "message-id", "to"):
        if counts.get(name, 0) > 1:
            hits.append(Hit(f"DUPLICATE_{name.upper().replace('-', '_')}", 1.5))
    if not counts.get("date"):
        hits.append(Hit("MISSING_DATE", 0.5))
    else:
        try:
            parsedate_to_datetime(content.first("date") or "")
        except (TypeError, ValueError, IndexError, OverflowError):  # a year of 20 digits overflows
            hits.append(Hit("MALFORMED_DATE", 1.0))
    if not counts.get("message-id"):
        hits.append(Hit("MISSING_MESSAGE_ID", 0.5))
    elif not re.fullmatch(r"\s*<[^<>@\s]+@[^<>\s]+>\s*", content.first("message-id") or ""):
        hits.append(Hit("MALFORMED_MESSAGE_ID", 0.5))
    if not counts.get("subject"):
        hits.append(Hit("MISSING_SUBJECT", 0.3))
    if any("\ufffd" in v for _, v in content.headers):
        hits.append(Hit("HEADER_8BIT_INVALID", 0.5))
    if any(d in ("MissingHeaderBodySeparatorDefect", "InvalidHeaderDefect", "NonPrintableDefect")
           for d in content.defects):
        hits.append(Hit("MALFORMED_HEADER", 1.0))
    hits += forged_received(content.header("received"))
    return hits


def forged_received(received: list[str]) -> list[Hit]:
    """Received fields that cannot be true: private or impossible addresses claimed as relays of
    mail that came from outside, or fields without the mandatory ``by`` clause or date."""
    hits: list[Hit] = []
    for value in received:
        if not re.search(r"(?i)\bby\s+\S+", value) or ";" not in value:
            hits.append(Hit("RECEIVED_MALFORMED", 1.0))
            break
    for value in received:
        match = _RECEIVED_FROM.match(value)
        if not match:
            continue
        for ip in _IP.findall(match.group(2) or ""):
            octets = [int(o) for o in ip.split(".")]
            if max(octets) > 255 or octets[0] in (0, 255):
                hits.append(Hit("RECEIVED_FORGED_IP", 2.0))
                return hits
    return hits
