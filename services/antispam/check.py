"""Run every antispam check of one message (the I/O is here: DNS, Redis, engines), then ``score.decide``.

``Checker.check`` never raises for anything the message, DNS, Redis or an engine does: a check that
cannot run is left out and named in the verdict's ``notes``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mailmoat_antispam import asf, bayes, bulk, engines, impersonation, rules, uribl
from mailmoat_antispam.auth import AuthResolver, authenticate, dmarc
from mailmoat_antispam.auth.resolver import Resolver
from mailmoat_antispam.content import Content, parse
from mailmoat_antispam.score import Allowance, Findings, allowance, decide
from mailmoat_connection_filter.verdict import ConnectionVerdict
from mailmoat_mail.author import Author, read_author
from mailmoat_mail.dns import ResolverConfig
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import detail_in
from mailmoat_policy import Policy
from mailmoat_records.senderblocks import CachedBlockList

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    verdict: Verdict
    content: Content
    findings: Findings
    allowed: Allowance | None
    auth: Any = None
    """The ``AuthResult`` (None when authentication did not run)."""


def bayes_hits(probability: float | None, settings, calibrated: float | None = None) -> list[rules.Hit]:
    """BAYES_99 (p >= 0.99 and >= the cutoff): ``spam_score``; BAYES_SPAM (p >= the cutoff): 5/6 of it (5 at
    the default, spam on its own); BAYES_00 (p <= 0.01): ``ham_score``.

    The cutoff: the policy's ``spam_cutoff`` when the policy sets it; else ``calibrated``, the cutoff
    ``mailmoat train calibrate`` chose by cross-validation on the organisation's labelled mail
    (``calibrate.py``); else the default, SpamBayes' published 0.90."""
    if probability is None:
        return []
    cutoff = settings.spam_cutoff
    if calibrated is not None and "spam_cutoff" not in settings.model_fields_set:
        cutoff = calibrated
    if probability >= max(0.99, cutoff):
        return [rules.Hit("BAYES_99", settings.spam_score)]
    if probability >= cutoff:
        return [rules.Hit("BAYES_SPAM", round(settings.spam_score * 5 / 6, 2))]
    if probability <= 0.01:
        return [rules.Hit("BAYES_00", settings.ham_score)]
    return []


def auth_hits(detail: dict[str, Any]) -> list[rules.Hit]:
    hits = []
    spf = (detail.get("spf") or {}).get("result")
    if spf == "fail":
        hits.append(rules.Hit("SPF_FAIL", 1.0))
    elif spf == "softfail":
        hits.append(rules.Hit("SPF_SOFTFAIL", 0.5))
    if (detail.get("dmarc") or {}).get("result") == "fail":
        hits.append(rules.Hit("DMARC_FAIL", 1.5))
    return hits


def impersonation_hits(found: impersonation.Finding | None, findings: Findings, published: str | None = None
                       ) -> list[rules.Hit]:
    """Impersonation of a protected user or domain, or a display name that is an address DMARC protects:
    a ``phish`` hit (``IMPERSONATION_USER|DOMAIN|ADDRESS``), recorded in the findings. Any other address
    of another domain in the display name: ``FROM_NAME_ADDRESS``, a score. ``published``: the DMARC
    policy of ``impersonation.dmarc_domain(found)``."""
    if found is None:
        return []
    if not impersonation.is_phish(found, published):
        return [rules.Hit(impersonation.SCORED_RULE, impersonation.ADDRESS_SCORE, found.claimed)]
    findings.impersonation = found.detail()
    return [rules.Hit(impersonation.RULE_NAMES[found.kind], 0.0, found.claimed, category="phish")]


def content_findings(envelope: Envelope, data: bytes, content: Content, policy: Policy) -> Findings:
    """The pure checks: GTUBE, policy rules, header heuristics, DNSBL facts, BCL."""
    spam = policy.antispam
    findings = Findings()
    findings.gtube = rules.gtube(content, data)
    if findings.gtube:
        findings.hits.append(rules.Hit("GTUBE", 1000.0))
    findings.hits += rules.policy_rules(spam.rules, content)
    findings.hits += rules.header_heuristics(content)
    cf = detail_in(envelope, "connection_filter", ConnectionVerdict)
    dnsbl_score = cf.dnsbl_score if cf is not None else 0.0
    if dnsbl_score:
        findings.hits.append(rules.Hit("DNSBL", round(dnsbl_score * spam.dnsbl_factor, 2)))
    findings.bcl, findings.bulk_signals = bulk.bulk_level(content, envelope.mail_from, spam.bulk_senders,
                                                          spam.bulk_sender_bcl)
    return findings


class Checker:
    """The clients the checks need, built once per process."""

    def __init__(self, redis=None, auth_resolver: Resolver | None = None, uribl_resolver: Resolver | None = None,
                 http=None, blocks: CachedBlockList | None = None):
        self.redis = redis
        self.blocks = blocks
        """The senders blocked from the console (None: no records database)."""
        self._auth_resolver = auth_resolver
        self._uribl_resolver = uribl_resolver
        self._keys: dict[str, tuple] = {}
        self._stores: dict[str, bayes.BayesStore] = {}
        self.http = http

    def _resolver(self, kind: str, policy: Policy, timeout: float) -> Resolver:
        fixed = self._auth_resolver if kind == "auth" else self._uribl_resolver
        if fixed is not None:
            return fixed
        key = (tuple(policy.dns.nameservers), policy.dns.port, timeout)
        current = getattr(self, f"_{kind}_built", None)
        if current is None or self._keys.get(kind) != key:
            current = AuthResolver(ResolverConfig(*key))
            setattr(self, f"_{kind}_built", current)
            self._keys[kind] = key
        return current

    async def check(self, envelope: Envelope, data: bytes, policy: Policy, *, authenticate_sender: bool = True
                    ) -> Outcome:
        spam = policy.antispam
        content = await asyncio.to_thread(parse, data) if len(data) > 65536 else parse(data)
        auth_result = None
        auth_detail: dict[str, Any] = {}
        if authenticate_sender:
            try:
                auth_result = await authenticate(envelope, data, self._resolver("auth", policy, policy.dns.timeout),
                                                 policy)
                auth_detail = auth_result.detail()
            except Exception:  # authentication never loses a message
                log.exception("authentication failed for %s", envelope.id)
        author = auth_result.author if auth_result is not None else read_author(data)
        blocks, note = await self._console_blocks()
        allowed = allowance(envelope, content, policy, author, blocks)
        if allowed is not None and allowed.kind != "blocked":
            findings = Findings(auth=auth_detail, notes=[note] if note else [])
            findings.bcl, findings.bulk_signals = bulk.bulk_level(content, envelope.mail_from, spam.bulk_senders,
                                                                  spam.bulk_sender_bcl)
            return Outcome(decide(findings, spam, allowed), content, findings, allowed, auth_result)
        findings = content_findings(envelope, data, content, policy)
        findings.auth = auth_detail
        if note:
            findings.notes.append(note)
        findings.hits += auth_hits(auth_detail)
        findings.hits += await self._impersonation(envelope, author, policy, findings, authenticate_sender)
        facts = {"spf": (auth_detail.get("spf") or {}).get("result", ""), "mail_from": envelope.mail_from}
        findings.asf = asf.advanced_checks(spam.advanced, content, facts)
        for hits in await self._extra(envelope, data, content, policy, findings):
            findings.hits += hits
        return Outcome(decide(findings, spam, allowed), content, findings, allowed, auth_result)

    async def fallback(self, envelope: Envelope, data: bytes, policy: Policy) -> Outcome | None:
        """What is still judged when the rest of the stage failed on the message: sender authentication and
        the allow and block lists, decided without content. A DMARC ``reject`` or ``quarantine``, a spoof
        or a blocked sender still acts; None when even this fails."""
        try:
            auth_result = await authenticate(envelope, data, self._resolver("auth", policy, policy.dns.timeout),
                                             policy)
            blocks, note = await self._console_blocks()
            allowed = allowance(envelope, Content([]), policy, auth_result.author, blocks)
            findings = Findings(auth=auth_result.detail(), notes=[note] if note else [])
            verdict = decide(findings, policy.antispam, allowed)
        except Exception:  # the error verdict stands alone
            log.exception("antispam: authentication after a fault failed too for %s", envelope.id)
            return None
        return Outcome(verdict, Content([]), findings, allowed, auth_result)

    async def _extra(self, envelope: Envelope, data: bytes, content: Content, policy: Policy, findings: Findings
                     ) -> list[list[rules.Hit]]:
        """The hits of the URI block lists, the classifier and the external engines, in that order, run
        together; a check with nothing to do (not configured, no URL) is left out rather than scheduled, and
        one check alone is awaited as it is."""
        spam = policy.antispam
        checks = []
        if spam.uribl and content.urls:
            checks.append(self._uribl(content, policy, findings))
        if spam.bayes.enabled and self.redis is not None:
            checks.append(self._bayes(content, policy, findings))
        if spam.engines.rspamd_url or spam.engines.spamd:
            checks.append(self._engines(envelope, data, policy, findings))
        if len(checks) == 1:
            return [await checks[0]]
        return list(await asyncio.gather(*checks))

    async def _console_blocks(self) -> tuple[tuple[Collection[str], list[str]] | None, str | None]:
        """The addresses and domains blocked from the console now, and a note when the copy is stale."""
        if self.blocks is None:
            return None, None
        try:
            listed = await self.blocks.current()
        except Exception as exc:  # never lose a message over the block list
            log.exception("antispam: blocked senders")
            return None, f"blocked senders: {type(exc).__name__}"
        return listed.at(time.time()), self.blocks.problem

    async def _impersonation(self, envelope: Envelope, author: Author, policy: Policy, findings: Findings,
                             use_dns: bool) -> list[rules.Hit]:
        """``impersonation_hits``, after asking DNS for the DMARC policy of an address shown as the whole
        display name (only then: a rare shape; skipped with sender authentication)."""
        outside = envelope.direction == "inbound" and not policy.is_internal(envelope.client_ip)
        found = impersonation.find(author, policy, outside=outside)
        domain = impersonation.dmarc_domain(found) if found is not None and use_dns else None
        published = None
        if domain:
            try:
                async with asyncio.timeout(policy.dns.timeout + 0.5):
                    discovery = await dmarc.discover(self._resolver("auth", policy, policy.dns.timeout), domain)
            except TimeoutError:
                discovery = dmarc.Discovery("temperror", reason="timeout")
            record = discovery.record
            if record is not None:
                published = record.p if record.domain == domain.lower().rstrip(".") else record.sp
            elif discovery.status == "temperror":
                findings.notes.append(f"impersonation: no DMARC answer for {domain}")
        return impersonation_hits(found, findings, published)

    async def _uribl(self, content: Content, policy: Policy, findings: Findings) -> list[rules.Hit]:
        spam = policy.antispam
        if not spam.uribl or not content.urls:
            return []
        names = uribl.lookup_names(content.urls, spam.max_urls)
        resolver = self._resolver("uribl", policy, spam.uribl_timeout)

        async def ask(name: str, zone: str):
            try:
                async with asyncio.timeout(spam.uribl_timeout + 0.5):
                    return await resolver.query(f"{name}.{zone}", "A")
            except TimeoutError:
                return None

        pairs = [(name, zone) for zone in spam.uribl for name in names]
        answers = await asyncio.gather(*(ask(n, z.zone) for n, z in pairs))
        hits: dict[str, rules.Hit] = {}
        for (name, zone), answer in zip(pairs, answers, strict=True):
            if answer is None or answer.status == "temperror":
                findings.notes.append(f"uribl {zone.zone}: no answer for {name}")
            elif answer.status == "ok" and uribl.listed(answer.records):
                hits.setdefault(zone.zone, rules.Hit(f"URIBL_{zone.zone}", zone.score, name))
        return list(hits.values())

    async def _bayes(self, content: Content, policy: Policy, findings: Findings) -> list[rules.Hit]:
        settings = policy.antispam.bayes
        if not settings.enabled or self.redis is None:
            return []
        store = self._stores.get(settings.key_prefix)
        if store is None:
            store = self._stores[settings.key_prefix] = bayes.BayesStore(self.redis, settings.key_prefix)
        try:
            result = await store.classify(bayes.tokens(content), settings.min_spam, settings.min_ham)
        except Exception as exc:  # Redis trouble: score without the classifier
            findings.notes.append(f"bayes: {type(exc).__name__}")
            return []
        findings.bayes = result.probability
        return bayes_hits(result.probability, settings, result.cutoff)

    async def _engines(self, envelope: Envelope, data: bytes, policy: Policy, findings: Findings
                       ) -> list[rules.Hit]:
        cfg = policy.antispam.engines
        jobs = []
        if cfg.rspamd_url:
            jobs.append(engines.rspamd_check(cfg.rspamd_url, envelope, data, cfg.timeout, self.http))
        if cfg.spamd:
            jobs.append(engines.spamd_check(cfg.spamd, data, cfg.timeout))
        hits = []
        for result in await asyncio.gather(*jobs):
            if result is None:
                findings.notes.append("an external engine did not answer")
            else:
                hits.append(rules.Hit(result.engine.upper(), round(result.score * cfg.weight, 2)))
        return hits
