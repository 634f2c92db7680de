"""Routing service wiring: consume mailmoat.routing, split per route, publish to the next stage."""

from __future__ import annotations

from mailmoat_common.bus import Publish
from mailmoat_common.models import Envelope, TraceEvent
from mailmoat_common.runtime import Runtime, serve_stage, stage_publish
from mailmoat_common.settings import Settings
from mailmoat_routing.decide import copies_for, plan_routes

SERVICE = "routing"


def make_handler(runtime: Runtime):
    async def handle(envelope: Envelope, data: bytes) -> list[Publish]:
        policy = runtime.policy.current
        splits = plan_routes(envelope, policy)
        copies = copies_for(envelope, splits)
        events = []
        if len(copies) > 1:
            events.append(
                TraceEvent(
                    event="EXPAND", message_id=envelope.id, service=SERVICE, recipients=envelope.rcpt_to,
                    detail=f"split into {len(copies)} copies by route",
                )
            )
        for copy in copies:
            assert copy.route is not None
            events.append(
                TraceEvent(
                    event="ROUTE", message_id=envelope.id, service=SERVICE, recipients=copy.rcpt_to,
                    detail=copy.route.name, data={"route": copy.route.model_dump()},
                )
            )
        outputs = [stage_publish(copy, data, SERVICE) for copy in copies]
        await runtime.trace.record(events)
        return outputs

    return handle


async def main(settings: Settings, worker: int = 0) -> None:
    await serve_stage(SERVICE, settings, worker, make_handler, prefetch=64)
