"""Rate limits and greylisting in the in-process ingress when Redis hangs: the client is let through
(fail open) within the Redis timeout, and the skipped checks are counted."""

from __future__ import annotations

import asyncio
import smtplib

import pytest
from prometheus_client import REGISTRY

from tests.integration.test_ingress_service import (  # noqa: F401  (fixtures)
    POLICY,
    make_settings,
    probe,
    running,
    take,
)
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

LIMITED = POLICY + """
connection_filter:
  rate_limits:
    connections: 1
    messages_per_minute: 1
    recipients_per_minute: 1
    redis_timeout: 0.2
  greylisting:
    enabled: true
"""


def errors() -> float:
    return sum(REGISTRY.get_sample_value("mailmoat_ingress_limit_errors_total", {"check": check}) or 0.0
               for check in ("connections", "messages", "recipients", "greylist"))


async def test_limits_fail_open_while_redis_hangs(make_settings, probe, redis_url: str) -> None:  # noqa: F811
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        proxy.delay(30)  # Redis accepts the connection and never answers in time
        proxied = redis_url.replace(f":{port}/", f":{proxy.port}/")
        async with running(make_settings(LIMITED, redis_url=proxied)) as server:
            before = errors()

            def attempt() -> tuple[int, bytes]:
                with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
                    client.ehlo("client")
                    client.mail("a@sender.org")
                    client.rcpt("bob@example.com")
                    return client.data(b"Subject: x\r\n\r\ny\r\n")

            # twice: the second would be over every limit (and greylisted) if Redis answered
            first, second = [await asyncio.to_thread(attempt) for _ in range(2)]
            assert first[0] == second[0] == 250
            await take(probe)
            await take(probe)
            assert errors() - before == 8  # connection, message, recipient, greylist, per session
            proxy.cut()
