"""After traffic, every service's /metrics shows its counters moved; /healthz and /readyz answer."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import message, send
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample (``name{labels}``) in a Prometheus text exposition; 0 when absent."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("hop", [True, False], ids=["routing-stage", "routing-at-ingress"])
def test_metrics_move_with_traffic(gateway_factory, sink: SmtpSink, hop: bool) -> None:
    gateway = gateway_factory(POLICY + ROUTING_HOP if hop else POLICY)
    for service in ("ingress", "routing", "egress"):
        port = gateway.port_of(service)
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                assert reply.status == 200, (service, path)
    for n in range(3):
        code, reply = send(gateway.smtp_port, "s@sender.org", ["alice@example.com"], message(n))
        assert code == 250, reply
    sink.wait_for(3)
    ingress = gateway.metrics("ingress")
    assert sample(ingress, "mailmoat_smtp_replies_total", 'code="250"') >= 3
    assert sample(ingress, "mailmoat_ingress_messages_total", 'result="accepted"') == 3
    assert sample(ingress, "mailmoat_ingress_accept_seconds_count") == 3
    # Routing passes a message on beside its trace record and counts it once both are confirmed and it
    # acked: the sink can have the third message first. The routing step's own counters are kept by the
    # process that ran it.
    routing = gateway.metrics_when(
        "routing", lambda text: sample(text, "mailmoat_messages_total", 'outcome="ok",service="routing"')
        >= (3 if hop else 0))
    router = routing if hop else ingress
    assert sample(routing, "mailmoat_messages_total", 'outcome="ok",service="routing"') == (3 if hop else 0)
    assert sample(routing, "mailmoat_processing_seconds_count", 'service="routing"') == (3 if hop else 0)
    assert sample(router, "mailmoat_verdicts_total", 'result="routed",stage="routing"') == 3
    assert sample(router, "mailmoat_routing_actions_total", 'action="deliver",cause="none"') == 3
    # The sink has the third message before egress has heard the reply and acked: wait for the ack.
    egress = gateway.metrics_when(
        "egress", lambda text: sample(text, "mailmoat_messages_total", 'outcome="ok",service="egress"') >= 3)
    assert sample(egress, "mailmoat_deliveries_total", 'destination="route:onprem",result="delivered"') == 3
    assert sample(egress, "mailmoat_messages_total", 'outcome="ok",service="egress"') == 3
    # Every serving process watches its collector's pauses, under its own name (none need have happened).
    for text, name in ((ingress, "ingress"), (routing, "routing"), (egress, "egress")):
        assert re.search(rf'^mailmoat_gc_pause_seconds_count\{{generation="2",service="{name}"\}} ', text, re.M), name
