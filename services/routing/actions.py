"""What routing does with a message, from the filter verdicts (pure; decision 004).

``disposition`` picks the one verdict that decides, by precedence: malware > connection reject >
hcphish > phish > hcspam > DMARC reject > DMARC quarantine > spoof > spam > bulk, and returns its
action. ``carry_out`` applies the actions that change the message (Subject prefix, redirect, strip)
and says whether it goes on to delivery; ``ndr_for`` builds the report a ``reject`` sends.

A released message (``released_from`` set) skips every verdict action (EOP's ``SFV:SKQ``). An
allow-listed message (SCL -1 from the connection filter's IP allow list or the antispam stage) skips
the antispam actions, except high-confidence phishing (as EOP, allow lists never deliver it); the
malware action always applies.

A filter stage that failed on a message (``mailmoat_platform.stagefault``) leaves an error verdict: the
antivirus stage's ``unscannable`` (action ``quarantine``) goes the way of every antivirus finding;
the antispam stage's ``error`` takes ``antispam.actions.error`` (deliver by default), below every
spam category; the connection filter's ``error`` calls for nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mailmoat_mail import mimeedit
from mailmoat_mail.dsn import Failure, build_ndr
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import Policy

SPAM_ORDER = ("hcphish", "phish", "hcspam", "dmarc_reject", "dmarc_quarantine", "spoof", "spam", "bulk")
"""Antispam keys of ``antispam.actions``, strongest first."""
SPAM_CATEGORIES = frozenset({"hcphish", "phish", "hcspam", "spoof", "spam", "bulk"})
CLEAN_AV = frozenset({"clean", "unscanned"})
DELIVERING = frozenset({"deliver", "junk", "prepend_subject", "redirect", "strip"})
"""Actions after which the message goes on to its routes."""
_PART = re.compile(r"\bpart (\d+(?:\.\d+)*(?:\.uu\d+)?)")


@dataclass(frozen=True)
class Disposition:
    """The action for a message and the verdict that caused it."""

    action: str
    """``deliver``, ``junk``, ``prepend_subject``, ``redirect``, ``quarantine``, ``delete``, ``reject``, ``strip``."""
    cause: str = "none"
    """``none`` (no verdict called for an action), ``released``, ``malware``, ``connection``, an
    antispam key of ``SPAM_ORDER``, or ``error`` (the antispam stage failed); the quarantine reason."""
    stage: str | None = None
    result: str | None = None
    """The deciding verdict's result (an antivirus result such as ``blocked-type``, a spam category)."""
    reason: str = ""
    """A line for the trace and the NDR."""
    status: str | None = None
    """RFC 3463 status a ``reject`` reports."""
    strip: tuple[str, ...] = ()
    """MIME part paths a ``strip`` removes (empty: the attachments the verdict names, else all)."""

    def describe(self) -> str:
        what = f"{self.cause}" + (f" ({self.result})" if self.result and self.result != self.cause else "")
        return f"{self.action}: {what}" + (f": {self.reason}" if self.reason else "")


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default


def allow_listed(envelope: Envelope) -> bool:
    """SCL -1: the connection filter's IP allow list, or the antispam stage's own allow verdict."""
    conn = envelope.verdicts.get("connection_filter")
    if conn is not None and (conn.result == "allow" or _int(conn.detail.get("scl"), 0) == -1):
        return True
    spam = envelope.verdicts.get("antispam")
    return spam is not None and (spam.result == "allowed" or _int(spam.detail.get("scl"), 0) == -1)


def spam_hits(verdict: Verdict) -> list[str]:
    """Every ``SPAM_ORDER`` key the antispam verdict calls for, strongest first."""
    hits = set()
    if verdict.result in SPAM_CATEGORIES:
        hits.add(verdict.result)
    category = verdict.detail.get("category")
    if category in SPAM_CATEGORIES:
        hits.add(category)
    for item in verdict.detail.get("categories") or []:
        if item in SPAM_CATEGORIES:
            hits.add(item)
    dmarc = verdict.detail.get("dmarc")
    if isinstance(dmarc, dict) and str(dmarc.get("result", "")).lower() == "fail":
        policy = str(dmarc.get("policy", "")).lower()
        if policy in ("reject", "quarantine"):
            hits.add(f"dmarc_{policy}")
    return [key for key in SPAM_ORDER if key in hits]


def strip_paths(verdict: Verdict) -> tuple[str, ...]:
    """The MIME parts an antivirus verdict wants stripped: ``detail.strip``, else the parts its findings name."""
    listed = verdict.detail.get("strip")
    if isinstance(listed, list) and listed:
        return tuple(str(p) for p in listed)
    found: list[str] = []
    findings = verdict.detail.get("findings") or {}
    texts = [t for values in findings.values() for t in values] if isinstance(findings, dict) else []
    for text in texts:
        for path in _PART.findall(str(text)):
            if path not in found:
                found.append(path)
    return tuple(found)


def _malware(verdict: Verdict, policy: Policy) -> Disposition:
    action = str(verdict.detail.get("action") or policy.antimalware.action)
    names = [str(n) for n in verdict.detail.get("names") or []]
    reason = {
        "malware": f"malware detected ({', '.join(names)})" if names else "malware detected",
        "archive-bomb": "an archive exceeds the archive limits",
        "blocked-type": "a blocked attachment type",
        "encrypted": "an encrypted archive that cannot be scanned",
        "unscannable": "content that could not be scanned",
    }.get(verdict.result, f"antivirus verdict {verdict.result}")
    return Disposition(
        action=action if action in ("quarantine", "reject", "strip") else "quarantine",
        cause="malware", stage="antivirus", result=verdict.result, reason=reason,
        status="5.7.1" if action == "reject" else None,
        strip=strip_paths(verdict) if action == "strip" else (),
    )


def _connection(verdict: Verdict) -> Disposition:
    ip = verdict.detail.get("client_ip", "")
    if verdict.detail.get("reason") == "ip_block":
        reason = f"client host [{ip}] is on the IP block list"
    else:
        zones = [d.get("zone") for d in verdict.detail.get("dnsbl") or []
                 if isinstance(d, dict) and d.get("result") == "listed" and d.get("action") == "reject"]
        reason = f"client host [{ip}] blocked using {', '.join(z for z in zones if z) or 'a DNS block list'}"
    return Disposition("reject", "connection", "connection_filter", verdict.result, reason, "5.7.1")


def _spam(key: str, verdict: Verdict, policy: Policy) -> Disposition:
    action = getattr(policy.antispam.actions, key)
    scl = verdict.detail.get("scl")
    if key.startswith("dmarc_"):
        dmarc = verdict.detail.get("dmarc") or {}
        domain = dmarc.get("domain", "") if isinstance(dmarc, dict) else ""
        reason = (f"sending domain {domain} does not pass DMARC verification and has a DMARC policy of "
                  f"{key.removeprefix('dmarc_')}")
    else:
        reason = f"SCL {scl}" if scl is not None else ""
    status = ("5.7.509" if key == "dmarc_reject" else "5.7.1") if action == "reject" else None
    return Disposition(action, key, "antispam", verdict.result, reason, status)


def disposition(envelope: Envelope, policy: Policy) -> Disposition:
    """The action the verdicts call for, by the precedence of decision 004."""
    if envelope.released_from:
        return Disposition("deliver", "released", reason=f"released from quarantine {envelope.released_from}")
    av = envelope.verdicts.get("antivirus")
    if av is not None and av.result not in CLEAN_AV:
        return _malware(av, policy)
    conn = envelope.verdicts.get("connection_filter")
    if conn is not None and conn.result == "reject":
        return _connection(conn)
    spam = envelope.verdicts.get("antispam")
    if spam is not None:
        hits = spam_hits(spam)
        if allow_listed(envelope):
            hits = [h for h in hits if h == "hcphish"]
        if hits:
            return _spam(hits[0], spam, policy)
        if spam.result == "error" and policy.antispam.actions.error != "deliver" and not allow_listed(envelope):
            return Disposition(policy.antispam.actions.error, "error", "antispam", "error",
                               f"the antispam stage failed on this message: {spam.detail.get('error', 'error')}")
    return Disposition("deliver")


# --- carrying it out ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of the message: it goes on (``delivers``) as ``envelope``/``data``, or it ends here."""

    disposition: Disposition
    envelope: Envelope
    data: bytes
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return self.disposition.action

    @property
    def delivers(self) -> bool:
        return self.action in DELIVERING


def carry_out(disp: Disposition, envelope: Envelope, data: bytes, policy: Policy) -> Outcome:
    """Apply the actions that change the message; ``quarantine``, ``delete`` and ``reject`` are left
    to the caller (they end the message). A ``strip`` that finds nothing to strip becomes ``quarantine``."""
    if disp.action == "prepend_subject":
        return Outcome(disp, envelope, mimeedit.prepend_subject(data, policy.antispam.subject_prefix),
                       {"prefix": policy.antispam.subject_prefix})
    if disp.action == "redirect":
        target = policy.antispam.redirect_to
        if not target:
            return Outcome(replace(disp, action="quarantine", reason=disp.reason + "; redirect_to is not set"),
                           envelope, data)
        redirected = envelope.model_copy(update={"rcpt_to": [target]})
        return Outcome(disp, redirected, data, {"to": target, "original_recipients": list(envelope.rcpt_to)})
    if disp.action == "strip":
        paths = list(disp.strip) or [s.path for s in mimeedit.attachments(data)]
        stripped, done = mimeedit.replace_parts(data, paths, disp.reason or "removed by the malware filter")
        if not done:
            return Outcome(replace(disp, action="quarantine", reason=disp.reason + "; no attachment to strip"),
                           envelope, data)
        return Outcome(replace(disp, strip=tuple(done)), envelope.model_copy(update={"size": len(stripped)}),
                       stripped, {"stripped": done})
    return Outcome(disp, envelope, data)


def ndr_for(disp: Disposition, envelope: Envelope, data: bytes, now: datetime,
            hostname: str) -> tuple[Envelope, bytes] | None:
    """The non-delivery report of a ``reject`` (None for the null sender or a forged one).

    Its id is derived from the message's, so a redelivered message yields the same report (and egress
    delivers it once).
    """
    status = disp.status or "5.7.1"
    diagnostic = f"550 {status} Message rejected: {disp.reason or 'refused by policy'}"
    failures = [Failure(r, status, diagnostic) for r in envelope.rcpt_to]
    return build_ndr(envelope, data, failures, now, hostname, dsn_id=f"{envelope.id}N")


__all__ = ["DELIVERING", "SPAM_ORDER", "Disposition", "Outcome", "allow_listed", "carry_out", "disposition",
           "ndr_for", "spam_hits", "strip_paths"]
