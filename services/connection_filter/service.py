"""Connection filter service wiring: consume mailmoat.connection_filter, look up, annotate, pass on.

The stage only annotates: the verdict (``allow``, ``listed``, ``reject`` or ``pass``) goes into the
envelope and the ``X-Mailmoat-Connection-Report`` header is prepended; the message always goes on to
the next stage of its itinerary. A DNS failure is recorded as ``temperror``, never a reason to stop;
any other error of the stage on a message gives the verdict ``error`` (no action follows from it),
traced (``mailmoat_platform.stagefault``), never a dead letter.
"""

from __future__ import annotations

import asyncio

from mailmoat_connection_filter.decide import (
    HEADER,
    STAGE,
    Lookup,
    Report,
    conclude,
    dnsbl_result,
    fold_header,
    helo_facts,
    plan_checks,
    ptr_facts,
    ptr_names,
)
from mailmoat_connection_filter.lookup import Resolver
from mailmoat_connection_filter.verdict import ConnectionVerdict
from mailmoat_mail.dns import ResolverConfig
from mailmoat_platform.bus import Publish
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.runtime import Runtime, Transient, serve_stage
from mailmoat_platform.settings import Settings
from mailmoat_platform.stagefault import error_event, error_token, fault
from mailmoat_policy import Policy

SERVICE = STAGE


async def inspect(envelope: Envelope, policy: Policy, resolver: Resolver) -> Report:
    """Run the look-ups the policy asks for (block lists and PTR together, then the forward
    confirmation of the PTR names) and conclude."""
    cf = policy.connection_filter
    plan = plan_checks(envelope, cf)
    config = ResolverConfig(tuple(policy.dns.nameservers), policy.dns.port, cf.timeout or policy.dns.timeout)

    async def ask(name: str, rdtype: str) -> Lookup:
        return await resolver.query(name, rdtype, config, cf.cache_ttl)

    first = [ask(query, "A") for _, query in plan.dnsbl]
    if plan.ptr_query is not None:
        first.append(ask(plan.ptr_query, "PTR"))
    answers = await asyncio.gather(*first)
    zones = [zone for zone, _ in plan.dnsbl]
    dnsbl = [dnsbl_result(zone, lookup) for zone, lookup in zip(zones, answers[: len(zones)], strict=True)]
    ptr = None
    names: tuple[str, ...] = ()
    if plan.ptr_query is not None:
        ptr_lookup = answers[-1]
        names = ptr_names(ptr_lookup)
        forward_answers = await asyncio.gather(*(ask(n, t) for n in names for t in ("A", "AAAA")))
        forward = {n: list(forward_answers[2 * i : 2 * i + 2]) for i, n in enumerate(names)}
        ptr = ptr_facts(plan.client_ip, ptr_lookup, forward)
    helo = helo_facts(envelope.helo, plan.client_ip, names) if plan.helo else None
    return conclude(plan, dnsbl, ptr, helo)


async def judge(envelope: Envelope, policy: Policy, resolver: Resolver, service: str = SERVICE
                ) -> tuple[Verdict, bytes, TraceEvent]:
    """The stage's work on one message: its verdict, its report header and its trace event (written by
    ``service``: the stage, or ingress when it runs the connection filter at SMTP time)."""
    report = await inspect(envelope, policy, resolver)
    verdict = report.verdict()
    event = TraceEvent(
        event="AGENTINFO", message_id=envelope.id, service=service, recipients=envelope.rcpt_to,
        detail=f"connection filter: {verdict.result} ({' '.join(report.tokens()[1:4])})", data=verdict.detail,
    )
    return verdict, report.header(), event


def make_handler(runtime: Runtime, resolver: Resolver | None = None):
    resolver = resolver or Resolver()

    async def handle(envelope: Envelope, data: bytes) -> list[Publish]:
        try:
            verdict, header, event = await judge(envelope, runtime.policy.current, resolver)
        except Transient:
            raise
        except Exception as exc:  # a fault of this stage on this message: passed on, never a dead letter
            detail = ConnectionVerdict.wire(**fault(SERVICE, envelope, exc))
            verdict = Verdict(stage=STAGE, result="error", detail=detail)
            header = fold_header(HEADER, ["ACT:error", f"ERR:{error_token(verdict.detail)}"])
            event = error_event(SERVICE, envelope, "error", verdict.detail, "no connection filter action")
        return [await runtime.finish(envelope, data, verdict, event, header)]

    return handle


async def main(settings: Settings, worker: int = 0) -> None:
    await serve_stage(SERVICE, settings, worker, make_handler, prefetch=64)
