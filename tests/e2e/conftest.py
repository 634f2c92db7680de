"""End-to-end fixtures: the gateway as processes between real SMTP clients and a recording sink."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A vhost per end-to-end test, so no message of one test reaches the next."""
    name = create_vhost()
    yield amqp_url_for(name)
    delete_vhost(name)


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

    def make(policy: str = POLICY, *, amqp: str | None = None, ingress_workers: int = 1,
             services: tuple[str, ...] = ("ingress", "routing", "egress"), max_size: int = 1_000_000,
             env: dict[str, str] | None = None, **fmt: object) -> Gateway:
        path = tmp_path / "policy.yaml"
        path.write_text(textwrap.dedent(policy).format(sink_port=sink.port, max_size=max_size, **fmt))
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gateway = Gateway(workdir, amqp or amqp_url, redis_url, path, ingress_workers=ingress_workers,
                          extra_env=env)
        started.append(gateway)
        gateway.start(services)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()
