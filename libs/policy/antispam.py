"""``antispam``: categories and their actions, content rules, ASF, Bayes, engines, impersonation."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailmoat_policy.base import StrictModel

SpamCategory = Literal["hcphish", "phish", "hcspam", "spoof", "spam", "bulk"]
"""Antispam verdict categories, strongest first (malware, from the antivirus stage, outranks them all)."""

SpamAction = Literal["deliver", "junk", "prepend_subject", "redirect", "quarantine", "delete", "reject"]
"""What routing does with a message of a category: deliver untouched; deliver with the junk headers
(the mailbox server files it as junk); prepend ``subject_prefix`` to its Subject; redirect it to
``redirect_to``; quarantine it; delete it (traced); reject it with an NDR (DMARC reject only: spam is
never bounced to its forged sender)."""


class SpamActions(StrictModel):
    spam: SpamAction = "junk"
    hcspam: SpamAction = "quarantine"
    phish: SpamAction = "quarantine"
    hcphish: SpamAction = "quarantine"
    spoof: SpamAction = "quarantine"
    bulk: SpamAction = "junk"
    dmarc_reject: SpamAction = "reject"
    """A sender domain whose DMARC policy is ``p=reject`` failed DMARC (answer ``5.7.509``)."""
    dmarc_quarantine: SpamAction = "quarantine"
    """A sender domain whose DMARC policy is ``p=quarantine`` failed DMARC."""
    error: SpamAction = "deliver"
    """The antispam stage failed on the message (verdict ``error``, traced with the error): deliver it
    unfiltered by default, as a milter's ``accept`` default action does; ``junk`` or ``quarantine``
    to hold such mail instead (never ``reject``: the sender did nothing wrong)."""

    @model_validator(mode="after")
    def _no_backscatter(self) -> SpamActions:
        for name in ("spam", "hcspam", "phish", "hcphish", "spoof", "bulk", "error"):
            if getattr(self, name) == "reject":
                raise ValueError(f"{name}: reject is not allowed (spam is never bounced to its forged sender)")
        return self


AsfMode = Literal["off", "on", "test"]
"""An advanced spam filter check: off; on (a hit makes the message spam, SCL 9 for the marked-as-spam
checks); test (a hit only adds an ``X-CustomSpam:`` header)."""


class SpamRule(StrictModel):
    """A content rule: where to look, a regex or a phrase, and the score a hit adds."""

    name: str
    """Shown in the report header (letters, digits, ``_``, ``.``, ``-``)."""
    where: str = "body"
    """``subject``, ``body`` (decoded text of every text part, HTML as text), ``url`` (each URL found),
    or ``header:<Name>`` (each field of that name, unfolded)."""
    regex: str | None = None
    """A Python regular expression, searched case-insensitively."""
    phrase: str | None = None
    """Plain text, matched case-insensitively as whole words."""
    score: float = 1.0
    category: Literal["phish", "hcphish"] | None = None
    """A hit also puts the message in this category (phishing is found by rules, not by score)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ValueError(f"{value!r} is not a rule name (letters, digits, _ . -)")
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: str) -> str:
        if value in ("subject", "body", "url"):
            return value
        kind, _, name = value.partition(":")
        if kind != "header" or not re.fullmatch(r"[!-9;-~]{1,76}", name):
            raise ValueError(f"{value!r}: where is subject, body, url or header:<Name>")
        return f"header:{name.lower()}"

    @model_validator(mode="after")
    def _one_pattern(self) -> SpamRule:
        if (self.regex is None) == (self.phrase is None):
            raise ValueError(f"rule {self.name!r}: give exactly one of regex or phrase")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"rule {self.name!r}: bad regex: {exc}") from None
        return self


class UriblZone(StrictModel):
    zone: str
    """A URI block list zone (SURBL/DBL style): the URL's host name (and registered domain) is asked
    as ``<name>.<zone>``; a 127.0.0.x answer other than 127.255.255.x is a listing."""
    score: float = 4.0


class AdvancedSpamFilter(StrictModel):
    """EOP's advanced spam filter options, each ``off``, ``on`` or ``test``."""

    empty_message: AsfMode = "off"
    javascript: AsfMode = "off"
    form_tags: AsfMode = "off"
    frame_tags: AsfMode = "off"
    object_tags: AsfMode = "off"
    embed_tags: AsfMode = "off"
    web_bugs: AsfMode = "off"
    image_links_remote: AsfMode = "off"
    numeric_ip_url: AsfMode = "off"
    url_other_port: AsfMode = "off"
    biz_info_url: AsfMode = "off"
    sensitive_words: AsfMode = "off"
    spf_hard_fail: AsfMode = "off"
    ndr_backscatter: AsfMode = "off"
    sensitive_word_list: list[str] = Field(default_factory=lambda: ["viagra", "cialis", "xxx", "porn", "casino"])
    """Words the ``sensitive_words`` check looks for (whole words, any case)."""

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """YAML reads a bare ``on``/``off`` as true/false."""
        if value is True:
            return "on"
        if value is False:
            return "off"
        return value


class Bayes(StrictModel):
    enabled: bool = True
    min_spam: int = Field(200, ge=1)
    """Spam messages that must have been learned before the classifier counts."""
    min_ham: int = Field(200, ge=1)
    """Ham messages that must have been learned before the classifier counts."""
    spam_score: float = 6.0
    """Score added when the spam probability is at or above 0.99 and ``spam_cutoff`` (5/6 of it, spam on its
    own at the default ``spam_score`` of 5, from ``spam_cutoff``)."""
    spam_cutoff: float = Field(0.9, gt=0.5, lt=1.0)
    """Spam probability from which the classifier alone makes a message spam (SpamBayes' default, 0.90)."""
    ham_score: float = -2.0
    """Score added when the spam probability is at or below 0.01."""
    key_prefix: str = "mailmoat:bayes"
    """Redis key prefix of the token store."""


class SpamEngines(StrictModel):
    rspamd_url: str | None = None
    """Rspamd's controller or normal worker, e.g. ``http://127.0.0.1:11333`` (``/checkv2`` is asked)."""
    spamd: str | None = None
    """SpamAssassin's spamd as ``host:port`` (SPAMC protocol)."""
    timeout: float = Field(5, gt=0)
    """Seconds an engine may take; an engine that is down or slow is skipped, never waited on."""
    weight: float = 1.0
    """Factor applied to an engine's score before it is added to ours."""


class ProtectedUser(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    """The display name the user's mail carries (compared case- and space-insensitively)."""
    address: str = Field(min_length=3)
    """The user's own address: mail from it (authenticated) is not impersonation."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip().lower()
        if value.count("@") != 1 or not all(value.split("@")):
            raise ValueError(f"{value!r} is not an address")
        return value


class Impersonation(StrictModel):
    """EOP's anti-phishing impersonation protection: mail from outside whose display name claims a
    protected user or domain is ``phish`` (docs/policy.md, "Impersonation")."""

    protected_users: list[ProtectedUser] = Field(default_factory=list)
    protected_domains: list[str] = Field(default_factory=list)
    """Domains whose name in a display name, on mail not from that domain, is impersonation."""
    include_accepted_domains: bool = True
    """The accepted domains are protected too (EOP's "include domains I own")."""
    address_in_name: bool = True
    """A real address of another organisational domain in the display name: ``phish`` when its domain is
    ours or protected, or when the name is exactly that address and its domain publishes DMARC
    quarantine/reject; otherwise the scored rule ``FROM_NAME_ADDRESS``."""

    @field_validator("protected_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value if d.strip()]


class Antispam(StrictModel):
    authserv_id: str | None = None
    """The authserv-id of the ``Authentication-Results`` header (default: ``organization.hostname``)."""
    trusted_arc_sealers: list[str] = Field(default_factory=list)
    """ARC sealer domains (and their subdomains) whose valid chain reporting ``dmarc=pass`` overrides a DMARC
    failure (as EOP's compauth reason 130): mailing lists and forwarders the organisation trusts."""
    spf_timeout: float = Field(20, gt=0)
    """Seconds one SPF evaluation may take in all (RFC 7208 4.6.4); past it the result is ``temperror``."""
    author_check: Literal["reject", "evaluate"] = "reject"
    """Mail from outside whose From is not exactly one mailbox that parses (RFC 5322 3.6): ``reject`` at
    the end of DATA (``550 5.7.512``), or ``evaluate`` every author domain, the strictest DMARC outcome
    applied."""
    impersonation: Impersonation = Field(default_factory=Impersonation)

    @field_validator("trusted_arc_sealers")
    @classmethod
    def _sealer_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value]

    bulk_threshold: int = Field(7, ge=1, le=9)
    """A bulk complaint level (BCL) at or over this makes the message bulk (SCL 6)."""
    actions: SpamActions = Field(default_factory=SpamActions)
    subject_prefix: str = "[SPAM] "
    """Text ``prepend_subject`` puts before the Subject."""
    redirect_to: str | None = None
    """Address ``redirect`` sends the message to instead of its recipients."""
    spam_score: float = 5.0
    """A total score at or over this is spam (SCL 5, SCL 6 from 1.5 times it)."""
    hcspam_score: float = 10.0
    """A total score at or over this is high-confidence spam (SCL 7, up to 9 at twice it)."""
    rules: list[SpamRule] = Field(default_factory=list)
    allowed_senders: list[str] = Field(default_factory=list)
    """Sender addresses (envelope or From:) whose mail skips spam filtering (SCL -1)."""
    allowed_domains: list[str] = Field(default_factory=list)
    blocked_senders: list[str] = Field(default_factory=list)
    """Sender addresses whose mail is always spam (SCL 9); the allowed lists take precedence."""
    blocked_domains: list[str] = Field(default_factory=list)
    bulk_senders: list[str] = Field(default_factory=list)
    """Domains (and their subdomains) known to send bulk mail: BCL at least ``bulk_sender_bcl``."""
    bulk_sender_bcl: int = Field(7, ge=0, le=9)
    uribl: list[UriblZone] = Field(default_factory=list)
    uribl_timeout: float = Field(2, gt=0)
    """Seconds per URI block list look-up; a look-up that fails is skipped."""
    max_urls: int = Field(20, ge=0)
    """Distinct URL host names asked of the URI block lists per message."""
    dnsbl_factor: float = 1.5
    """Factor applied to the connection filter's ``dnsbl_score`` (sum of listed zones' weights)."""
    advanced: AdvancedSpamFilter = Field(default_factory=AdvancedSpamFilter)
    bayes: Bayes = Field(default_factory=Bayes)
    engines: SpamEngines = Field(default_factory=SpamEngines)

    @field_validator("allowed_senders", "blocked_senders", "allowed_domains", "blocked_domains", "bulk_senders")
    @classmethod
    def _lower_list(cls, value: list[str]) -> list[str]:
        return [v.strip().lower().rstrip(".") for v in value]

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, value: list[SpamRule]) -> list[SpamRule]:
        names = [r.name for r in value]
        if len(set(names)) != len(names):
            raise ValueError("a rule name is used twice")
        return value

    @model_validator(mode="after")
    def _redirect_target(self) -> Antispam:
        uses = [k for k, v in self.actions.model_dump().items() if v == "redirect"]
        if uses and not self.redirect_to:
            raise ValueError(f"actions {', '.join(uses)} redirect, but redirect_to is not set")
        return self
