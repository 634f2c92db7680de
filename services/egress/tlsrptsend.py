"""Mailing the daily TLS reports (RFC 8460): once per policy domain and UTC day, after the day ended.

Every ``outbound.tls_rpt.interval`` seconds egress looks at yesterday's counters (``tlsrpt``). For each
domain it first takes a marker (``mailmoat:tlsrpt-sent:<day>:<domain>``, Redis SET NX, kept 8 days),
so with several egress replicas one report at most goes out; then it reads ``_smtp._tls.<domain>``
TXT and publishes the report mail to routing, which routes it like the organisation's outbound mail
(rules, DKIM signing, egress, DSN if it bounces). A temporary DNS or broker failure gives the marker
back so the next round tries again; a domain without a valid record, or with only ``https:`` rua,
gets no report that day (logged).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter

from mailmoat_egress import tlsrpt
from mailmoat_egress.targets import resolver_config
from mailmoat_egress.tlsreport import RecordError, build_mail, build_report, parse_record, report_id
from mailmoat_mail.dns import DnsTemporary, NoSuchDomain, resolve_txt
from mailmoat_platform.bus import Publish
from mailmoat_platform.models import Envelope, utcnow
from mailmoat_policy import Policy

log = logging.getLogger(__name__)

SENT_PREFIX = "mailmoat:tlsrpt-sent:"

REPORTS = Counter(
    "mailmoat_tls_rpt_reports_total",
    "Daily TLS reports (RFC 8460) by outcome: ``sent`` (published to routing), ``no_record`` (no valid "
    "``_smtp._tls`` TXT or no mailto: rua), ``retry`` (DNS or broker failure, tried again next round).",
    ["outcome"],
)

Publisher = Callable[[Envelope, bytes], Awaitable[None]]


def sent_key(domain: str, day: datetime) -> str:
    return f"{SENT_PREFIX}{day:%Y-%m-%d}:{domain.lower()}"


def sender_of(policy: Policy) -> str:
    return policy.outbound.tls_rpt.sender or f"tlsrpt-noreply@{policy.organization.hostname}"


class TlsReporter:
    """Builds and publishes the reports of one day; ``run_forever`` is egress's periodic task."""

    def __init__(self, redis: Callable[[], Any], publish: Publisher, policy: Callable[[], Policy]):
        self.redis = redis
        self.publish = publish
        self.policy = policy
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    async def send_day(self, day: datetime, now: datetime | None = None) -> list[str]:
        """Report ``day`` to every domain counted that day not reported yet; the domains mailed."""
        now = now or utcnow()
        sent: list[str] = []
        for domain in await tlsrpt.domains(self.redis(), day):
            if await self.send_domain(domain, day, now):
                sent.append(domain)
        return sent

    async def send_domain(self, domain: str, day: datetime, now: datetime) -> bool:
        redis = self.redis()
        marker = sent_key(domain, day)
        if not await redis.set(marker, self.owner, nx=True, ex=tlsrpt.KEEP_SECONDS):
            return False
        policy = self.policy()
        try:
            rua = parse_record(await resolve_txt(f"_smtp._tls.{domain}", resolver_config(policy)))
        except NoSuchDomain:
            rua = None
        except RecordError as exc:
            log.warning("TLS report for %s on %s not sent: _smtp._tls record: %s", domain, f"{day:%Y-%m-%d}", exc)
            REPORTS.labels("no_record").inc()
            return False
        except DnsTemporary as exc:
            await redis.delete(marker)
            REPORTS.labels("retry").inc()
            log.warning("TLS report for %s: %s; trying again later", domain, exc)
            return False
        if rua is None or not rua.mailto:
            log.info("TLS report for %s on %s not sent: no mailto: rua%s", domain, f"{day:%Y-%m-%d}",
                     " (https: rua is not supported)" if rua and rua.https else "")
            REPORTS.labels("no_record").inc()
            return False
        sender_domain = sender_of(policy).rpartition("@")[2]
        if not policy.dkim.keys_for(sender_domain):
            log.warning("TLS report for %s goes out unsigned: no dkim key for %s (RFC 8460 5.3: receivers "
                        "ignore reports without a DKIM signature of the reporting domain)", domain, sender_domain)
        try:
            envelope, data = await self.build(domain, day, now, list(rua.mailto))
            await self.publish(envelope, data)
        except Exception:
            await redis.delete(marker)
            REPORTS.labels("retry").inc()
            raise
        REPORTS.labels("sent").inc()
        log.info("TLS report for %s on %s published to %s", domain, f"{day:%Y-%m-%d}", ", ".join(rua.mailto),
                 extra={"message_id": envelope.id})
        return True

    async def build(self, domain: str, day: datetime, now: datetime, recipients: list[str]) -> tuple[Envelope, bytes]:
        policy = self.policy()
        redis = self.redis()
        settings = policy.outbound.tls_rpt
        submitter = policy.organization.hostname
        sender = sender_of(policy)
        report = build_report(
            organization=settings.organization_name or policy.organization.name,
            contact=settings.contact or sender,
            report_id=report_id(submitter, domain, day),
            domain=domain, day=day,
            policy=await tlsrpt.applied_policy(redis, domain, day),
            counts=await tlsrpt.counts(redis, domain, day),
            failures=await tlsrpt.failures(redis, domain, day),
        )
        return build_mail(report, domain=domain, submitter=submitter, sender=sender, recipients=recipients,
                          day=day, now=now)

    async def run_forever(self) -> None:
        """Every ``interval`` seconds, when enabled: yesterday's reports (UTC)."""
        while True:
            policy = self.policy()
            if policy.outbound.tls_rpt.enabled:
                try:
                    await self.send_day(utcnow() - timedelta(days=1))
                except Exception:  # the next round tries again
                    log.exception("sending TLS reports failed")
            await asyncio.sleep(policy.outbound.tls_rpt.interval)


def routing_publisher(bus: Any) -> Publisher:
    """Publishes a report to the routing stage (as DSNs re-enter the pipeline)."""

    async def publish(envelope: Envelope, data: bytes) -> None:
        await bus.publish(Publish(await bus.declare_stage("routing"), envelope, data))

    return publish


__all__ = ["REPORTS", "SENT_PREFIX", "TlsReporter", "routing_publisher", "sender_of", "sent_key"]
