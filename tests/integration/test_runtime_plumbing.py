"""The runtime's shared plumbing against the real Redis: ``finish`` (a filter stage's last step), ready
checks, background tasks and stop hooks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings

pytestmark = pytest.mark.integration


def _runtime(amqp_url: str, redis_url: str, policy: Path, service: str = "antivirus", **kw) -> Runtime:
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(policy),
                        log_format="text")
    settings.metrics_ports = {}
    return Runtime(service, settings, **kw)


async def test_finish_adds_verdict_header_size_trace_and_publishes_on(amqp_url, redis_url, write_policy) -> None:
    runtime = _runtime(amqp_url, redis_url, write_policy("{}"))
    try:
        envelope = Envelope(mail_from="s@sender.test", rcpt_to=["a@example.com"], size=3,
                            itinerary=["antivirus", "routing", "egress"])
        verdict = Verdict(stage="antivirus", result="clean", detail={"parts": 1})
        event = TraceEvent(event="SCAN", message_id=envelope.id, service="antivirus", detail="clean")
        publish = await runtime.finish(envelope, b"Subject: x\r\n\r\nhi\r\n", verdict, event, b"X-Report: clean\r\n")
        assert publish.queue == "mailmoat.routing" and publish.envelope is envelope
        assert publish.message == b"X-Report: clean\r\nSubject: x\r\n\r\nhi\r\n"
        assert envelope.size == len(publish.message) and envelope.verdicts["antivirus"] is verdict
        assert [e.event for e in await runtime.trace.events(envelope.id)] == ["SCAN"]
        bare = await runtime.finish(envelope.model_copy(), b"body", verdict, event)
        assert bare.data == b"body" and bare.envelope.size == 4
    finally:
        await runtime.shutdown(grace=0)


async def test_ready_checks_background_tasks_and_stop_hooks(amqp_url, redis_url, write_policy) -> None:
    ok = True
    ran = asyncio.Event()
    cancelled = asyncio.Event()
    stopped: list[bool] = []

    async def job() -> None:
        ran.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runtime = _runtime(amqp_url, redis_url, write_policy("{}"), ready_checks=[lambda: ok], background=[job])

    async def hook() -> None:
        stopped.append(runtime.stopping)

    runtime.on_stop(hook)
    await runtime.start(bus=False)
    await asyncio.wait_for(ran.wait(), 5)
    assert runtime.ready()
    ok = False
    assert not runtime.ready()
    late = asyncio.Event()

    async def later() -> None:
        late.set()

    assert runtime.add_background(later) is not None  # started at once on a running runtime
    await asyncio.wait_for(late.wait(), 5)
    await runtime.shutdown(grace=0)
    assert stopped == [True]  # the hook ran once, with the runtime already stopping
    await asyncio.wait_for(cancelled.wait(), 5)
    await runtime.shutdown(grace=0)
    assert stopped == [True]
