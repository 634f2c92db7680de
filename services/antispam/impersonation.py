"""Impersonation by display name (in the spirit of EOP's anti-phishing impersonation protection). Pure.

Mail from outside whose author display name (as a client shows it, ``mailmoat_common.author``):

- ``user``: is the name of a protected user (``antispam.impersonation.protected_users``), sent from
  another address;
- ``domain``: names a protected domain (``protected_domains``, and the accepted domains with
  ``include_accepted_domains``) — as a word or inside an address — sent from another organisational
  domain;
- ``address``: is, or holds, an address of another organisational domain than the one it is sent
  from (``address_in_name``): ``"ceo@bank.test" <x@evil.test>``.

Names are compared after Unicode NFKC folding, case folding and collapsing white space and quotes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mailmoat_antispam.auth.dmarc import organizational_domain
from mailmoat_common.author import Author, Mailbox, dns_name, recover
from mailmoat_common.policy import Policy

RULE_NAMES = {"user": "IMPERSONATION_USER", "domain": "IMPERSONATION_DOMAIN", "address": "IMPERSONATION_ADDRESS"}


@dataclass(frozen=True)
class Finding:
    kind: str
    """``user``, ``domain`` or ``address``."""
    claimed: str
    """The protected user's name, the protected domain, or the address in the display name."""
    sender: str
    """The author address that carried the name."""

    def detail(self) -> dict[str, str]:
        return {"kind": self.kind, "claimed": self.claimed, "sender": self.sender}


def fold(name: str) -> str:
    """A display name for comparison: NFKC, case-folded, quotes and surrounding punctuation dropped,
    white space collapsed."""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = re.sub(r"[\"'`\u00ab\u00bb\u2018-\u201f]", "", text)
    return " ".join(text.split()).strip(" .,;:-_()[]<>")


def _org(domain: str) -> str:
    name = dns_name(domain) or domain.lower()
    return organizational_domain(name) if name else ""


def _names_domain(name: str, domain: str) -> bool:
    return re.search(r"(?<![\w.-])" + re.escape(domain) + r"(?![\w-])", name) is not None


def protected_domains(policy: Policy) -> list[str]:
    settings = policy.antispam.impersonation
    domains = list(settings.protected_domains)
    if settings.include_accepted_domains:
        domains += [d.domain.lower().rstrip(".") for d in policy.accepted_domains if "*" not in d.domain]
    return [d for i, d in enumerate(domains) if d and d not in domains[:i]]


def _check(mailbox: Mailbox, policy: Policy, domains: list[str]) -> Finding | None:
    settings = policy.antispam.impersonation
    name = fold(mailbox.name)
    if not name:
        return None
    sender = mailbox.address.lower()
    sender_org = _org(mailbox.domain)
    for user in settings.protected_users:
        if name == fold(user.name) and sender != user.address:
            return Finding("user", user.name, sender)
    for domain in domains:
        if _names_domain(name, fold(domain)) and _org(domain) != sender_org:
            return Finding("domain", domain, sender)
    if settings.address_in_name:
        for address in recover(mailbox.name):
            if _org(address.rpartition("@")[2]) != sender_org:
                return Finding("address", address, sender)
    return None


def find(author: Author, policy: Policy, *, outside: bool) -> Finding | None:
    """The first impersonation among the author mailboxes of a message from outside, or None."""
    if not outside:
        return None
    domains = protected_domains(policy)
    for mailbox in author.mailboxes:
        found = _check(mailbox, policy, domains)
        if found is not None:
            return found
    return None


__all__ = ["RULE_NAMES", "Finding", "find", "fold", "protected_domains"]
