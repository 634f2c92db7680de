"""Accept-to-delivery latency (egress) and queue wait per stage move with real traffic, and measure
the time a message really waited: egress starts a second after the messages were accepted."""

from __future__ import annotations

import time

import pytest

from tests.deploy.exposition import scraped
from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import message, send
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

HELD = 1.0
"""Seconds the messages wait for egress to start."""


def _value(text: str, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in scraped(text).items() if n == name and set(labels.items()) <= ls)


def test_accept_to_delivery_and_queue_wait_measure_real_waits(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(POLICY + ROUTING_HOP, services=("ingress", "routing"))
    accepted = time.monotonic()
    code, reply = send(gateway.smtp_port, "s@sender.org", ["alice@example.com", "bob@example.com"], message(1))
    assert code == 250, reply
    code, reply = send(gateway.smtp_port, "s@sender.org", ["carol@example.com"], message(2))
    assert code == 250, reply
    routing = gateway.metrics("routing")
    deadline = time.monotonic() + 10
    while _value(routing, "mailmoat_queue_wait_seconds_count", stage="routing") < 2:
        assert time.monotonic() < deadline, "routing did not consume both messages"
        time.sleep(0.05)
        routing = gateway.metrics("routing")
    # Routing consumed at once: no wait near a second.
    assert _value(routing, "mailmoat_queue_wait_seconds_bucket", stage="routing", le="0.5") == 2
    time.sleep(max(0.0, accepted + HELD - time.monotonic()))
    gateway.start(("egress",))
    sink.wait_for(2)
    egress = gateway.metrics_when(
        "egress", lambda text: _value(text, "mailmoat_messages_total", service="egress", outcome="ok") >= 2)
    # One copy per routed message, each waited at egress's queue for about a second.
    assert _value(egress, "mailmoat_queue_wait_seconds_count", stage="egress") == 2
    assert _value(egress, "mailmoat_queue_wait_seconds_bucket", stage="egress", le="0.5") == 0
    assert _value(egress, "mailmoat_queue_wait_seconds_sum", stage="egress") >= 2 * (HELD - 0.5)
    # One observation per recipient delivered, by destination kind only (the route is a smart host).
    assert _value(egress, "mailmoat_accept_to_delivery_seconds_count", destination="smarthost") == 3
    assert _value(egress, "mailmoat_accept_to_delivery_seconds_count") == 3
    assert _value(egress, "mailmoat_accept_to_delivery_seconds_bucket", le="0.5") == 0
    assert _value(egress, "mailmoat_accept_to_delivery_seconds_sum") >= 3 * HELD * 0.9


def test_returns_from_a_delay_queue_are_not_queue_wait(gateway_factory, sink: SmtpSink) -> None:
    """A copy deferred twice comes back from the delay queues twice: egress consumed it three times,
    and counted the queue wait of the first only (the others waited the scheduled retry delays)."""
    sink.reply_to("later@example.com", "451 4.2.0 Try again later")
    gateway = gateway_factory(POLICY + ROUTING_HOP)
    code, reply = send(gateway.smtp_port, "s@sender.org", ["later@example.com"], message(1))
    assert code == 250, reply
    # Back after 1 s, deferred again; a deferral is counted as a retry before the consumption that
    # made it is counted as handled (after its ack), so wait for both.
    egress = gateway.metrics_when("egress", lambda text: (
        _value(text, "mailmoat_delivery_retries_total") >= 2
        and _value(text, "mailmoat_messages_total", service="egress", outcome="ok") >= 2), timeout=15)
    assert _value(egress, "mailmoat_delivery_retries_total") >= 2, "not deferred twice"
    assert _value(egress, "mailmoat_messages_total", service="egress", outcome="ok") >= 2
    assert _value(egress, "mailmoat_queue_wait_seconds_count", stage="egress") == 1
    assert _value(egress, "mailmoat_accept_to_delivery_seconds_count") == 0
