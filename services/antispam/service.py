"""Antispam service wiring: consume mailmoat.antispam, authenticate the sender, score the content,
prepend ``Authentication-Results``, the report and SCL headers (and ``X-CustomSpam`` for advanced
spam filter checks in test mode), add the verdict, publish to the next stage of the itinerary.

The stage only annotates (decision 004): routing acts on the verdict. Nothing here holds mail up: a
DNS list, Redis or an external engine that fails is skipped and named in the verdict's notes, and an
unexpected error of the stage on a message passes it on with the verdict ``error``
(``mailmoat_platform.stagefault``) holding what could still be judged without the content (the
sender's authentication, the allow and block lists: a DMARC ``reject`` still refuses a spoof); routing
acts on that, else applies ``antispam.actions.error``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mailmoat_antispam.asf import custom_spam_headers, strip_custom_spam
from mailmoat_antispam.auth import authentication_results, authserv_id, strip_spoofed_authres
from mailmoat_antispam.check import Checker, Outcome
from mailmoat_antispam.score import REPORT, STAGE, _safe, fold, headers
from mailmoat_antispam.verdict import AntispamVerdict
from mailmoat_platform.bus import Publish
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.runtime import Runtime, Transient, serve_stage
from mailmoat_platform.settings import Settings
from mailmoat_platform.stagefault import error_event, error_token, fault
from mailmoat_policy import Policy
from mailmoat_records.senderblocks import REFRESH, CachedBlockList

log = logging.getLogger(__name__)

SERVICE = STAGE


def annotate(outcome: Outcome, envelope: Envelope, data: bytes, policy: Policy) -> bytes:
    """The message as passed on: our header fields prepended, spoofed ``Authentication-Results`` claiming
    our authserv-id and incoming ``X-CustomSpam`` fields removed, every other byte unchanged."""
    return report(outcome, envelope, policy) + cleaned(data, policy)


def report(outcome: Outcome, envelope: Envelope, policy: Policy) -> bytes:
    """The header fields the stage prepends: report, SCL, ``X-CustomSpam``, ``Authentication-Results``."""
    auth = authentication_results(authserv_id(policy), outcome.auth) if outcome.auth is not None else b""
    return headers(outcome.verdict, envelope) + custom_spam_headers(outcome.findings.asf) + auth


def cleaned(data: bytes, policy: Policy) -> bytes:
    """The message without spoofed ``Authentication-Results`` claiming our authserv-id and without
    incoming ``X-CustomSpam`` fields."""
    return strip_custom_spam(strip_spoofed_authres(data, authserv_id(policy)))


def summary(outcome: Outcome) -> str:
    d = outcome.verdict.detail
    text = f"{outcome.verdict.result}: SCL {d['scl']} BCL {d['bcl']}"
    if d.get("allowed"):
        return f"{text} ({d['allowed']})"
    if d.get("rules"):
        text += f" score {d.get('score', 0):g} rules {','.join(d['rules'][:10])}"
    return text


def auth_summary(auth: dict[str, Any]) -> dict[str, Any]:
    """The sender authentication for the trace, compact (the verdict's ``auth``, ``AuthResult.detail``): SPF's result
    and domain (and the HELO identity's when checked too), each DKIM signature's result and signing domain, DMARC's
    result, domain and action, ARC's result, composite authentication's result and reason; {} when none ran."""
    if not auth:
        return {}
    spf, dmarc = auth.get("spf") or {}, auth.get("dmarc") or {}
    out: dict[str, Any] = {
        "spf": {"result": spf.get("result"), "domain": spf.get("domain"), "identity": spf.get("identity")},
        "dkim": list({(d.get("result"), d.get("domain")): {"result": d.get("result"), "domain": d.get("domain")}
                      for d in auth.get("dkim") or []}.values())[:10],
        "dmarc": {"result": dmarc.get("result"), "domain": dmarc.get("domain"), "policy": dmarc.get("policy")},
        "arc": (auth.get("arc") or {}).get("result"),
        "compauth": {k: (auth.get("compauth") or {}).get(k) for k in ("result", "reason")},
    }
    if auth.get("spf_helo"):
        out["spf_helo"] = {k: auth["spf_helo"].get(k) for k in ("result", "domain")}
    return out


def blocks_refresh() -> float:
    """``MAILMOAT_ANTISPAM_BLOCKS_REFRESH``: seconds the copy of the blocked senders is used before it is read
    again (30; 0: read for every message)."""
    value = os.environ.get("MAILMOAT_ANTISPAM_BLOCKS_REFRESH", "")
    try:
        return max(0.0, float(value)) if value.strip() else REFRESH
    except ValueError:
        log.warning("MAILMOAT_ANTISPAM_BLOCKS_REFRESH=%r is not a number: %s s", value[:40], REFRESH)
        return REFRESH


def console_blocks(runtime: Runtime) -> CachedBlockList | None:
    """The senders blocked from the console, read from the records database (``MAILMOAT_RECORDS=postgresql``)."""
    settings = getattr(runtime, "settings", None)
    if settings is None or settings.records != "postgresql":
        return None
    blocks = CachedBlockList(settings.database_url, ttl=blocks_refresh())
    runtime.on_stop(blocks.close)
    return blocks


def make_handler(runtime: Runtime, checker: Checker | None = None):
    checker = checker or Checker(redis=runtime.redis, blocks=console_blocks(runtime))

    async def handle(envelope: Envelope, data: bytes) -> list[Publish]:
        policy = runtime.policy.current
        try:
            outcome = await checker.check(envelope, data, policy)
            header, body = report(outcome, envelope, policy), cleaned(data, policy)
        except Transient:
            raise
        except Exception as exc:  # a fault of this stage on this message: passed on, never a dead letter
            detail = fault(SERVICE, envelope, exc)
            partial = await checker.fallback(envelope, data, policy)
            verdict, header, body = failed(detail, envelope, data, policy, partial)
            author = (verdict.detail.get("auth") or {}).get("author") or {}
            authentication = auth_summary(verdict.detail.get("auth") or {})
            traced = {k: v for k, v in verdict.detail.items() if k != "auth"}
            if authentication:
                traced |= {"author": author, "authentication": authentication}
            event = error_event(SERVICE, envelope, "error", traced,
                                f"antispam.actions.error: {policy.antispam.actions.error}")
            return [await runtime.finish(envelope, body, verdict, event, header,
                                         authors=author.get("addresses") or ())]
        verdict = outcome.verdict
        clean = verdict.result in ("clean", "allowed")
        author = (verdict.detail.get("auth") or {}).get("author") or {}
        authentication = auth_summary(verdict.detail.get("auth") or {})
        event = TraceEvent(
            event="AGENTINFO" if clean else "SPAM", message_id=envelope.id, service=SERVICE,
            recipients=envelope.rcpt_to, detail=summary(outcome),
            data={"result": verdict.result, **{k: v for k, v in verdict.detail.items() if k != "auth"},
                  "author": author, **({"authentication": authentication} if authentication else {})},
        )
        return [await runtime.finish(envelope, body, verdict, event, header, authors=author.get("addresses") or ())]

    return handle


def failed(detail: dict[str, str], envelope: Envelope, data: bytes, policy: Policy, partial: Outcome | None = None
           ) -> tuple[Verdict, bytes, bytes]:
    """The ``error`` verdict, the header and the message as passed on when the stage failed on it: the report header
    says ``SFV:ERR``, incoming copies of headers only this stage may write are still removed when that
    works. ``partial`` (``Checker.fallback``): what was judged without the content, its authentication
    (DMARC, spoof), allow or block list and SCL kept in the verdict, and its ``Authentication-Results``
    prepended; routing acts on those first, then applies ``antispam.actions.error`` (deliver by default)."""
    judged: dict[str, Any] = {}
    if partial is not None:  # without content there is no score: a verdict that found nothing claims no SCL
        keep = _AUTHENTICATION if partial.verdict.result == "clean" else _JUDGED_WITHOUT_CONTENT
        judged = {k: v for k, v in partial.verdict.detail.items() if k in keep}
    verdict = Verdict(stage=STAGE, result="error", detail=AntispamVerdict.wire(**judged, **detail))
    body = data
    for strip in (lambda b: strip_spoofed_authres(b, authserv_id(policy)), strip_custom_spam):
        try:
            body = strip(body)
        except Exception:  # the message goes on as it came; the first error is the one reported
            log.exception("antispam: could not clean incoming headers of %s", envelope.id)
    tokens = [f"CIP:{_safe(envelope.client_ip) or 'none'}", "SFV:ERR", f"ERR:{error_token(detail)}"]
    if "scl" in judged:
        tokens.append(f"SCL:{judged['scl']}")
    dmarc = judged.get("dmarc") or {}
    if dmarc.get("result") not in (None, "", "none"):
        tokens.append(f"DMARC:{_safe(str(dmarc['result']))}")
    header = fold(REPORT, tokens)
    if partial is not None and partial.auth is not None:
        try:
            header += authentication_results(authserv_id(policy), partial.auth)
        except Exception:  # the verdict still carries the results; the message goes on without the field
            log.exception("antispam: could not write Authentication-Results of %s", envelope.id)
    return verdict, header, body


_AUTHENTICATION = ("dmarc", "forged", "auth", "notes")
_JUDGED_WITHOUT_CONTENT = (*_AUTHENTICATION, "scl", "category", "categories", "allowed")
"""The keys of ``Checker.fallback``'s verdict the ``error`` verdict keeps (all of them but the SCL and
categories when it found nothing)."""


async def main(settings: Settings, worker: int = 0) -> None:
    await serve_stage(SERVICE, settings, worker, make_handler, prefetch=32)
