"""The trace in PostgreSQL (``MAILMOAT_RECORDS=postgresql``) in the running gateway: a message goes through
ingress, routing and egress, the stages publish its trace to mailmoat.trace, the recorder writes it, and
``mailmoat trace`` finds it by recipient and by sender within a time range (and not outside it); with
PostgreSQL cut away from the recorder, mail still flows and the trace catches up once it returns."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mailmoat_records import db
from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import queue_id, send
from tests.support.gateway import Gateway
from tests.support.sink import SmtpSink
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def trace(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "trace", *args], env=gateway.env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def events_of(output: str, message_id: str) -> list[str]:
    """The event names printed under ``message <id>``."""
    names: list[str] = []
    inside = False
    for line in output.splitlines():
        if line.startswith("message "):
            inside = line.split()[1] == message_id
        elif inside and line.startswith("  "):
            names.append(line.split()[1])
    return names


def test_a_relayed_message_is_found_in_postgresql_by_recipient_and_sender(
        gateway_factory: Callable[..., Gateway], database_url: str, sink: SmtpSink) -> None:
    db.upgrade(database_url)
    gateway = gateway_factory(POLICY + ROUTING_HOP, services=("ingress", "routing", "egress", "recorder"),
                              env={"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": database_url})
    token = uuid.uuid4().hex[:12]
    sender, rcpt = f"s-{token}@sender.org", f"trace-{token}@example.com"
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    code, reply = send(gateway.smtp_port, sender, [rcpt],
                       f"From: {sender}\r\nTo: {rcpt}\r\nSubject: trace {token}\r\n\r\nbody\r\n".encode())
    assert code == 250, reply
    mid = queue_id(reply)
    assert sink.wait_for(1, timeout=30)

    deadline = time.monotonic() + 30
    while True:  # the recorder writes within a moment; bounded
        found = trace(gateway, rcpt, "--since", since)
        if "DELIVER" in events_of(found.stdout, mid) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[0].startswith(f"message {mid}")
    assert f"<{sender}> -> {rcpt}" in found.stdout.splitlines()[0]
    names = events_of(found.stdout, mid)
    assert names[0] == "RECEIVE" and "DELIVER" in names, found.stdout
    assert "behind" not in found.stderr

    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    by_sender = trace(gateway, sender.upper(), "--since", since, "--until", until, "--limit", "5")
    assert by_sender.returncode == 0, by_sender.stderr
    assert events_of(by_sender.stdout, mid) == names
    before = trace(gateway, rcpt, "--until", since)
    assert before.returncode == 1 and "no message found" in before.stdout
    by_id = trace(gateway, mid)
    assert events_of(by_id.stdout, mid) == names


def test_postgresql_away_from_the_recorder_mail_flows_and_the_trace_catches_up(
        gateway_factory: Callable[..., Gateway], database_url: str, sink: SmtpSink) -> None:
    db.upgrade(database_url)
    gateway = gateway_factory(POLICY + ROUTING_HOP, env={"MAILMOAT_RECORDS": "postgresql",
                                                         "MAILMOAT_DATABASE_URL": database_url}, recorder=False)
    parts = urlsplit(database_url)
    with TcpProxy(parts.port or 5432, parts.hostname or "127.0.0.1") as proxy:
        gateway.env["MAILMOAT_DATABASE_URL"] = parts._replace(
            netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}").geturl()
        gateway.start_service("recorder")  # only the recorder reaches PostgreSQL through the proxy
        gateway.env["MAILMOAT_DATABASE_URL"] = database_url  # the command line reads it directly
        proxy.cut()
        token = uuid.uuid4().hex[:12]
        rcpt = f"drill-{token}@example.com"
        ids = []
        for n in range(3):
            started = time.monotonic()
            code, reply = send(gateway.smtp_port, f"s{n}-{token}@sender.org", [rcpt],
                               f"Subject: drill {n}\r\n\r\nbody\r\n".encode())
            assert code == 250, reply  # SMTP never waits on PostgreSQL
            assert time.monotonic() - started < 5
            ids.append(queue_id(reply))
        assert sink.wait_for(3, timeout=30)  # delivered while the trace waits
        deadline = time.monotonic() + 30
        while gateway.ready("recorder") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not gateway.ready("recorder")
        missing = trace(gateway, rcpt)
        assert missing.returncode == 1 and "no message found" in missing.stdout
        proxy.restore()
        deadline = time.monotonic() + 60
        while True:
            found = trace(gateway, rcpt)
            if all("DELIVER" in events_of(found.stdout, mid) for mid in ids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert all(events_of(found.stdout, mid)[0] == "RECEIVE" and "DELIVER" in events_of(found.stdout, mid)
                   for mid in ids), found.stdout
