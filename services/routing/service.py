"""Routing service wiring: consume mailmoat.routing, carry out the verdict actions, split per route.

Steps of ``Router.handle``, in order (decision 004):
1. mail-flow rules (they may end, change or re-route the message) — not wired yet;
2. the verdict action (``actions.disposition``): quarantine, delete and reject end the message here;
   a Subject prefix, a redirect or stripped attachments change it and it goes on;
3. per-recipient routes: one copy per route to egress.
Every action is traced with the verdict that caused it.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter
from redis.exceptions import RedisError

from mailmoat_common.bus import Publish, stage_queue
from mailmoat_common.models import Envelope, TraceEvent, utcnow
from mailmoat_common.policy import Policy
from mailmoat_common.quarantine import QuarantineStore, admin_notice
from mailmoat_common.runtime import Runtime, Transient, serve_stage, stage_publish
from mailmoat_common.settings import Settings
from mailmoat_routing.actions import Disposition, Outcome, carry_out, disposition, ndr_for
from mailmoat_routing.decide import copies_for, plan_routes

SERVICE = "routing"

log = logging.getLogger(__name__)

ACTIONS = Counter(
    "mailmoat_routing_actions_total",
    "Messages by the verdict action routing carried out and the verdict that caused it.",
    ["action", "cause"],
)


def _event(event: str, envelope: Envelope, disp: Disposition, detail: str, **data: object) -> TraceEvent:
    return TraceEvent(
        event=event, message_id=envelope.id, service=SERVICE, recipients=list(envelope.rcpt_to), detail=detail,
        data={"action": disp.action, "cause": disp.cause, "stage": disp.stage, "result": disp.result, **data},
    )


class Router:
    """The routing handler with its quarantine store."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.quarantine = QuarantineStore(runtime.redis)

    async def handle(self, envelope: Envelope, data: bytes) -> list[Publish]:
        policy = self.runtime.policy.current
        # 1. Mail-flow rules plug in here: a rule outcome may end the message or change it before step 2.
        # 2. The verdict action.
        outcome = carry_out(disposition(envelope, policy), envelope, data, policy)
        events = self._action_events(outcome)
        if outcome.delivers:
            # 3. Routes.
            outputs = self._route(outcome.envelope, outcome.data, policy, events)
        else:
            outputs = await self._end(outcome, policy, events)
        await self.runtime.trace.record(events)
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
        await self.runtime.trace.record(
            TraceEvent(event="DSN", message_id=ndr.id, service=SERVICE, recipients=ndr.rcpt_to,
                       detail=f"non-delivery report about {envelope.id}", data={"parent_id": envelope.id}),
            sender="", recipients=ndr.rcpt_to, message_id_header=ndr.message_id_header,
        )
        # Like egress's DSNs, the report enters the pipeline at routing and is routed as any message.
        return [Publish(stage_queue(SERVICE), ndr, ndr_data)]

    # --- routes ---------------------------------------------------------------------------------

    @staticmethod
    def _route(envelope: Envelope, data: bytes, policy: Policy, events: list[TraceEvent]) -> list[Publish]:
        splits = plan_routes(envelope, policy)
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
        return [stage_publish(copy, data, SERVICE) for copy in copies]


def make_handler(runtime: Runtime):
    return Router(runtime).handle


async def main(settings: Settings, worker: int = 0) -> None:
    await serve_stage(SERVICE, settings, worker, make_handler, prefetch=64)
