"""The quarantine in PostgreSQL (``MAILMOAT_RECORDS=postgresql``) in the running gateway: a message a rule
quarantines is listed, released with ``mailmoat quarantine``, delivered once; a release whose process is
killed (``kill -9``) after its publish was confirmed, or before it published, is delivered exactly once
(routing relays the unfinished release, egress delivers each recipient of a copy once)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from mailmoat_records import db
from tests.e2e.conftest import POLICY
from tests.e2e.test_mail_flow import queue_id, send
from tests.support.gateway import Gateway
from tests.support.sink import Received, SmtpSink

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

RULES = POLICY + """
rules:
  - name: hold-invoices
    conditions: {{subject_contains: [invoice]}}
    actions: {{quarantine: true}}
"""


@pytest.fixture
def records(database_url: str) -> Iterator[str]:
    db.upgrade(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine CASCADE")
    yield database_url


def env_for(database_url: str) -> dict[str, str]:
    return {"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": database_url,
            "MAILMOAT_QUARANTINE_RELAY_AFTER": "2"}


def cli(gateway: Gateway, *args: str, module: str = "mailmoat_cli.main") -> subprocess.CompletedProcess[str]:
    """``mailmoat quarantine ...`` (or another module) with the gateway's environment."""
    command = [sys.executable, "-m", module, *(["quarantine"] if module == "mailmoat_cli.main" else []), *args]
    return subprocess.run(command, env=gateway.env, capture_output=True, text=True, timeout=60, cwd=REPO)


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def states(database_url: str, qid: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT state FROM quarantine_recipients WHERE qid = %s ORDER BY recipient", (qid,)).fetchall()]


def held(gateway: Gateway, subject: str, rcpts: list[str]) -> str:
    """Send a message the rule quarantines; its queue id once ``quarantine list`` shows it."""
    data = f"From: s@outside.test\r\nTo: {rcpts[0]}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    code, reply = send(gateway.smtp_port, "s@outside.test", rcpts, data)
    assert code == 250, reply
    qid = queue_id(reply)
    wait_until(lambda: qid in cli(gateway, "list").stdout, f"{qid} listed in the quarantine")
    return qid


def deliveries(sink: SmtpSink, subject: str) -> list[Received]:
    return [m for m in list(sink.messages) if f"Subject: {subject}".encode() in m.data]


def test_rule_quarantine_list_release_delivered_once(gateway_factory, sink: SmtpSink, records: str) -> None:
    gateway = gateway_factory(RULES, env=env_for(records))
    qid = held(gateway, "invoice 1", ["alice@example.com", "bob@example.com"])
    line = cli(gateway, "list", "--reason", "rule").stdout
    assert re.match(rf"{qid}  \S+  rule\s+held\s+<s@outside.test> -> alice@example.com, bob@example.com\n", line)
    assert "reason:      rule (hold-invoices)" in cli(gateway, "show", qid).stdout
    assert "\nSubject: invoice" not in b"".join(m.data for m in sink.messages).decode(errors="replace")
    with psycopg.connect(records) as conn:  # held in PostgreSQL, not in Redis
        assert conn.execute("SELECT reason, result FROM quarantine WHERE qid = %s", (qid,)).fetchone() == \
            ("rule", "hold-invoices")

    done = cli(gateway, "release", qid, "--recipient", "bob@example.com")
    assert done.returncode == 0 and done.stdout == f"{qid}: released to bob@example.com\n", done.stderr
    (first,) = [m for m in sink.wait_for(1) if b"invoice 1" in m.data]
    assert first.rcpt_tos == ["bob@example.com"]
    done = cli(gateway, "release", qid)
    assert done.stdout == f"{qid}: released to alice@example.com\n{qid}: already released to bob@example.com\n"
    wait_until(lambda: len(deliveries(sink, "invoice 1")) == 2, "the second release delivered")
    assert cli(gateway, "release", qid).stdout == \
        f"{qid}: already released to alice@example.com, bob@example.com\n"
    assert re.search(rf"{qid} .* released\s+<", cli(gateway, "list").stdout)
    assert states(records, qid) == ["released", "released"]
    # a normal message in between is delivered, so the second release's copy had its turn at egress
    code, _ = send(gateway.smtp_port, "s@outside.test", ["carol@example.com"], b"Subject: plain\r\n\r\nhi\r\n")
    assert code == 250
    wait_until(lambda: deliveries(sink, "plain"), "the plain message delivered")
    assert sorted(r for m in deliveries(sink, "invoice 1") for r in m.rcpt_tos) == \
        ["alice@example.com", "bob@example.com"]
    assert cli(gateway, "delete", qid).returncode == 0 and qid not in cli(gateway, "list").stdout


@pytest.mark.parametrize("when", ["after-publish", "before-publish"])
def test_release_killed_midway_is_delivered_exactly_once(gateway_factory, sink: SmtpSink, records: str,
                                                         when: str) -> None:
    gateway = gateway_factory(RULES, env=env_for(records))
    qid = held(gateway, "invoice 2", ["alice@example.com", "bob@example.com"])
    crashed = cli(gateway, qid, when, module="tests.support.release_crash")
    assert crashed.returncode == -9, crashed.stderr
    # routing relays the release once it is older than MAILMOAT_QUARANTINE_RELAY_AFTER (2 s) ...
    wait_until(lambda: states(records, qid) == ["released", "released"], "the release relayed and marked")
    delivered = wait_until(lambda: deliveries(sink, "invoice 2"), "the release delivered")[0]
    assert sorted(delivered.rcpt_tos) == ["alice@example.com", "bob@example.com"]
    egress_log = gateway.log_path("egress")
    if when == "after-publish":
        # ... so the copy came twice to egress, which delivered it once and skipped it the second time.
        wait_until(lambda: "all recipients already delivered" in egress_log.read_text(errors="replace"),
                   "egress to skip the relayed copy")
    assert "relayed the unfinished release" in gateway.log_path("routing").read_text(errors="replace")
    assert "mailmoat_quarantine_releases_relayed_total 2.0" in gateway.metrics("routing")
    code, _ = send(gateway.smtp_port, "s@outside.test", ["carol@example.com"], b"Subject: plain\r\n\r\nhi\r\n")
    assert code == 250
    wait_until(lambda: deliveries(sink, "plain"), "the plain message delivered")
    assert len(deliveries(sink, "invoice 2")) == 1
    assert cli(gateway, "release", qid).stdout == \
        f"{qid}: already released to alice@example.com, bob@example.com\n"
