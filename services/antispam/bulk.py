"""Bulk complaint level (pure): BCL 0-9 from list headers, bulk-mailer fingerprints and known bulk senders."""

from __future__ import annotations

import re

from mailmoat_antispam.content import Content

_MAILERS = re.compile(r"(?i)mailchimp|sendgrid|mailgun|constant ?contact|campaign ?monitor|sendinblue|"
                      r"brevo|klaviyo|hubspot|marketo|phplist|mailjet|amazonses|exacttarget|salesforce")


def _domain(address: str) -> str:
    address = address.strip().strip("<>")
    return address.rpartition("@")[2].lower().rstrip(">").strip() if "@" in address else ""


def sender_domains(content: Content, mail_from: str) -> list[str]:
    """The envelope sender's and the From: address's domains."""
    out = []
    for value in (mail_from, *content.header("from")):
        # From the start of a run only: inside one it finds what the run's start does, and a search from
        # each position of a run without its "@" reads the run to its end (quadratic).
        match = re.search(r"(?<![^<>\s@\"])[^<>\s@\"]+@([^<>\s@\"]+)", value)
        if match:
            out.append(match.group(1).lower().rstrip(".>"))
    return out


def domain_in(domain: str, listed: list[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in listed)


def bulk_level(content: Content, mail_from: str, bulk_senders: list[str], sender_bcl: int) -> tuple[int, list[str]]:
    """The BCL and the signals it came from."""
    signals: list[str] = []
    level = 0
    if content.header("list-unsubscribe"):
        level += 3
        signals.append("LIST_UNSUBSCRIBE")
        if content.header("list-unsubscribe-post"):
            level += 1
            signals.append("LIST_UNSUBSCRIBE_POST")
    if content.header("list-id"):
        level += 1
        signals.append("LIST_ID")
    precedence = (content.first("precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        level += 2
        signals.append(f"PRECEDENCE_{precedence.upper()}")
    fingerprints = " ".join(content.header("x-mailer") + content.header("x-campaign") + content.header("feedback-id")
                            + content.header("x-mailgun-sid") + content.header("x-sg-eid"))
    if _MAILERS.search(fingerprints) or content.header("x-campaign") or content.header("feedback-id"):
        level += 1
        signals.append("BULK_MAILER")
    if mail_from == "" and level:
        level -= 1
    for domain in sender_domains(content, mail_from):
        if domain_in(domain, bulk_senders):
            level = max(level, sender_bcl)
            signals.append("BULK_SENDER")
            break
    return min(level, 9), signals
