"""``mailmoat check``: what the gateway would do with one message under a policy, without its services.

The message goes through the decision chain in this process, with each stage's own functions: ingress's
SMTP-time checks (client, recipients, content, From), the filter stages of the policy's
``pipeline.filters`` in order (each adds its verdict and its report header, as ``Runtime.finish`` does),
then routing's decision (mail-flow rules, the verdict action by the registry's precedence, the route of
each recipient). Nothing is published, held or sent.

Offline by default: no DNS (DNS block lists, PTR, sender authentication and URI block lists are named as
not run), no clamd unless an address is given, no Bayes classifier without Redis, no external engines.
Exit status: 0 deliver, 1 quarantine, junk or another spam or malware action, 2 reject, 3 error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

from mailmoat_platform.models import Envelope, Verdict, utcnow
from mailmoat_policy import Policy, PolicyError, load_policy

EXIT_DELIVER, EXIT_HELD, EXIT_REJECT, EXIT_ERROR = 0, 1, 2, 3
CLAMD_ENV = "MAILMOAT_CLAMD_ADDRESS"
_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_LINE_END = re.compile(rb"\r\n|\r|\n")


class CheckError(Exception):
    """The check cannot be done (unreadable input, no recipient, a service asked for that is away)."""


@dataclass
class Options:
    """What the command line gave: the policy and the envelope facts, and what may go on the network."""

    policy: Policy
    policy_path: str
    mail_from: str | None = None
    rcpt: list[str] = field(default_factory=list)
    client_ip: str = ""
    helo: str | None = None
    dns: bool = False
    clamd: str | None = None
    redis: str | None = None
    engines: bool = False


@dataclass
class StageResult:
    """One stage's verdict as the check prints it."""

    stage: str
    result: str
    detail: dict[str, Any]
    header: str = ""
    not_run: list[str] = field(default_factory=list)


@dataclass
class Decision:
    """What the gateway would do with the message in the end."""

    action: str
    cause: str = "none"
    stage: str | None = None
    result: str | None = None
    reason: str = ""
    reply: str | None = None
    """The SMTP reply of a reject (at SMTP by ingress, or in the non-delivery report after routing)."""
    ndr: str | None = None
    """Who the non-delivery report of a reject after acceptance goes to (None: none is sent)."""
    rules: list[str] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        if self.action == "deliver":
            return EXIT_DELIVER
        return EXIT_REJECT if self.action == "reject" else EXIT_HELD


@dataclass
class Report:
    source: str
    policy: str
    envelope: Envelope
    size: int
    notes: list[str]
    stages: list[StageResult]
    decision: Decision


# --- the input ------------------------------------------------------------------------------------


def read_input(path: str) -> bytes:
    """The message file's bytes (``-``: standard input)."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CheckError(f"{path}: cannot read: {exc.strerror or exc}") from None


def as_received(raw: bytes) -> tuple[bytes, list[str]]:
    """The message as an SMTP client hands it over (every line end CRLF), and notes on what changed."""
    if not raw.strip():
        raise CheckError("the message is empty")
    if not _FIELD.match(raw):
        raise CheckError("not a message: it does not begin with a header field (Name: value)")
    data = _LINE_END.sub(b"\r\n", raw)
    return data, (["line ends made CRLF, as an SMTP client sends them"] if data != raw else [])


def header_addresses(data: bytes, *names: str) -> list[str]:
    """The addresses of these header fields, in order, each once."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(data)
    values = [str(v) for name in names for v in headers.get_all(name, [])]
    found: list[str] = []
    for _, address in getaddresses(values):
        if "@" in address and address not in found:
            found.append(address)
    return found


def envelope_for(data: bytes, opts: Options, notes: list[str]) -> Envelope:
    """The envelope ingress would give the message (recipients from To/Cc, sender from Return-Path or From
    when the command line gives none)."""
    from mailmoat_ingress.headers import message_id

    rcpt = list(opts.rcpt)
    if not rcpt:
        rcpt = header_addresses(data, "To", "Cc")
        if not rcpt:
            raise CheckError("no recipient: the message has no To or Cc address; give --rcpt")
        notes.append(f"recipients from To/Cc: {', '.join(rcpt)}")
    mail_from = opts.mail_from
    if mail_from is None:
        mail_from = next(iter(header_addresses(data, "Return-Path") or header_addresses(data, "From")), "")
        notes.append(f"envelope sender from the header: <{mail_from}>")
    policy = opts.policy
    return Envelope(client_ip=opts.client_ip, helo=opts.helo, mail_from=mail_from, rcpt_to=rcpt,
                    message_id_header=message_id(data),
                    direction="outbound" if policy.is_internal(opts.client_ip) else "inbound",
                    itinerary=policy.pipeline.itinerary())


# --- ingress --------------------------------------------------------------------------------------


def smtp_refusal(envelope: Envelope, data: bytes, policy: Policy, notes: list[str]) -> str | None:
    """Ingress's SMTP-time checks: the reply that would refuse the message, or None. Recipients refused
    one by one are taken off the envelope (named in ``notes``)."""
    from mailmoat_ingress.author import check_author
    from mailmoat_ingress.checks import check_client, check_content, check_recipient

    refused = check_client(policy, envelope.client_ip)
    if refused:
        return refused
    accepted: list[str] = []
    first: str | None = None
    for address in envelope.rcpt_to:
        reply = check_recipient(policy, envelope.client_ip, address, len(accepted))
        if reply is None:
            accepted.append(address)
        else:
            notes.append(f"ingress refuses RCPT TO:<{address}>: {reply}")
            first = first or reply
    if not accepted:
        return first
    envelope.rcpt_to = accepted
    return check_content(data, policy.limits) or check_author(data, policy, envelope.client_ip)


def received(envelope: Envelope, data: bytes, policy: Policy) -> bytes:
    """The message as ingress passes it on: its ``Received`` field prepended, incoming gateway headers removed."""
    from mailmoat_ingress.headers import strip_gateway_headers
    from mailmoat_ingress.received import build_received

    line = build_received(helo=envelope.helo, client_hostname=None, client_ip=envelope.client_ip,
                          by_host=policy.organization.hostname, queue_id=envelope.id, recipients=envelope.rcpt_to,
                          at=envelope.received_at)
    return line + strip_gateway_headers(data)


# --- the filter stages ----------------------------------------------------------------------------


@dataclass
class Context:
    """The options and the clients the stages use, closed at the end."""

    opts: Options
    closers: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)

    async def close(self) -> None:
        for close in self.closers:
            done = close()
            if done is not None:
                await done


Ran = tuple[Verdict, bytes, bytes, list[str]]
"""A stage's verdict, the header it prepends, the message it passes on, and what it did not run."""
Runner = Callable[[Context, Envelope, bytes], Awaitable[Ran]]


async def connection_filter(ctx: Context, envelope: Envelope, data: bytes) -> Ran:
    from mailmoat_connection_filter.decide import conclude, helo_facts, plan_checks
    from mailmoat_connection_filter.lookup import Resolver
    from mailmoat_connection_filter.service import inspect

    policy = ctx.opts.policy
    if ctx.opts.dns:
        report = await inspect(envelope, policy, Resolver())
        return report.verdict(), report.header(), data, []
    plan = plan_checks(envelope, policy.connection_filter)
    not_run = []
    if plan.dnsbl:
        not_run.append(f"DNS block lists ({', '.join(zone.zone for zone, _ in plan.dnsbl)}): offline, --dns asks them")
    if plan.ptr_query:
        not_run.append("PTR and forward-confirmed reverse DNS: offline, --dns asks them")
    offline = dataclasses.replace(plan, dnsbl=(), ptr_query=None)
    report = conclude(offline, [], None, helo_facts(envelope.helo, plan.client_ip) if plan.helo else None)
    return report.verdict(), report.header(), data, not_run


async def antivirus(ctx: Context, envelope: Envelope, data: bytes) -> Ran:
    from mailmoat_antivirus.decide import decide, report_header
    from mailmoat_antivirus.service import Engine, built_in_checks, scan_message
    from mailmoat_platform.runtime import Transient

    policy = ctx.opts.policy.antimalware
    address = ctx.opts.clamd
    if not address:
        findings, items = await built_in_checks(data, policy)
        verdict = decide(findings, policy)
        return verdict, report_header(verdict), data, [
            f"clamd: not asked ({len(items)} item(s) to scan); --clamd HOST:PORT or {CLAMD_ENV} scans with it"]
    client = Engine(address).client(policy)
    ctx.closers.append(client.close)
    try:  # the stage's own scan: built-in checks, clamd, the verdict
        verdict, _ = await scan_message(envelope, data, policy, client)
    except Transient as exc:  # clamd away and the policy does not fail open
        raise CheckError(f"clamd at {address} did not answer ({exc}); the gateway would keep the message "
                         "and retry it") from None
    not_run = [f"clamd at {address}: {verdict.detail.get('reason')}"] if verdict.result == "unscanned" else []
    return verdict, report_header(verdict), data, not_run


def _offline_antispam(policy: Policy, opts: Options) -> tuple[Policy, list[str]]:
    """The policy the antispam checks run with: without the URI block lists offline, without the external
    engines unless asked; and what is left out."""
    spam = policy.antispam
    update: dict[str, Any] = {}
    not_run = []
    if not opts.dns:
        not_run.append("sender authentication (SPF, DKIM, DMARC, ARC): offline, --dns runs it")
        if spam.uribl:
            update["uribl"] = []
            not_run.append(f"URI block lists ({', '.join(z.zone for z in spam.uribl)}): offline, --dns asks them")
    if not opts.engines and (spam.engines.rspamd_url or spam.engines.spamd):
        update["engines"] = spam.engines.model_copy(update={"rspamd_url": None, "spamd": None})
        not_run.append("external engines (Rspamd, spamd): --engines asks them")
    if spam.bayes.enabled and not opts.redis:
        not_run.append("Bayes classifier: its counts are in Redis, --redis URL reads them")
    if not update:
        return policy, not_run
    return policy.model_copy(update={"antispam": spam.model_copy(update=update)}), not_run


async def antispam(ctx: Context, envelope: Envelope, data: bytes) -> Ran:
    from mailmoat_antispam.check import Checker
    from mailmoat_antispam.service import cleaned, report

    policy, not_run = _offline_antispam(ctx.opts.policy, ctx.opts)
    client = None
    if ctx.opts.redis:
        from mailmoat_platform import redisclient

        client = redisclient.from_url(ctx.opts.redis, socket_connect_timeout=5)
        ctx.closers.append(client.aclose)
    outcome = await Checker(redis=client).check(envelope, data, policy, authenticate_sender=ctx.opts.dns)
    not_run += [f"note: {note}" for note in outcome.findings.notes]
    return outcome.verdict, report(outcome, envelope, policy), cleaned(data, policy), not_run


async def dlp(ctx: Context, envelope: Envelope, data: bytes) -> Ran:
    from mailmoat_dlp.scan import result_of, scan
    from mailmoat_dlp.service import SERVICE, report_header, section

    policy = ctx.opts.policy
    detail = await asyncio.to_thread(scan, data, section(policy), policy.antimalware.archives)
    result = result_of(detail)
    return Verdict(stage=SERVICE, result=result, detail=detail.as_detail()), report_header(result, detail), data, []


RUNNERS: dict[str, Runner] = {
    "connection_filter": connection_filter,
    "antivirus": antivirus,
    "antispam": antispam,
    "dlp": dlp,
}
"""How the check runs each filter stage of the registry (``stages.filter_names()``)."""


# --- routing --------------------------------------------------------------------------------------


def routing(envelope: Envelope, data: bytes, policy: Policy) -> Decision:
    """Routing's decision (as ``Router.handle``, without holding, sending or tracing): the mail-flow rules,
    then the verdict action, then the route of each recipient."""
    from mailmoat_routing.actions import ndr_for
    from mailmoat_routing.rules.routing import plan_with_rules
    from mailmoat_routing.service import decide_message

    rules, outcome = decide_message(envelope, data, policy)
    disp = outcome.disposition
    decision = Decision(action=disp.action, cause=disp.cause, stage=disp.stage, result=disp.result,
                        reason=disp.reason, rules=[hit.describe() for hit in rules.hits] if rules else [])
    if rules and rules.notices:
        decision.rules.append(f"{len(rules.notices)} notice(s) to the sender (notify_sender)")
    if outcome.delivers:
        for split in plan_with_rules(outcome.envelope, policy, rules):
            route = split.route
            decision.routes.append({"route": route.name, "kind": route.kind, "hosts": list(route.hosts),
                                    "domain": route.domain, "tls": route.tls, "recipients": split.recipients})
    if disp.action == "reject":
        status = disp.status or "5.7.1"
        decision.reply = f"550 {status} Message rejected: {disp.reason or 'refused by policy'}"  # as ndr_for says it
        built = ndr_for(disp, outcome.envelope, outcome.data, utcnow(), policy.organization.hostname)
        decision.ndr = ", ".join(built[0].rcpt_to) if built else None
    return decision


# --- the whole chain ------------------------------------------------------------------------------


async def check(raw: bytes, opts: Options, source: str = "-") -> Report:
    """Run the decision chain on the message ``raw``."""
    data, notes = as_received(raw)
    envelope = envelope_for(data, opts, notes)
    policy = opts.policy
    refused = smtp_refusal(envelope, data, policy, notes)
    if refused:
        decision = Decision("reject", cause="smtp", stage="ingress", reason="refused during SMTP", reply=refused)
        return Report(source, opts.policy_path, envelope, len(data), notes, [], decision)
    data = received(envelope, data, policy)
    results: list[StageResult] = []
    ctx = Context(opts)
    try:
        for name in policy.pipeline.filters:
            runner = RUNNERS.get(name)
            if runner is None:
                raise CheckError(f"the check cannot run the filter stage {name!r} "
                                 f"(it runs {', '.join(sorted(RUNNERS))})")
            try:
                verdict, header, data, not_run = await runner(ctx, envelope, data)
            except CheckError:
                raise
            except Exception as exc:
                raise CheckError(f"the {name} stage failed on this message: {type(exc).__name__}: {exc}") from exc
            envelope.add_verdict(verdict)
            data = header + data
            envelope.size = len(data)
            results.append(StageResult(name, verdict.result, _typed_detail(verdict),
                                       header.decode("ascii", "replace"), not_run))
            if name == "connection_filter" and policy.connection_filter.at_smtp and verdict.result == "reject":
                from mailmoat_ingress.screen import refusal  # ingress refuses it at the end of DATA

                decision = Decision("reject", cause="smtp", stage="ingress", result="reject",
                                    reason="connection filter at SMTP time", reply=refusal(verdict.detail))
                return Report(source, opts.policy_path, envelope, envelope.size, notes, results, decision)
    finally:
        await ctx.close()
    return Report(source, opts.policy_path, envelope, envelope.size, notes, results, routing(envelope, data, policy))


def _typed_detail(verdict: Verdict) -> dict[str, Any]:
    from mailmoat_platform.verdicts import detail_of

    return detail_of(verdict).as_detail()


# --- output ---------------------------------------------------------------------------------------


def outcome_line(decision: Decision) -> str:
    """The last line: what the gateway would do."""
    to = "; ".join(f"{r['route']} ({', '.join(r['recipients'])})" for r in decision.routes)
    why = decision.cause + (f" ({decision.result})" if decision.result and decision.result != decision.cause else "")
    if decision.action == "reject":
        where = "at SMTP" if decision.stage == "ingress" else "after acceptance, " + (
            f"non-delivery report to {decision.ndr}" if decision.ndr else "no non-delivery report")
        return f"reject: {decision.reply} ({why}; {where})"
    if decision.action == "quarantine":
        return f"quarantine: reason {why}" + (f": {decision.reason}" if decision.reason else "")
    if decision.action == "delete":
        return f"delete: {why}" + (f": {decision.reason}" if decision.reason else "")
    if decision.action == "deliver":
        return f"deliver to {to}" + (f" ({why})" if decision.cause != "none" else "")
    return f"{decision.action} ({why}), deliver to {to}"


def render_text(report: Report) -> str:
    from mailmoat_cli.main import verdict_lines

    env = report.envelope
    lines = [f"message:  {report.source} ({report.size} bytes), policy {report.policy}",
             f"envelope: <{env.mail_from}> -> {', '.join(f'<{r}>' for r in env.rcpt_to)}; "
             f"client {env.client_ip or '-'} helo {env.helo or '-'}; {env.direction}",
             *(f"  {note}" for note in report.notes)]
    for stage in report.stages:
        lines += verdict_lines(stage.stage, {"result": stage.result, "detail": stage.detail})
        header = stage.header.rstrip("\r\n").split("\r\n")
        lines += [f"    header: {header[0]}", *(f"            {line.strip()}" for line in header[1:])]
        lines += [f"    not run: {what}" for what in stage.not_run]
    decision = report.decision
    if decision.stage != "ingress":
        lines.append("  routing:")
        lines += [f"    {rule}" for rule in decision.rules]
        by = "a mail-flow rule" if decision.cause == "rule" else (decision.stage or "no verdict calls for one")
        lines.append(f"    action: {decision.action} ({by})")
        for route in decision.routes:
            where = ", ".join(route["hosts"]) if route["hosts"] else f"MX of {route['domain']}"
            lines.append(f"    route {route['route']}: {route['kind']} {where}, TLS {route['tls']}, "
                         f"for {', '.join(route['recipients'])}")
    lines.append(f"result: {outcome_line(decision)}")
    return "\n".join(lines)


def render_json(report: Report) -> dict[str, Any]:
    return {
        "message": {"source": report.source, "size": report.size},
        "policy": report.policy,
        "envelope": report.envelope.model_dump(mode="json", include={
            "id", "client_ip", "helo", "mail_from", "rcpt_to", "direction", "itinerary", "message_id_header"}),
        "notes": report.notes,
        "stages": [dataclasses.asdict(stage) for stage in report.stages],
        "decision": {**dataclasses.asdict(report.decision), "summary": outcome_line(report.decision)},
        "exit_status": report.decision.exit_status,
    }


# --- the command ----------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    chk = sub.add_parser(
        "check", help="what the gateway would do with a message under a policy (offline, every verdict)",
        description="Run one message through the decision chain in this process and print every verdict "
                    "and the action. Exit status: 0 deliver, 1 quarantine, junk or another spam or malware "
                    "action, 2 reject, 3 error.")
    chk.add_argument("message", help="the message file (RFC 5322), or - for standard input")
    chk.add_argument("--policy", help="the policy file (default: MAILMOAT_POLICY, else config/policy.example.yaml)")
    chk.add_argument("--mail-from", help="envelope sender ('' for the null sender; default: Return-Path or From)")
    chk.add_argument("--rcpt", action="append", default=[], help="envelope recipient (repeatable; default: To and Cc)")
    chk.add_argument("--client-ip", default="", help="the SMTP client's address (default: none)")
    chk.add_argument("--helo", help="the client's HELO/EHLO name")
    chk.add_argument("--dns", action="store_true",
                     help="ask the policy's resolvers: DNS block lists, PTR, SPF/DKIM/DMARC/ARC, URI block lists")
    chk.add_argument("--clamd", help=f"scan with clamd at HOST:PORT or unix:PATH (default: {CLAMD_ENV}, else none)")
    chk.add_argument("--redis", help="Redis URL of the Bayes classifier's counts (default: not used)")
    chk.add_argument("--engines", action="store_true", help="ask the policy's external engines (Rspamd, spamd)")
    chk.add_argument("--json", action="store_true", help="one JSON document instead of text")


def run(args: argparse.Namespace) -> int:
    from mailmoat_platform.settings import Settings

    path = args.policy or Settings.from_env().policy_path
    try:
        opts = Options(policy=load_policy(path), policy_path=path, mail_from=args.mail_from, rcpt=args.rcpt,
                       client_ip=args.client_ip, helo=args.helo, dns=args.dns,
                       clamd=args.clamd or os.environ.get(CLAMD_ENV) or None, redis=args.redis, engines=args.engines)
        report = asyncio.run(check(read_input(args.message), opts, args.message))
    except (CheckError, PolicyError) as exc:
        print(f"mailmoat check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(render_json(report), indent=2, default=str) if args.json else render_text(report))
    return report.decision.exit_status
