"""The synthetic probe against the gateway as processes: it exits 0 when its message is delivered,
1 (with where it stopped) when it is not delivered in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import amqp_url, gateway_factory, sink  # noqa: F401 - fixtures
from tests.support.gateway import Gateway
from tests.support.infra import REDIS_TEST_URL
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

REDIS_URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/13"
"""A database of its own: other tests flush theirs while the probe follows its trace."""


def probe(gateway: Gateway, recipient: str, timeout: float) -> tuple[int, dict[str, object]]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILMOAT_")},
           "MAILMOAT_PROBE_SMTP": f"127.0.0.1:{gateway.smtp_port}", "MAILMOAT_PROBE_TO": recipient,
           "MAILMOAT_PROBE_FROM": "probe@probe.example.org", "MAILMOAT_PROBE_TIMEOUT": str(timeout),
           **{k: gateway.env[k] for k in ("MAILMOAT_REDIS_URL", "MAILMOAT_RECORDS", "MAILMOAT_DATABASE_URL")}}
    done = subprocess.run([sys.executable, "-m", "mailmoat_cli.probe"], env=env, capture_output=True,
                          text=True, timeout=timeout + 30)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_probe_succeeds_when_its_message_is_delivered(gateway_factory, sink: SmtpSink) -> None:  # noqa: F811
    gateway = gateway_factory(env={"MAILMOAT_REDIS_URL": REDIS_URL})
    code, report = probe(gateway, "alice@example.com", 20)
    assert code == 0 and report["ok"] is True, report
    (received,) = sink.wait_for(1)
    assert b"\r\nSubject: mailmoat probe " in received.data


def test_probe_fails_when_the_next_hop_defers(gateway_factory, sink: SmtpSink) -> None:  # noqa: F811
    gateway = gateway_factory(env={"MAILMOAT_REDIS_URL": REDIS_URL})
    sink.reply_to("alice@example.com", "451 4.3.0 Try again later")
    code, report = probe(gateway, "alice@example.com", 3)
    assert code == 1 and report["ok"] is False
    assert "DEFER" in str(report["reason"]), report
