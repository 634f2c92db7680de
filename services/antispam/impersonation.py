"""Impersonation by display name (in the spirit of EOP's anti-phishing impersonation protection). Pure.

Mail from outside whose author display name (as a client shows it, ``mailmoat_mail.author``):

- ``user``: is the name of a protected user (``antispam.impersonation.protected_users``), or holds
  the user's address, sent from another address;
- ``domain``: names a protected domain (``protected_domains``, and the accepted domains with
  ``include_accepted_domains``) — as a word or inside an address — sent from another organisational
  domain;
- ``address``: is, or holds, a real address (a domain of at least two labels under a public suffix
  the Public Suffix List knows, or under the RFC 6761 testing names ``test`` and ``example``) of
  another organisational domain than the one it is sent from (``address_in_name``):
  ``"ceo@bank.test" <x@evil.test>``. ``"hyatt@mozilla"`` is a nickname, not an address.

Users and domains are phish on the policy's word. An address is phish (``protected``) when its domain
is the organisation's (an accepted domain) or the policy protects it (a protected domain, a protected
user's address); otherwise only when the display name *is* that address and nothing else and its
domain publishes a DMARC policy of quarantine or reject (``dmarc_domain``, ``is_phish``: the DNS is the
caller's). Any other address of another domain in a display name is a scored spam signal
(``ADDRESS_SCORE``, ``FROM_NAME_ADDRESS``), not phish: forwarding services and feed gateways write
``"AuthorTracker@harpercollins.com [mothlight/harpercollins]" <ticket_...@sneakemail.com>``.

Names are read as they look (NFKC folding, format characters such as zero-width spaces dropped: a
fullwidth at sign (U+FF20) makes an address) and compared after case folding and collapsing white space and quotes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mailmoat_antispam.auth.dmarc import _psl, organizational_domain
from mailmoat_mail.author import Author, Mailbox, dns_name, recover
from mailmoat_policy import Policy

RULE_NAMES = {"user": "IMPERSONATION_USER", "domain": "IMPERSONATION_DOMAIN", "address": "IMPERSONATION_ADDRESS"}
SCORED_RULE = "FROM_NAME_ADDRESS"
"""An address of another domain in the display name that is not phish (see the module's docstring)."""
ADDRESS_SCORE = 2.5
"""Half the default spam score: SCL 1 on its own, spam with other signals."""
TESTING_TLDS = frozenset({"test", "example"})
"""RFC 6761 names reserved for testing, counted as public suffixes (they are not in the list)."""
DMARC_PROTECTED = frozenset({"quarantine", "reject"})


@dataclass(frozen=True)
class Finding:
    kind: str
    """``user``, ``domain`` or ``address``."""
    claimed: str
    """The protected user's name, the protected domain, or the address in the display name."""
    sender: str
    """The author address that carried the name."""
    protected: bool = True
    """Phish on the policy's word (always for ``user`` and ``domain``); for ``address``, when its domain
    is an accepted or protected domain or it is a protected user's address."""
    whole: bool = False
    """``address``: the display name is that address and nothing else."""

    def detail(self) -> dict[str, str]:
        return {"kind": self.kind, "claimed": self.claimed, "sender": self.sender}


def visible(name: str) -> str:
    """A display name as it looks: NFKC (a fullwidth at sign, U+FF20, is ``@``), format characters that show as
    nothing (zero-width spaces and joiners, soft hyphens, direction marks) dropped."""
    return "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf")


def fold(name: str) -> str:
    """A display name for comparison: as it looks (``visible``), case-folded, quotes and surrounding
    punctuation dropped, white space collapsed."""
    text = visible(name).casefold()
    text = re.sub(r"[\"'`\u00ab\u00bb\u2018-\u201f]", "", text)
    return " ".join(text.split()).strip(" .,;:-_()[]<>")


def _org(domain: str) -> str:
    name = dns_name(domain) or domain.lower()
    return organizational_domain(name) if name else ""


def real_domain(domain: str) -> bool:
    """A domain mail can come from: two labels or more, under a suffix the Public Suffix List knows (or a
    testing name). ``mozilla`` and ``host.localdomain`` are not."""
    name = dns_name(domain) or ""
    if "." not in name.strip("."):
        return False
    name = name.rstrip(".")
    suffix = _psl().publicsuffix(name, accept_unknown=False)
    if suffix is None:
        return name.rpartition(".")[2] in TESTING_TLDS
    return name != suffix


def _org_protected(org: str, policy: Policy, domains: list[str]) -> bool:
    accepted = [d.domain.lower().rstrip(".") for d in policy.accepted_domains if "*" not in d.domain]
    return any(_org(d) == org for d in [*domains, *accepted])


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
    shown = [a for a in recover(visible(mailbox.name)) if real_domain(a.rpartition("@")[2])]
    for user in settings.protected_users:
        if (name == fold(user.name) or user.address in shown) and sender != user.address:
            return Finding("user", user.name, sender)
    for domain in domains:
        if _names_domain(name, fold(domain)) and _org(domain) != sender_org:
            return Finding("domain", domain, sender)
    if settings.address_in_name:
        whole = [a for a in shown if name.strip("<>[]()") == a]
        for address in shown:
            org = _org(address.rpartition("@")[2])
            if org != sender_org:
                return Finding("address", address, sender, _org_protected(org, policy, domains),
                               address in whole)
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


def dmarc_domain(found: Finding) -> str | None:
    """The domain whose DMARC policy decides whether ``found`` is phish, or None when it needs none."""
    if found.kind != "address" or found.protected or not found.whole:
        return None
    return found.claimed.rpartition("@")[2]


def is_phish(found: Finding, published: str | None = None) -> bool:
    """Phish, or only the scored signal: ``published`` is the DMARC policy that applies to
    ``dmarc_domain(found)`` (None when not looked up or not found)."""
    if found.protected:
        return True
    return found.whole and published in DMARC_PROTECTED


__all__ = ["ADDRESS_SCORE", "RULE_NAMES", "SCORED_RULE", "Finding", "dmarc_domain", "find", "fold", "is_phish",
           "protected_domains", "real_domain", "visible"]
