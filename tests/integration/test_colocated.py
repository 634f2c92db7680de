"""Stages in one process (``colocated``): a message is handed from stage to stage in memory within the first
stage's delivery, only the last output is published, and a stage that fails on a handed-over message gets it
through its own queue instead (retries, delivery limit, dead-letter queue as always). Real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from mailmoat_platform import colocated
from mailmoat_platform.bus import DEAD_QUEUE, Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.runtime import Runtime, Transient, stop_all
from tests.integration.test_runtime import POLICY, _empty, _get, _settings
from tests.support.traced import wait_traced

pytestmark = pytest.mark.integration

STAGES = ("c1", "c2", "c3", "c4")
"""c1 → c2 → c3 run together; c4's queue is read by the test."""

Behaviour = Callable[[Envelope, bytes], Awaitable[None]]


@pytest.fixture
async def probe(amqp_url: str):
    bus = Bus(amqp_url)
    await bus.connect()
    assert bus.channel is not None
    for stage in STAGES:
        await bus.declare_stage(stage)
        await (await bus.channel.get_queue(stage_queue(stage))).purge()
    await (await bus.channel.get_queue(DEAD_QUEUE)).purge()
    colocated.enable()
    yield bus
    colocated.disable()
    await bus.close()


class Chain:
    """Three stages in this process; each adds ``X-<stage>: yes`` and notes whether it was called within one
    of the first stage's deliveries (handed over in memory) or a delivery of its own."""

    def __init__(self) -> None:
        self.runtimes: dict[str, Runtime] = {}
        self.calls: dict[str, list[bool]] = {stage: [] for stage in STAGES[:3]}
        self.before: dict[str, Behaviour] = {}
        self.first: list[asyncio.Task | None] = []

    async def start(self, amqp_url: str, redis_url: str, policy) -> None:
        for stage in STAGES[:3]:
            runtime = Runtime(stage, _settings(amqp_url, redis_url, policy))
            runtime.retry_pause = 0.01
            await runtime.start()
            self.runtimes[stage] = runtime
            await runtime.consume_stage(stage, self._handler(runtime, stage))

    def _handler(self, runtime: Runtime, stage: str):
        async def handle(envelope: Envelope, data: bytes) -> list[Publish]:
            task = asyncio.current_task()
            if stage == "c1":
                self.first.append(task)
            self.calls[stage].append(stage != "c1" and task in self.first)
            if stage in self.before:
                await self.before[stage](envelope, data)
            event = TraceEvent(event="SCAN", message_id=envelope.id, service=stage, recipients=envelope.rcpt_to)
            verdict = Verdict(stage=stage, result="clean")
            return [await runtime.finish(envelope, data, verdict, event, f"X-{stage}: yes\r\n".encode())]

        return handle

    async def stop(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.shutdown()


def _envelope() -> Envelope:
    return Envelope(mail_from="s@example.org", rcpt_to=["a@example.com"], itinerary=list(STAGES))


async def test_stages_of_one_process_hand_over_in_memory_and_publish_the_last_output(
        amqp_url, redis_url, write_policy, probe) -> None:
    chain = Chain()
    await chain.start(amqp_url, redis_url, write_policy(POLICY))
    try:
        envelope = _envelope()
        await probe.publish(Publish(stage_queue("c1"), envelope, b"Subject: a\r\n\r\nbody\r\n"))
        got, data = decode((await _get(probe, stage_queue("c4"))).body)
        assert got.id == envelope.id
        assert data == b"X-c3: yes\r\nX-c2: yes\r\nX-c1: yes\r\nSubject: a\r\n\r\nbody\r\n"
        assert list(got.verdicts) == ["c1", "c2", "c3"]
        assert chain.calls == {"c1": [False], "c2": [True], "c3": [True]}  # each once, within c1's delivery
        for stage in STAGES[:3]:
            assert await _empty(probe, stage_queue(stage))
        # Each stage's trace is stored beside the publish of the last output, not before it.
        await wait_traced(chain.runtimes["c1"].trace, envelope.id, lambda events: len(events) >= 3)
        events = await chain.runtimes["c1"].trace.events(envelope.id)
        assert sorted(e.service for e in events) == ["c1", "c2", "c3"]
    finally:
        await chain.stop()


async def test_a_temporary_failure_passes_the_message_to_that_stages_queue(
        amqp_url, redis_url, write_policy, probe) -> None:
    chain = Chain()
    failures = 1

    async def clamd_away(envelope: Envelope, data: bytes) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise Transient("clamd away")

    chain.before["c2"] = clamd_away
    await chain.start(amqp_url, redis_url, write_policy(POLICY))
    try:
        envelope = _envelope()
        await probe.publish(Publish(stage_queue("c1"), envelope, b"Subject: b\r\n\r\n"))
        got, data = decode((await _get(probe, stage_queue("c4"))).body)
        assert got.id == envelope.id
        # c2 saw the message twice: handed over (failed), then from its queue (not within c1's delivery),
        # and the copy it got the second time carried c1's work only, not a half-done c2.
        assert chain.calls["c2"] == [True, False]
        assert data == b"X-c3: yes\r\nX-c2: yes\r\nX-c1: yes\r\nSubject: b\r\n\r\n"
        assert chain.calls["c1"] == [False]
        assert await _empty(probe, stage_queue("c1"))
        assert await _empty(probe, DEAD_QUEUE)
    finally:
        await chain.stop()


async def test_a_stage_that_keeps_failing_dead_letters_through_its_own_queue(
        amqp_url, redis_url, write_policy, probe) -> None:
    chain = Chain()

    async def broken(envelope: Envelope, data: bytes) -> None:
        raise ValueError("cannot parse this")

    chain.before["c3"] = broken
    await chain.start(amqp_url, redis_url, write_policy(POLICY))
    try:
        envelope = _envelope()
        await probe.publish(Publish(stage_queue("c1"), envelope, b"Subject: poison\r\n\r\n"))
        dead = await _get(probe, DEAD_QUEUE, timeout=20)
        assert "c3: ValueError: cannot parse this" in dead.headers["x-mailmoat-dead-reason"]
        dead_envelope, data = decode(dead.body)
        assert dead_envelope.id == envelope.id
        assert data == b"X-c2: yes\r\nX-c1: yes\r\nSubject: poison\r\n\r\n"  # as handed to c3
        limit = chain.runtimes["c3"].bus.delivery_limit
        assert chain.calls["c3"] == [True] + [False] * limit  # once in memory, then the queue's attempts
        assert chain.calls["c1"] == [False] and chain.calls["c2"] == [True]
        assert await _empty(probe, stage_queue("c4"))
    finally:
        await chain.stop()


async def test_without_colocation_every_stage_gets_the_message_from_its_queue(
        amqp_url, redis_url, write_policy, probe) -> None:
    colocated.disable()
    chain = Chain()
    await chain.start(amqp_url, redis_url, write_policy(POLICY))
    try:
        await probe.publish(Publish(stage_queue("c1"), _envelope(), b"Subject: d\r\n\r\n"))
        await _get(probe, stage_queue("c4"))
        assert chain.calls == {"c1": [False], "c2": [False], "c3": [False]}
    finally:
        await chain.stop()


async def test_sigterm_stops_every_stage_of_the_process(amqp_url, redis_url, write_policy, probe) -> None:
    chain = Chain()
    await chain.start(amqp_url, redis_url, write_policy(POLICY))
    serving = [asyncio.create_task(runtime.serve_forever()) for runtime in chain.runtimes.values()]
    await asyncio.sleep(0.05)
    stop_all()  # what the signal handler calls
    await asyncio.wait_for(asyncio.gather(*serving), 30)
    assert all(runtime.stopping for runtime in chain.runtimes.values())
    assert colocated.local(stage_queue("c2")) is None
