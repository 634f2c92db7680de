"""Rule conditions: one predicate per field of ``RuleConditions``, registered under the field's name.

Each takes the message facts and the rule's conditions and reads its own field; several values in one
condition match when any does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from functools import lru_cache

from mailmoat_policy import RuleConditions
from mailmoat_routing.rules.message import Facts, domain_of
from mailmoat_routing.rules.registry import Registry

Condition = Callable[[Facts, RuleConditions], bool]
CONDITIONS: Registry[Condition] = Registry("condition")
condition = CONDITIONS.register


def matches_value(value: str, patterns: Iterable[str]) -> bool:
    """``value`` (lower-cased) equals a pattern, or matches it as a glob (``*``, ``?``, ``[...]``)."""
    value = value.strip().lower()
    for pattern in patterns:
        if value == pattern or (any(c in pattern for c in "*?[") and fnmatchcase(value, pattern)):
            return True
    return False


@lru_cache(maxsize=4096)
def _word(word: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in word.split()) + r"(?!\w)", re.IGNORECASE)


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def contains_words(text: str, words: Iterable[str]) -> bool:
    """Any word or phrase appears in ``text`` as whole words, case-insensitively (any run of white
    space between the words of a phrase)."""
    return any(_word(w).search(text) for w in words)


def matches_patterns(text: str, patterns: Iterable[str]) -> bool:
    return any(_regex(p).search(text) for p in patterns)


@condition("sender_address")
def sender_address(facts: Facts, spec: RuleConditions) -> bool:
    return bool(facts.sender) and matches_value(facts.sender, spec.sender_address or ())


@condition("sender_domain")
def sender_domain(facts: Facts, spec: RuleConditions) -> bool:
    domain = domain_of(facts.sender)
    return bool(domain) and matches_value(domain, spec.sender_domain or ())


@condition("from_address")
def from_address(facts: Facts, spec: RuleConditions) -> bool:
    """Any author address a mail client shows (every mailbox of every From field, and the addresses
    of a From that does not parse) matches."""
    return any(matches_value(a, spec.from_address or ()) for a in facts.author.addresses)


@condition("from_domain")
def from_domain(facts: Facts, spec: RuleConditions) -> bool:
    return any(matches_value(domain_of(a), spec.from_domain or ()) for a in facts.author.addresses if domain_of(a))


@condition("recipient_address")
def recipient_address(facts: Facts, spec: RuleConditions) -> bool:
    return any(matches_value(r, spec.recipient_address or ()) for r in facts.recipients)


@condition("recipient_domain")
def recipient_domain(facts: Facts, spec: RuleConditions) -> bool:
    return any(matches_value(domain_of(r), spec.recipient_domain or ()) for r in facts.recipients if domain_of(r))


@condition("sender_location")
def sender_location(facts: Facts, spec: RuleConditions) -> bool:
    """Inside: the sender's domain is accepted and the message came from the organisation's own servers
    (a message claiming an accepted domain from anywhere else is outside)."""
    domain = domain_of(facts.sender)
    envelope = facts.envelope
    from_us = envelope.direction == "outbound" or facts.policy.is_internal(envelope.client_ip)
    inside = bool(domain) and facts.policy.accepted_domain(domain) is not None and from_us
    return inside == (spec.sender_location == "inside")


@condition("header_contains")
def header_contains(facts: Facts, spec: RuleConditions) -> bool:
    assert spec.header_contains is not None
    return any(contains_words(v, spec.header_contains.words) for v in facts.header(spec.header_contains.header))


@condition("header_matches")
def header_matches(facts: Facts, spec: RuleConditions) -> bool:
    assert spec.header_matches is not None
    return any(matches_patterns(v, spec.header_matches.patterns) for v in facts.header(spec.header_matches.header))


@condition("subject_contains")
def subject_contains(facts: Facts, spec: RuleConditions) -> bool:
    return contains_words(facts.subject, spec.subject_contains or ())


@condition("subject_matches")
def subject_matches(facts: Facts, spec: RuleConditions) -> bool:
    return matches_patterns(facts.subject, spec.subject_matches or ())


@condition("body_contains")
def body_contains(facts: Facts, spec: RuleConditions) -> bool:
    return contains_words(facts.body, spec.body_contains or ())


@condition("subject_or_body_contains")
def subject_or_body_contains(facts: Facts, spec: RuleConditions) -> bool:
    words = spec.subject_or_body_contains or ()
    return contains_words(facts.subject, words) or contains_words(facts.body, words)


@condition("attachment_name")
def attachment_name(facts: Facts, spec: RuleConditions) -> bool:
    return any(a.name and matches_value(a.name, spec.attachment_name or ()) for a in facts.attachments)


@condition("attachment_extension")
def attachment_extension(facts: Facts, spec: RuleConditions) -> bool:
    wanted = set(spec.attachment_extension or ())
    return any(a.extension in wanted for a in facts.attachments)


@condition("attachment_type")
def attachment_type(facts: Facts, spec: RuleConditions) -> bool:
    """The true type found in the content, whatever the file is called."""
    wanted = set(spec.attachment_type or ())
    return any(a.kind in wanted for a in facts.attachments)


@condition("attachment_size_over")
def attachment_size_over(facts: Facts, spec: RuleConditions) -> bool:
    limit = spec.attachment_size_over or 0
    return any(a.size > limit for a in facts.attachments)


@condition("attachment_password_protected")
def attachment_password_protected(facts: Facts, spec: RuleConditions) -> bool:
    found = facts.av_found_encrypted or any(a.encrypted for a in facts.attachments)
    return found == bool(spec.attachment_password_protected)


@condition("message_size_over")
def message_size_over(facts: Facts, spec: RuleConditions) -> bool:
    return facts.size > (spec.message_size_over or 0)


@condition("sender_ip")
def sender_ip(facts: Facts, spec: RuleConditions) -> bool:
    return bool(facts.envelope.client_ip) and facts.envelope.client_ip in spec.sender_ips()


@condition("scl_at_least")
def scl_at_least(facts: Facts, spec: RuleConditions) -> bool:
    scl = facts.scl
    return scl is not None and spec.scl_at_least is not None and scl >= spec.scl_at_least


@condition("bcl_at_least")
def bcl_at_least(facts: Facts, spec: RuleConditions) -> bool:
    bcl = facts.bcl
    return bcl is not None and spec.bcl_at_least is not None and bcl >= spec.bcl_at_least


@condition("verdict")
def verdict(facts: Facts, spec: RuleConditions) -> bool:
    return any(name in facts.verdict_names for name in spec.verdict or ())


@condition("impersonation")
def impersonation(facts: Facts, spec: RuleConditions) -> bool:
    """The antispam verdict found impersonation of one of these kinds."""
    found = facts.spam.impersonation if facts.spam is not None else None
    return found is not None and found.kind in (spec.impersonation or ())


@condition("inbound_connector")
def inbound_connector(facts: Facts, spec: RuleConditions) -> bool:
    name = facts.envelope.inbound_connector
    return name is not None and name.lower() in (spec.inbound_connector or ())


CONDITIONS.require(RuleConditions.model_fields)
