"""One OpenTelemetry trace spans a message's whole path, ingress to egress, across processes."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import message, send
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

TRACE_ID = re.compile(r'"trace_id": "0x([0-9a-f]{32})"')
SPAN_NAME = re.compile(r'"name": "([^"]+)"')


@pytest.mark.parametrize("hop", [True, False], ids=["routing-stage", "routing-at-ingress"])
def test_one_trace_id_from_ingress_to_egress(gateway_factory, sink: SmtpSink, hop: bool) -> None:
    gateway = gateway_factory(POLICY + ROUTING_HOP if hop else POLICY, env={"OTEL_TRACES_EXPORTER": "console"})
    code, reply = send(gateway.smtp_port, "s@sender.org", ["alice@example.com"], message(1))
    assert code == 250, reply
    sink.wait_for(1)
    gateway.stop()  # flushes the span exporters
    ingress = gateway.log_path("ingress").read_text()
    traces = set(TRACE_ID.findall(ingress))
    assert len(traces) == 1, traces
    (trace_id,) = traces
    assert trace_id in TRACE_ID.findall(gateway.log_path("egress").read_text())
    # Routed at ingress, the message never reaches the routing process.
    assert (trace_id in TRACE_ID.findall(gateway.log_path("routing").read_text())) is hop
    spans = {name for text in (ingress, gateway.log_path("egress").read_text()) for name in SPAN_NAME.findall(text)}
    assert any("egress" in name for name in spans), spans
