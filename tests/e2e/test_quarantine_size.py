"""The quarantine's size on routing's /metrics follows real traffic: two messages a mail-flow rule
holds count under ``reason="rule"`` (messages and bytes), a third delivered does not, and a delete
by the operator's command line takes one off."""

from __future__ import annotations

import time

import pytest

from tests.deploy.exposition import scraped
from tests.e2e.actions_support import quarantine_cli
from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import message, send
from tests.support import records
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

HOLD = """
rules:
  - name: hold
    conditions:
      subject_contains: [test 1, test 2]
    actions:
      quarantine: true
"""


def _value(text: str, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in scraped(text).items() if n == name and set(labels.items()) <= ls)


def _wait_for(gateway, name: str, want: float, timeout: float = 10) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        text = gateway.metrics("routing")
        if _value(text, name, reason="rule") == want:
            return text
        assert time.monotonic() < deadline, f"{name} not {want}: {_value(text, name, reason='rule')}"
        time.sleep(0.05)


def test_quarantine_size_follows_holds_and_deletes(gateway_factory, sink: SmtpSink, amqp_url: str,
                                                   redis_url: str) -> None:
    gateway = gateway_factory(POLICY + ROUTING_HOP + HOLD, env={"MAILMOAT_QUARANTINE_GAUGE_INTERVAL": "0.2"})
    for n in (1, 2, 3):
        code, reply = send(gateway.smtp_port, "s@sender.org", ["alice@example.com"], message(n))
        assert code == 250, reply
    sink.wait_for(1)
    text = _wait_for(gateway, "mailmoat_quarantine_messages", 2)
    held_bytes = _value(text, "mailmoat_quarantine_bytes", reason="rule")
    assert held_bytes >= len(message(1)) + len(message(2))
    assert {ls for (n, ls) in scraped(text) if n == "mailmoat_quarantine_messages"} == {frozenset({("reason", "rule")})}
    first = records.held_ids()[0]
    result = quarantine_cli(amqp_url, "delete", first)
    assert result.returncode == 0, result.stderr
    text = _wait_for(gateway, "mailmoat_quarantine_messages", 1)
    assert 0 < _value(text, "mailmoat_quarantine_bytes", reason="rule") < held_bytes
