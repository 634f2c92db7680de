"""End-to-end fixtures: the gateway as processes between real SMTP clients and a recording sink."""

from __future__ import annotations

import asyncio
import concurrent.futures
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import aio_pika.exceptions
import pytest

from tests.support import records
from tests.support.gateway import Gateway
from tests.support.infra import amqp_url_for, create_vhost, delete_vhost
from tests.support.sink import SmtpSink

POLICY = """
organization:
  hostname: gw.mailmoat.test
  internal_networks: [127.0.0.10/32]
accepted_domains:
  - domain: example.com
    route: onprem
  - domain: strict.example.com
    dbeb: true
    route: onprem
directory: [alice@strict.example.com]
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
limits:
  max_message_size: {max_size}
  max_recipients: 50
delivery:
  retry_delays: [1, 2]
  expire_after: 600
"""

ROUTING_HOP = """
pipeline:
  route_at_ingress: false
"""
"""Added to ``POLICY``: every message through the routing stage, even without filter stages."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "expects_dead_letter: the test means a message to end in mailmoat.dead (not checked empty)")


def dead_letters(url: str, show: int = 10) -> tuple[int, list[str]]:
    """How many messages ``mailmoat.dead`` of the vhost at ``url`` holds, and the first ``show`` reasons
    (``x-mailmoat-dead-reason``); (0, []) when the queue was never declared. Read without consuming."""

    async def look() -> tuple[int, list[str]]:
        connection = await aio_pika.connect(url, timeout=10)
        try:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue("mailmoat.dead", passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0, []
            count = queue.declaration_result.message_count or 0
            reasons = []
            for _ in range(min(count, show)):
                message = await queue.get(fail=False, no_ack=False)
                if message is None:
                    break
                headers = message.headers or {}
                reason = headers.get("x-mailmoat-dead-reason", b"(no reason)")
                reasons.append(reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason))
            return count, reasons  # the unacked gets go back to the queue when the connection closes
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # no event loop of the test in the way
        return pool.submit(asyncio.run, look()).result(timeout=30)


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A vhost per end-to-end test, so no message of one test reaches the next. When the test is over
    (its gateways stopped), the vhost's ``mailmoat.dead`` must be empty unless the test is marked
    ``expects_dead_letter``: mail that dies fails the suite, whatever the test itself looked at."""
    name = create_vhost()
    url = amqp_url_for(name)
    try:
        yield url
        if request.node.get_closest_marker("expects_dead_letter") is None:
            count, reasons = dead_letters(url)
            assert count == 0, f"{count} message(s) in mailmoat.dead: " + "; ".join(reasons)
    finally:
        delete_vhost(name)


@pytest.fixture(autouse=True)
def records_database() -> Iterator[str]:
    """The gateways' records database (PostgreSQL, ``tests.support.records``), emptied before each test
    as the Redis database is: a look-up by client IP or sender finds the test's own messages only."""
    url = records.ensure()
    records.clean()
    yield url


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """The organisation's mail server: it offers PIPELINING, as Postfix and Exchange do (the
    connector tests' servers do not, so both ways of sending run end to end)."""
    with SmtpSink(pipelining=True) as server:
        yield server


@pytest.fixture
def gateway_factory(tmp_path: Path, amqp_url: str, redis_url: str, sink: SmtpSink
                    ) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(policy: str = POLICY, *, amqp: str | None = None, redis: str | None = None, ingress_workers: int = 1,
             services: tuple[str, ...] = ("ingress", "routing", "egress"), max_size: int = 1_000_000,
             env: dict[str, str] | None = None, recorder: bool = True, **fmt: object) -> Gateway:
        path = tmp_path / "policy.yaml"
        path.write_text(textwrap.dedent(policy).format(sink_port=sink.port, max_size=max_size, **fmt))
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gateway = Gateway(workdir, amqp or amqp_url, redis or redis_url, path, ingress_workers=ingress_workers,
                          extra_env=env)
        started.append(gateway)
        gateway.start(services, recorder=recorder)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium through Playwright, for a module's browser tests (tests/support/browser.py)."""
    from tests.support.browser import launched_chromium

    with launched_chromium() as launched:
        yield launched
