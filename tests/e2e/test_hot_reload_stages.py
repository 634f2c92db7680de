"""Hot reload never strands mail: with ``mailmoat run all`` running, a filter stage added to
``pipeline.filters`` is started by the supervisor, and mail the reloaded ingress sends to it is
delivered with the stage's verdict, without a restart; dropped again, the stage is stopped once its
queue is empty."""

from __future__ import annotations

import re
import smtplib
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.dnsserver import DnsServer
from tests.support.gateway import ALL, Gateway
from tests.support.queues import dead_letters, queue_stats
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

DNS = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
"""
FILTER = """
pipeline:
  filters: [connection_filter]
"""


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer("1.0.0.127.in-addr.arpa. 60 IN PTR localhost.test.\nlocalhost.test. 60 IN A 127.0.0.1\n") as server:
        yield server


def policy(sink: SmtpSink, dns: DnsServer, *extra: str) -> str:
    text = "".join(textwrap.dedent(part) for part in (POLICY, DNS, *extra))
    return text.format(sink_port=sink.port, max_size=1_000_000, dns_port=dns.port)


def reloads(gateway: Gateway, service: str) -> float:
    match = re.search(rf'mailmoat_policy_reloads_total{{result="ok",service="{service}"}} (\S+)',
                      gateway.metrics(service))
    return float(match.group(1)) if match else 0.0


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def send(port: int, n: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("localhost.test")
        client.mail("s@sender.test")
        client.rcpt("alice@example.com")
        data = f"Subject: reload {n}\r\nMessage-ID: <reload{n}@sender.test>\r\n\r\nbody\r\n".encode()
        code, reply = client.data(data)
    assert code == 250, reply
    return reply.decode().split()[1]


def trace(message_id: str, *services: str) -> list[dict]:
    """The message's trace once its delivery and an event of each of ``services`` are in it (the recorder
    writes a moment after the sink got the message, each stage's events as that stage published them)."""
    def complete(events: list[dict]) -> bool:
        return any(e["event"] == "DELIVER" for e in events) and {*services} <= {e["service"] for e in events}

    return records.wait_until(lambda: records.events(message_id), complete, f"the trace of {message_id}")


def test_a_stage_added_by_reload_is_started_and_mail_is_delivered(tmp_path, amqp_url: str, redis_url: str,
                                                                  sink: SmtpSink, dns: DnsServer) -> None:
    gateway = Gateway(tmp_path / "gw", amqp_url, redis_url, policy_text=policy(sink, dns))
    with gateway:
        gateway.start_all()
        assert not gateway.ready("connection_filter")

        gateway.write_policy(policy(sink, dns, FILTER))
        wait_until(lambda: reloads(gateway, "ingress") >= 1, 10, "ingress did not reload the policy")
        qid = send(gateway.smtp_port, 1)  # itinerary with connection_filter, whether or not it is up yet
        (got,) = sink.wait_for(1, timeout=30)
        assert got.data.startswith(b"X-Mailmoat-Connection-Report: CIP:127.0.0.1;")
        events = trace(qid, "connection_filter")
        verdicts = [e for e in events if e["service"] == "connection_filter"]
        assert verdicts and verdicts[0]["event"] == "AGENTINFO"
        assert verdicts[0]["detail"].startswith("connection filter: pass")
        assert "DELIVER" in [e["event"] for e in events]
        assert gateway.ready("connection_filter")
        assert "the policy now lists connection_filter: starting connection_filter[0]" in gateway.tail(*ALL)

        # dropped again: stopped once its queue is empty, and mail still flows
        gateway.write_policy(policy(sink, dns))
        wait_until(lambda: not gateway.ready("connection_filter"), 20, "connection_filter was not stopped")
        assert "mailmoat.connection_filter is empty: stopping connection_filter[0]" in gateway.tail(*ALL)
        send(gateway.smtp_port, 2)
        second = sink.wait_for(2, timeout=30)[1]
        assert b"X-Mailmoat-Connection-Report" not in second.data
        assert queue_stats(amqp_url, "mailmoat.connection_filter") == (0, 0)
        assert dead_letters(amqp_url) == 0
        assert gateway.procs[ALL].poll() is None  # never restarted
