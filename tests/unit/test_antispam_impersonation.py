"""Impersonation by display name: protected users and domains, an address of another domain in the
name, only from outside; the verdict's phish category shows as CAT:UIMP / CAT:DIMP; an address the
policy does not protect is phish only when it is the whole name and DMARC protects its domain, else a
score (the ham shapes of the SpamAssassin corpus); allow lists read the From the author parser reads."""

from __future__ import annotations

import pytest

from mailmoat_antispam import impersonation
from mailmoat_antispam.check import impersonation_hits
from mailmoat_antispam.content import parse
from mailmoat_antispam.rules import Hit
from mailmoat_antispam.score import Findings, allowance, decide, report_tokens
from mailmoat_mail.author import read_author
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy

POLICY = Policy.model_validate({
    "organization": {"hostname": "gw.test", "internal_networks": ["10.0.0.0/8"]},
    "accepted_domains": [{"domain": "example.com"}],
    "antispam": {"impersonation": {"protected_users": [{"name": "Jane Doe", "address": "jane@example.com"}],
                                   "protected_domains": ["bank.test"]},
                 "allowed_senders": ["boss@partner.test"], "blocked_domains": ["blocked.test"]},
})


def _find(from_value: str, *, outside: bool = True, policy: Policy = POLICY) -> tuple[str, str] | None:
    author = read_author(f"From: {from_value}\r\n\r\n".encode())
    found = impersonation.find(author, policy, outside=outside)
    return None if found is None else (found.kind, found.claimed)


@pytest.mark.parametrize(("value", "expected"), [
    ('"Jane Doe" <jane.doe@freemail.test>', ("user", "Jane Doe")),
    ("  JANE   doe <jd@freemail.test>", ("user", "Jane Doe")),
    ("=?utf-8?q?Jane_Doe?= <jd@freemail.test>", ("user", "Jane Doe")),
    ('"\uff2aane Doe" <jd@freemail.test>', ("user", "Jane Doe")),  # fullwidth J, NFKC
    ('"Bank.test Support" <help@evil.test>', ("domain", "bank.test")),
    ('"ceo@bank.test" <x@evil.test>', ("domain", "bank.test")),
    ('"example.com IT desk" <it@evil.test>', ("domain", "example.com")),  # an accepted domain
    ('"ceo@other.test" <x@evil.test>', ("address", "ceo@other.test")),
    ("x@evil.test (Jane Doe)", ("user", "Jane Doe")),  # the comment a client shows as the name
    ('"=?utf-8?b?Y2VvQG90aGVyLnRlc3Q=?=" <x@evil.test>', ("address", "ceo@other.test")),
    ("=?utf-8?q?ceo=40other.test?= <x@evil.test>", ("address", "ceo@other.test")),  # a dot in the Q word
    ('"ceo\uff20other.test" <x@evil.test>', ("address", "ceo@other.test")),  # a fullwidth at sign, NFKC
    ('"ceo@other\u200b.te\u00adst" <x@evil.test>', ("address", "ceo@other.test")),  # zero-width space, soft hyphen
    ('"Jane Doe" <jane@example.com>', None),  # her own address (authentication is compauth's business)
    ('"Bank.test Support" <help@mail.bank.test>', None),  # from the protected domain itself
    ('"x@evil.test" <x@mail.evil.test>', None),  # the same organisational domain
    ("Jane <jd@freemail.test>", None),
    ("jd@freemail.test", None),
    ('"bank.testing" <a@evil.test>', None),  # a word, not the domain
    ('"hyatt@mozilla" <rssfeeds@spamassassin.taint.org>', None),  # a nickname: no dot, no public suffix
    ('"bob@host.localdomain" <b@evil.test>', None),  # no public suffix
    ('"me@com" <b@evil.test>', None),
    ('"jane@example.com" <jd@freemail.test>', ("user", "Jane Doe")),  # a protected user's address
])
def test_impersonation(value: str, expected: tuple[str, str] | None) -> None:
    assert _find(value) == expected


def test_only_from_outside_and_switchable() -> None:
    assert _find('"Jane Doe" <jd@freemail.test>', outside=False) is None
    off = POLICY.model_copy(deep=True)
    off.antispam.impersonation.address_in_name = False
    off.antispam.impersonation.include_accepted_domains = False
    assert _find('"ceo@other.test" <x@evil.test>', policy=off) is None
    assert _find('"example.com IT desk" <it@evil.test>', policy=off) is None


@pytest.mark.parametrize(("kind", "cat"), [("user", "UIMP"), ("domain", "DIMP"), ("address", "DIMP")])
def test_verdict_is_phish_with_its_own_cat(kind: str, cat: str) -> None:
    findings = Findings(hits=[Hit(impersonation.RULE_NAMES[kind], 0.0, "x", category="phish")],
                        impersonation={"kind": kind, "claimed": "x", "sender": "a@evil.test"})
    verdict = decide(findings, POLICY.antispam)
    assert verdict.result == "phish" and verdict.detail["scl"] >= 8
    assert verdict.detail["impersonation"]["kind"] == kind
    tokens = report_tokens(verdict, Envelope(client_ip="203.0.113.5", mail_from="a@evil.test", rcpt_to=["b@c.d"]))
    assert f"CAT:{cat}" in tokens and f"RULES:{impersonation.RULE_NAMES[kind]}" in tokens
    plain = decide(Findings(hits=[Hit("R", 0.0, category="phish")]), POLICY.antispam)
    assert "CAT:PHSH" in report_tokens(plain, Envelope(client_ip="203.0.113.5", rcpt_to=["b@c.d"]))


def _allowance(from_value: str, mail_from: str = "x@evil.test"):
    data = f"From: {from_value}\r\nSubject: s\r\n\r\nbody\r\n".encode()
    envelope = Envelope(client_ip="203.0.113.5", mail_from=mail_from, rcpt_to=["a@example.com"])
    return allowance(envelope, parse(data), POLICY, read_author(data))


def test_allow_lists_read_the_author_not_the_display_name() -> None:
    assert _allowance("Boss <boss@partner.test>").kind == "sender"
    assert _allowance('"boss@partner.test" <x@evil.test>') is None
    assert _allowance("boss@partner.test <x@evil.test>") is None  # does not parse: allows nothing
    assert _allowance("x@evil.test <ceo@blocked.test>").kind == "blocked"  # ...but blocks


def _finding(from_value: str, policy: Policy = POLICY) -> impersonation.Finding:
    found = impersonation.find(read_author(f"From: {from_value}\r\n\r\n".encode()), policy, outside=True)
    assert found is not None
    return found


@pytest.mark.parametrize(("domain", "real"), [
    ("harpercollins.com", True), ("mail.bank.co.uk", True), ("bank.test", True), ("xn--bcher-kva.example", True),
    ("mozilla", False), ("co.uk", False), ("com", False), ("host.localdomain", False), ("a.invalid", False),
])
def test_real_domain(domain: str, real: bool) -> None:
    assert impersonation.real_domain(domain) is real


@pytest.mark.parametrize("value", [
    '"AuthorTracker@harpercollins.com [mothlight/harpercollins]" <ticket_23aj49j1029828689414@sneakemail.com>',
    '"TheServerSide Connectionnewsletter@theserverside.com [mothlight/serverside.com]" <ticket_jc@sneakemail.com>',
])
def test_forwarding_service_names_are_scored_not_phish(value: str) -> None:
    found = _finding(value)
    assert (found.kind, found.protected, found.whole) == ("address", False, False)
    assert impersonation.dmarc_domain(found) is None  # no DNS asked
    assert not impersonation.is_phish(found, "reject")  # not even if the shown domain rejects
    findings = Findings()
    hits = impersonation_hits(found, findings, "reject")
    assert [(h.name, h.score, h.category) for h in hits] == [("FROM_NAME_ADDRESS", impersonation.ADDRESS_SCORE, None)]
    verdict = decide(Findings(hits=hits), POLICY.antispam)
    assert verdict.result == "clean" and verdict.detail["scl"] < 5 and "impersonation" not in verdict.detail
    assert findings.impersonation is None


def test_an_address_as_the_whole_name_is_phish_when_dmarc_protects_it() -> None:
    found = _finding('"CEO@Other.test" <x@evil.test>')
    assert (found.protected, found.whole) == (False, True)
    assert _finding("=?utf-8?q?CEO=40Other.test?= <x@evil.test>") == found  # the same name in a Q word with a dot
    for looks_alike in ('"CEO\uff20Other.test" <x@evil.test>', '"\u200bCEO@Other.test\u2060" <x@evil.test>'):
        assert _finding(looks_alike) == found, looks_alike  # as a client shows it: the address and nothing else
    assert impersonation.dmarc_domain(found) == "other.test"
    assert impersonation.is_phish(found, "reject") and impersonation.is_phish(found, "quarantine")
    assert not impersonation.is_phish(found, "none") and not impersonation.is_phish(found, None)
    findings = Findings()
    (hit,) = impersonation_hits(found, findings, "reject")
    assert (hit.name, hit.category) == ("IMPERSONATION_ADDRESS", "phish")
    assert findings.impersonation == {"kind": "address", "claimed": "ceo@other.test", "sender": "x@evil.test"}
    assert impersonation_hits(found, Findings(), None)[0].name == "FROM_NAME_ADDRESS"


def test_an_accepted_domains_address_is_phish_on_the_policys_word() -> None:
    off = POLICY.model_copy(deep=True)
    off.antispam.impersonation.include_accepted_domains = False
    found = _finding('"it@example.com via helpdesk" <it@evil.test>', off)
    assert (found.kind, found.protected) == ("address", True) and impersonation.dmarc_domain(found) is None
    assert impersonation.is_phish(found)
    sub = _finding('"ceo@mail.bank.test" <x@evil.test>')  # a protected domain's subdomain
    assert (sub.kind, sub.protected) == ("address", True)
