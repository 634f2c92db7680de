"""Antispam service wiring: consume mailmoat.antispam, authenticate the sender, score the content,
prepend ``Authentication-Results``, the report and SCL headers (and ``X-CustomSpam`` for advanced
spam filter checks in test mode), add the verdict, publish to the next stage of the itinerary.

The stage only annotates (decision 004): routing acts on the verdict. Nothing here holds mail up: a
DNS list, Redis or an external engine that fails is skipped and named in the verdict's notes.
"""

from __future__ import annotations

from mailmoat_antispam.asf import custom_spam_headers, strip_custom_spam
from mailmoat_antispam.auth import authentication_results, authserv_id, strip_spoofed_authres
from mailmoat_antispam.check import Checker, Outcome
from mailmoat_antispam.score import STAGE, headers
from mailmoat_common.bus import Publish
from mailmoat_common.models import Envelope, TraceEvent
from mailmoat_common.policy import Policy
from mailmoat_common.runtime import Runtime, serve_stage, stage_publish
from mailmoat_common.settings import Settings

SERVICE = STAGE


def annotate(outcome: Outcome, envelope: Envelope, data: bytes, policy: Policy) -> bytes:
    """The message as passed on: our header fields prepended, spoofed ``Authentication-Results`` claiming
    our authserv-id and incoming ``X-CustomSpam`` fields removed, every other byte unchanged."""
    server = authserv_id(policy)
    body = strip_custom_spam(strip_spoofed_authres(data, server))
    auth = authentication_results(server, outcome.auth) if outcome.auth is not None else b""
    return headers(outcome.verdict, envelope) + custom_spam_headers(outcome.findings.asf) + auth + body


def summary(outcome: Outcome) -> str:
    d = outcome.verdict.detail
    text = f"{outcome.verdict.result}: SCL {d['scl']} BCL {d['bcl']}"
    if d.get("allowed"):
        return f"{text} ({d['allowed']})"
    if d.get("rules"):
        text += f" score {d.get('score', 0):g} rules {','.join(d['rules'][:10])}"
    return text


def make_handler(runtime: Runtime, checker: Checker | None = None):
    checker = checker or Checker(redis=runtime.redis)

    async def handle(envelope: Envelope, data: bytes) -> list[Publish]:
        policy = runtime.policy.current
        outcome = await checker.check(envelope, data, policy)
        verdict = outcome.verdict
        envelope.add_verdict(verdict)
        out = annotate(outcome, envelope, data, policy)
        envelope.size = len(out)
        clean = verdict.result in ("clean", "allowed")
        await runtime.trace.record(TraceEvent(
            event="AGENTINFO" if clean else "SPAM", message_id=envelope.id, service=SERVICE,
            recipients=envelope.rcpt_to, detail=summary(outcome),
            data={"result": verdict.result, **{k: v for k, v in verdict.detail.items() if k != "auth"}},
        ))
        return [stage_publish(envelope, out, SERVICE)]

    return handle


async def main(settings: Settings, worker: int = 0) -> None:
    await serve_stage(SERVICE, settings, worker, make_handler, prefetch=32)
