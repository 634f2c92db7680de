"""Ingress running the routing step itself (pipeline.route_at_ingress) on the real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from mailmoat_ingress.service import ROUTE_STEP_TIMEOUT, IngressServer
from mailmoat_platform.bus import Bus, decode
from mailmoat_platform.models import Envelope
from mailmoat_platform.settings import Settings
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

POLICY = """
organization:
  hostname: gw.example.net
accepted_domains:
  - {domain: example.com, route: onprem}
  - {domain: other.example, route: partner}
routes:
  onprem: {hosts: ["127.0.0.1:2601"], tls: none}
  partner: {hosts: ["127.0.0.1:2602"], tls: none}
pipeline:
  filters: []
  route_at_ingress: true
"""

MESSAGE = b"From: a@sender.org\r\nTo: b@example.com\r\nSubject: direct\r\n\r\nbody\r\n"


@pytest.fixture
async def probe(amqp_url: str) -> AsyncIterator[Bus]:
    bus = Bus(amqp_url)
    await bus.connect()
    for stage in ("routing", "egress"):
        await bus.declare_stage(stage)
    yield bus
    await bus.close()


async def take_all(bus: Bus, stage: str, expected: int, timeout: float = 5.0) -> list[tuple[Envelope, bytes, dict]]:
    assert bus.channel is not None
    queue = await bus.channel.get_queue(f"mailmoat.{stage}")
    got: list[tuple[Envelope, bytes, dict]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        envelope, data = decode(message.body)
        got.append((envelope, data, dict(message.headers or {})))
    return got


@pytest.fixture
def settings_for(amqp_url: str, redis_url: str, write_policy) -> Callable[[str], Settings]:
    def make(policy: str) -> Settings:
        settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url,
                            policy_path=str(write_policy(policy)),
                            smtp_port=0, log_format="text", publish_timeout=3.0)
        settings.metrics_ports = {}
        return settings

    return make


async def _send(server: IngressServer, rcpts: list[str]) -> None:
    def send() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.sendmail("a@sender.org", rcpts, MESSAGE)

    await asyncio.to_thread(send)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[IngressServer]:
    server = IngressServer(settings, grace=2.0)
    await server.start()
    try:
        deadline = time.monotonic() + 15
        while not server.runtime.bus.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        yield server
    finally:
        await server.stop(grace=2.0)


async def test_ingress_routes_and_publishes_per_route_copies_to_egress(settings_for, probe: Bus) -> None:
    async with running(settings_for(POLICY)) as server:
        await _send(server, ["b@example.com", "c@other.example", "d@example.com"])
        copies = await take_all(probe, "egress", 2)
        assert await take_all(probe, "routing", 1, timeout=0.5) == []
        ids = {envelope.id for envelope, _, _ in copies}
        assert len(ids) == 1
        (message_id,) = ids
        by_route = {envelope.route.name: envelope for envelope, _, _ in copies if envelope.route}
        assert sorted(by_route) == ["route:onprem", "route:partner"]
        assert by_route["route:onprem"].rcpt_to == ["b@example.com", "d@example.com"]
        assert by_route["route:partner"].rcpt_to == ["c@other.example"]
        assert all(envelope.verdicts["routing"].result == "routed" for envelope in by_route.values())
        assert all(data.endswith(MESSAGE) for _, data, _ in copies)
        traceparents = {headers.get("traceparent") for _, _, headers in copies}
        assert len(traceparents) == 1 and None not in traceparents, "one trace from ingress to egress"
        deadline = time.monotonic() + 5
        while True:
            events = await server.runtime.trace.events(message_id)
            kinds = sorted(e.event for e in events)
            if kinds == ["EXPAND", "RECEIVE", "ROUTE", "ROUTE"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert kinds == ["EXPAND", "RECEIVE", "ROUTE", "ROUTE"]
        assert {e.service for e in events if e.event in ("ROUTE", "EXPAND")} == {"routing"}


async def test_with_filter_stages_ingress_hands_the_message_on(settings_for, probe: Bus) -> None:
    policy = POLICY.replace("filters: []", "filters: [connection_filter]")
    async with running(settings_for(policy)) as server:
        await probe.declare_stage("connection_filter")
        await _send(server, ["b@example.com"])
        [(envelope, _, _)] = await take_all(probe, "connection_filter", 1)
        assert envelope.route is None and envelope.itinerary == ["connection_filter", "routing", "egress"]
        assert await take_all(probe, "egress", 1, timeout=0.5) == []


async def test_without_the_setting_ingress_hands_the_message_to_routing(settings_for, probe: Bus) -> None:
    async with running(settings_for(POLICY.replace("route_at_ingress: true", "route_at_ingress: false"))) as server:
        await _send(server, ["b@example.com"])
        [(envelope, _, _)] = await take_all(probe, "routing", 1)
        assert envelope.route is None
        assert await take_all(probe, "egress", 1, timeout=0.5) == []


async def test_a_failing_routing_step_falls_back_to_the_routing_stage(settings_for, probe: Bus) -> None:
    async with running(settings_for(POLICY)) as server:
        async def broken(envelope: Envelope, data: bytes) -> list:
            raise ConnectionError("store down")

        server._route = broken
        await _send(server, ["b@example.com"])
        [(envelope, _, _)] = await take_all(probe, "routing", 1)
        assert envelope.route is None and envelope.rcpt_to == ["b@example.com"]
        assert await take_all(probe, "egress", 1, timeout=0.5) == []


async def test_a_hanging_trace_store_sends_mail_to_the_routing_stage_without_making_clients_wait(
    settings_for, probe: Bus, redis_url: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        proxy.delay(30)  # Redis accepts the connection and never answers in time
        settings = settings_for(POLICY)
        settings.redis_url = redis_url.replace(f":{port}/", f":{proxy.port}/")
        async with running(settings) as server:
            waits = []
            for _ in range(3):
                started = time.monotonic()
                await _send(server, ["b@example.com"])
                waits.append(time.monotonic() - started)
            copies = await take_all(probe, "routing", 3)
            assert len(copies) == 3 and all(envelope.route is None for envelope, _, _ in copies)
            assert await take_all(probe, "egress", 1, timeout=0.5) == []
            # The first message waited for the routing step's budget, the next ones not at all.
            assert ROUTE_STEP_TIMEOUT <= waits[0] < ROUTE_STEP_TIMEOUT + 2.0, waits
            assert max(waits[1:]) < ROUTE_STEP_TIMEOUT, waits
            proxy.cut()
