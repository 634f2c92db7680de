"""Routing service wiring: consume mailmoat.routing, carry out the verdict actions, split per route.

Steps of ``Router.handle``, in order (decision 004):
1. mail-flow rules (``rules.evaluate``): each match is a ``RULE`` trace event naming the rule and its
   mode; an enforced rule may end the message (reject with an NDR, delete, quarantine), change it
   (headers, Subject, disclaimer, recipients), set the SCL or bypass spam filtering (the verdict
   action of step 2 then sees that SCL), or pick an outbound connector and require TLS (step 3).
   Reports the gateway made itself (DSNs) and released messages are not subject to rules; a rule's
   notice to the sender (``notify_sender``) is published to routing whatever becomes of the message;
2. the verdict action (``actions.disposition``: the first stage, by the registry's precedence, whose
   typed verdict calls for one): quarantine, delete and reject end the message here;
   a Subject prefix, a redirect or stripped attachments change it and it goes on;
3. per-recipient routes: one copy per route to egress;
4. each copy's last change (``signing``): SRS for an outside sender's copy leaving for outside
   recipients, DKIM signing of outbound mail for our domains, ARC sealing of inbound mail we changed
   or forward — after every change above, so the signatures cover the bytes egress sends. Recipients
   that are our SRS addresses are reversed before step 1.
Every action is traced with the verdict that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import Counter

from mailmoat_platform.bus import Publish, stage_queue
from mailmoat_platform.models import Envelope, TraceEvent, utcnow
from mailmoat_platform.redisclient import RedisError
from mailmoat_platform.runtime import Runtime, Transient, stage_publish
from mailmoat_platform.settings import Settings
from mailmoat_platform.verdicts import Disposition
from mailmoat_policy import Policy
from mailmoat_records.quarantine import HeldStore, admin_notice, open_quarantine
from mailmoat_routing.actions import Outcome, carry_out, disposition, ndr_for
from mailmoat_routing.decide import copies_for
from mailmoat_routing.quarantine_gauge import QuarantineGauge
from mailmoat_routing.rules import RuleHit, RuleOutcome, apply_outcome, evaluate
from mailmoat_routing.rules.notify import trace_event
from mailmoat_routing.rules.routing import plan_with_rules
from mailmoat_routing.signing import Signer

SERVICE = "routing"

log = logging.getLogger(__name__)

ACTIONS = Counter(
    "mailmoat_routing_actions_total",
    "Messages by the verdict action routing carried out and the verdict that caused it.",
    ["action", "cause"],
)

RULE_HITS = Counter(
    "mailmoat_rule_hits_total",
    "Mail-flow rule matches by rule name and mode (test-mode matches change nothing).",
    ["rule", "mode"],
)


def _event(event: str, envelope: Envelope, disp: Disposition, detail: str, **data: object) -> TraceEvent:
    return TraceEvent(
        event=event, message_id=envelope.id, service=SERVICE, recipients=list(envelope.rcpt_to), detail=detail,
        data={"action": disp.action, "cause": disp.cause, "stage": disp.stage, "result": disp.result, **data},
    )


def _rule_event(envelope: Envelope, hit: RuleHit) -> TraceEvent:
    return TraceEvent(
        event="RULE", message_id=envelope.id, service=SERVICE, recipients=list(envelope.rcpt_to),
        detail=hit.describe(), data={"rule": hit.rule, "mode": hit.mode, "actions": hit.actions, **hit.detail},
    )


def rule_disposition(outcome: RuleOutcome) -> Disposition:
    """The disposition of a message a rule ended (quarantine reason ``rule``, result the rule's name)."""
    assert outcome.final is not None
    return Disposition(
        action=outcome.final, cause="rule", stage="rules", result=outcome.rule, reason=outcome.text or "",
        status=(outcome.code or "5.7.1") if outcome.final == "reject" else None,
    )


def decide_message(envelope: Envelope, data: bytes, policy: Policy) -> tuple[RuleOutcome | None, Outcome]:
    """Steps 1 and 2 (pure): the mail-flow rules (none for the gateway's own reports and released
    messages), then, unless a rule ended the message, the verdict action."""
    rules: RuleOutcome | None = None
    if policy.rules and envelope.kind == "message" and not envelope.released_from:
        rules = evaluate(envelope, data, policy, utcnow())
        envelope, data = apply_outcome(envelope, rules), rules.data
    if rules is not None and rules.final is not None:
        return rules, Outcome(rule_disposition(rules), envelope, data)
    return rules, carry_out(disposition(envelope, policy), envelope, data, policy)


class Router:
    """The routing handler with its quarantine store."""

    def __init__(self, runtime: Runtime, quarantine: HeldStore | None = None):
        self.runtime = runtime
        # In Redis or PostgreSQL, as ``Settings.records`` says (Redis when the runtime has no settings).
        self.quarantine = quarantine or open_quarantine(getattr(runtime, "settings", None) or Settings(),
                                                        runtime.redis)
        self.on_hold: Callable[[], None] | None = None
        """Called after each message this router held (the quarantine's size changed)."""
        self.signer = Signer()

    async def handle(self, envelope: Envelope, data: bytes) -> list[Publish]:
        policy = self.runtime.policy.current
        events: list[TraceEvent] = []
        if policy.srs.enabled:  # bounces to our SRS addresses go back to the original senders
            envelope, reversed_events = self.signer.reverse_recipients(envelope, policy)
            events += reversed_events
        received = data
        # 1. Mail-flow rules, 2. the verdict action.
        rules, outcome = decide_message(envelope, data, policy)
        if rules is not None:
            events += [_rule_event(envelope, hit) for hit in rules.hits]
        if rules is None or rules.final is None:
            events += self._action_events(outcome)
        if outcome.delivers:
            # 3. Routes.
            copies = self._route(outcome.envelope, policy, events, rules)
            outputs = await self._finish(copies, outcome.data, outcome.data != received, policy, events)
        else:
            outputs = await self._end(outcome, policy, events)
        for notice in rules.notices if rules else []:
            await self.runtime.record(trace_event(notice), sender="", recipients=notice.envelope.rcpt_to,
                                      message_id_header=notice.envelope.message_id_header)
            outputs.append(Publish(stage_queue(SERVICE), notice.envelope, notice.data))
        await self.runtime.record(events)
        for hit in rules.hits if rules else []:
            RULE_HITS.labels(hit.rule, hit.mode).inc()
        ACTIONS.labels(outcome.action, outcome.disposition.cause).inc()
        return outputs

    # --- actions that change the message ------------------------------------------------------

    @staticmethod
    def _action_events(outcome: Outcome) -> list[TraceEvent]:
        disp, envelope = outcome.disposition, outcome.envelope
        if disp.action == "redirect":
            original = outcome.detail.get("original_recipients", [])
            return [_event("REDIRECT", envelope, disp, f"{disp.describe()}; redirected from {', '.join(original)}",
                           **outcome.detail)]
        if disp.action == "strip":
            return [_event("MALWARE", envelope, disp,
                           f"{disp.describe()}; replaced part(s) {', '.join(disp.strip)} with a notice",
                           **outcome.detail)]
        if disp.action in ("junk", "prepend_subject") or (disp.action == "deliver" and disp.cause != "none"):
            if disp.cause == "released":
                return []
            return [_event("SPAM", envelope, disp, disp.describe(), **outcome.detail)]
        return []

    # --- actions that end the message ---------------------------------------------------------

    async def _end(self, outcome: Outcome, policy: Policy, events: list[TraceEvent]) -> list[Publish]:
        disp, envelope, data = outcome.disposition, outcome.envelope, outcome.data
        if disp.action == "quarantine":
            return await self._quarantine(disp, envelope, data, policy, events)
        if disp.action == "delete":
            events.append(_event("DELETE", envelope, disp, disp.describe()))
            return []
        if disp.action == "reject":
            return await self._reject(disp, envelope, data, policy, events)
        raise ValueError(f"unknown action {disp.action!r}")

    async def _quarantine(self, disp: Disposition, envelope: Envelope, data: bytes, policy: Policy,
                          events: list[TraceEvent]) -> list[Publish]:
        try:
            held, _ = await self.quarantine.put(envelope, data, reason=disp.cause, result=disp.result,
                                                detail=disp.reason, settings=policy.quarantine)
        except (RedisError, OSError) as exc:
            raise Transient(f"quarantine store unavailable: {exc}") from exc
        if self.on_hold is not None:
            self.on_hold()
        events.append(_event("QUARANTINE", envelope, disp, disp.describe(), quarantine_id=held.id,
                             expires=held.expires, release_by=held.release_by))
        outputs: list[Publish] = []
        notify = policy.quarantine.admin_notify
        if notify and disp.cause == "malware":
            notice, body = admin_notice(held, notify, policy.organization.hostname)
            outputs.append(Publish(stage_queue(SERVICE), notice, body))
            events.append(_event("AGENTINFO", envelope, disp, f"malware notice {notice.id} to {notify}",
                                 notice_id=notice.id))
        return outputs

    async def _reject(self, disp: Disposition, envelope: Envelope, data: bytes, policy: Policy,
                      events: list[TraceEvent]) -> list[Publish]:
        status = disp.status or "5.7.1"
        events.append(_event("FAIL", envelope, disp, f"550 {status} {disp.describe()}", status=status))
        built = ndr_for(disp, envelope, data, utcnow(), policy.organization.hostname)
        if built is None:
            events.append(_event("AGENTINFO", envelope, disp, "no non-delivery report: "
                                 + ("null sender" if not envelope.mail_from else "the sender is not trusted")))
            return []
        ndr, ndr_data = built
        events.append(_event("DSN", envelope, disp, f"non-delivery report {ndr.id} to the sender", dsn_id=ndr.id))
        await self.runtime.record(
            TraceEvent(event="DSN", message_id=ndr.id, service=SERVICE, recipients=ndr.rcpt_to,
                       detail=f"non-delivery report about {envelope.id}", data={"parent_id": envelope.id}),
            sender="", recipients=ndr.rcpt_to, message_id_header=ndr.message_id_header,
        )
        # Like egress's DSNs, the report enters the pipeline at routing and is routed as any message.
        return [Publish(stage_queue(SERVICE), ndr, ndr_data)]

    # --- routes ---------------------------------------------------------------------------------

    async def _finish(self, copies: list[Envelope], data: bytes, changed: bool, policy: Policy,
                      events: list[TraceEvent]) -> list[Publish]:
        """4. SRS, DKIM, ARC on each copy (in a worker thread: signing is CPU work), then publish."""
        if not Signer.active(policy):
            return [stage_publish(copy, data, SERVICE) for copy in copies]
        treated = await asyncio.to_thread(self.signer.treat, copies, data, changed, policy)
        events += treated.events
        return [stage_publish(copy, body, SERVICE) for copy, body in treated.copies]

    @staticmethod
    def _route(envelope: Envelope, policy: Policy, events: list[TraceEvent],
               rules: RuleOutcome | None = None) -> list[Envelope]:
        splits = plan_with_rules(envelope, policy, rules)
        copies = copies_for(envelope, splits)
        if len(copies) > 1:
            events.append(TraceEvent(
                event="EXPAND", message_id=envelope.id, service=SERVICE, recipients=envelope.rcpt_to,
                detail=f"split into {len(copies)} copies by route",
            ))
        for copy in copies:
            assert copy.route is not None
            events.append(TraceEvent(
                event="ROUTE", message_id=envelope.id, service=SERVICE, recipients=copy.rcpt_to,
                detail=copy.route.name, data={"route": copy.route.model_dump()},
            ))
        return copies


def make_handler(runtime: Runtime):
    return Router(runtime).handle


async def main(settings: Settings, worker: int = 0) -> None:
    runtime = Runtime(SERVICE, settings, worker=worker, prefetch=64)
    await runtime.start()
    router = Router(runtime)
    gauge = QuarantineGauge(router.quarantine, settings.quarantine_gauge_interval)
    router.on_hold = gauge.changed
    loops = [asyncio.create_task(gauge.run_forever())]
    if settings.records == "postgresql":
        from mailmoat_records.quarantinedb import QuarantineDB, relay_forever

        assert isinstance(router.quarantine, QuarantineDB)
        # Releases whose process died before marking them are published again (decision 010).
        loops.append(asyncio.create_task(relay_forever(router.quarantine, runtime.bus, runtime.trace)))
    try:
        await runtime.consume_stage(SERVICE, router.handle)
        await runtime.serve_forever()
    finally:
        for loop in loops:
            loop.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await router.quarantine.close()
