"""``MAILMOAT_TOPOLOGY=colocated``: ``mailmoat run all`` runs every filter stage and routing in one ``pipeline``
process that hands messages over in memory (decision 012). Through real SMTP, RabbitMQ, Redis, PostgreSQL,
clamd and a local DNS server: clean mail is delivered with every stage's report header and trace event,
malware is still held, nothing passes through the intermediate queues, and SIGTERM stops the process with
nothing lost."""

from __future__ import annotations

import base64
import signal
import smtplib
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.clamd import ClamdServer
from tests.support.dnsserver import DnsServer
from tests.support.gateway import ALL, Gateway
from tests.support.queues import dead_letters, queue_stats
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EXTRA = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [connection_filter, antivirus, antispam]
"""
FILTERS = ("connection_filter", "antivirus", "antispam")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with ClamdServer(Path(tmp_path_factory.mktemp("clamd-colocated"))) as server:
        yield server


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer("1.0.0.127.in-addr.arpa. 60 IN PTR client.sender.test.\n"
                   "client.sender.test. 60 IN A 127.0.0.1\n") as server:
        yield server


def send(port: int, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.sender.test")
        assert client.sendmail("sender@outside.test", ["alice@example.com"], data) == {}


def children(pid: int) -> list[list[str]]:
    """Command lines of the processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((stat.parent / "cmdline").read_bytes().decode().split("\0"))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return out


def message(n: int, body: bytes = b"Hello, this is a plain message.\r\n") -> bytes:
    return (f"From: Sender <sender@outside.test>\r\nTo: alice@example.com\r\nSubject: colocated {n}\r\n"
            f"Message-ID: <colocated{n}@outside.test>\r\nDate: Sat, 05 Dec 2026 20:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n").encode() + body


def infected(n: int) -> bytes:
    """A message with the EICAR test file attached."""
    attachment = base64.b64encode(EICAR).decode()
    return (f"From: Sender <sender@outside.test>\r\nTo: alice@example.com\r\nSubject: colocated {n}\r\n"
            f"Message-ID: <colocated{n}@outside.test>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
            '--b\r\nContent-Type: application/octet-stream; name="eicar.com"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b--\r\n").encode()


def events(n: int, final: str) -> list[dict]:
    def complete(found: list[dict]) -> bool:
        return any(e["event"] == final for e in found) and set(FILTERS) <= {e["service"] for e in found}

    return records.wait_until(lambda: records.events_by("msgid", f"colocated{n}@outside.test"), complete,
                              f"{final} and the filters' events of message {n}")


def test_one_pipeline_process_filters_routes_and_hands_over_in_memory(
        tmp_path, amqp_url: str, redis_url: str, sink: SmtpSink, dns: DnsServer, clamd: ClamdServer) -> None:
    text = (textwrap.dedent(POLICY) + textwrap.dedent(EXTRA)).format(
        sink_port=sink.port, max_size=1_000_000, dns_port=dns.port)
    gateway = Gateway(tmp_path / "gw", amqp_url, redis_url, policy_text=text,
                      extra_env={"MAILMOAT_TOPOLOGY": "colocated", "MAILMOAT_CLAMD_ADDRESS": clamd.address})
    with gateway:
        gateway.start_all()
        services = {cmd[cmd.index("run") + 1] for cmd in children(gateway.procs[ALL].pid)}
        assert services == {"ingress", "pipeline", "egress", "recorder", "console"}, services

        for n in range(5):
            send(gateway.smtp_port, message(n))
        got = sink.wait_for(5, timeout=60)
        for item in got:
            head = item.data.split(b"\r\nFrom: Sender", 1)[0]
            for header in (b"X-Mailmoat-Connection-Report:", b"X-Mailmoat-Malware-Report:",
                           b"X-Mailmoat-Antispam-Report:"):
                assert header in head, (header, item.data[:800])
            assert item.data.endswith(b"Hello, this is a plain message.\r\n")  # the bytes after the headers intact
        for n in range(5):
            found = events(n, "DELIVER")
            assert {"connection_filter", "antivirus", "antispam", "routing"} <= {e["service"] for e in found}

        send(gateway.smtp_port, infected(9))
        held = events(9, "QUARANTINE")
        assert any(e["service"] == "antivirus" and e["event"] == "MALWARE" for e in held)

        # Handed over in memory: the first stage took all six from its queue, the others none from theirs
        # (each finished them all), and nothing waits in any of them.
        metrics = gateway.metrics("antispam")  # one process: every stage's series
        assert 'mailmoat_queue_wait_seconds_count{stage="connection_filter"} 6.0' in metrics
        for stage in (*FILTERS[1:], "routing"):
            assert f'mailmoat_queue_wait_seconds_count{{stage="{stage}"}}' not in metrics
            assert f'mailmoat_messages_total{{outcome="ok",service="{stage}"}} 6.0' in metrics
            assert queue_stats(amqp_url, f"mailmoat.{stage}") == (0, 1)

        gateway.procs[ALL].send_signal(signal.SIGTERM)
        assert gateway.procs[ALL].wait(timeout=60) == 0
        assert dead_letters(amqp_url) == 0
        assert queue_stats(amqp_url, "mailmoat.connection_filter") == (0, 0)
        assert len(sink.messages) == 5
