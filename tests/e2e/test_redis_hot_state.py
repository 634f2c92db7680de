"""Redis keeps only hot, expiring state once the records are in PostgreSQL (``MAILMOAT_RECORDS=postgresql``):
after messages relayed through ingress, routing and egress (rate limits and greylisting on), a quarantine
and its release, every key in the gateway's Redis database has a TTL, or belongs to one of the bounded
sets listed in ``BOUNDED`` (deploy/README.md, *Redis: what it holds*)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
import redis

from mailmoat_records import db
from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import send
from tests.e2e.test_quarantine_postgresql import cli, deliveries, held, wait_until
from tests.support.gateway import Gateway
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

LIMITS = """
connection_filter:
  rate_limits:
    connections: 20
    messages_per_minute: 100
  greylisting:
    enabled: true
    delay: 1
rules:
  - name: hold-invoices
    conditions: {{subject_contains: [invoice]}}
    actions: {{quarantine: true}}
"""

# Keys allowed without a TTL, each bounded by something other than time, and why (deploy/README.md's table).
BOUNDED: dict[str, str] = {
    r"mailmoat:bayes:(spam|ham|count|seen)": "antispam training: grows with what an operator trains (its "
                                             "vocabulary, one digest per trained message), not with the mail flow",
}


def unbounded(client: redis.Redis) -> dict[str, str]:
    """Every key of the database with neither a TTL nor a pattern in ``BOUNDED``: key -> type."""
    found: dict[str, str] = {}
    for key in client.scan_iter(count=500):
        name = key.decode(errors="replace")
        if any(re.fullmatch(pattern, name) for pattern in BOUNDED):
            continue
        if client.ttl(key) == -1:
            found[name] = client.type(key).decode()
    return found


def accepted(gateway: Gateway, sender: str, rcpt: str, subject: str) -> None:
    """Send until greylisting lets the triple through (its delay is 1 s); bounded."""
    data = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    deadline = time.monotonic() + 20
    while True:
        code, reply = send(gateway.smtp_port, sender, [rcpt], data)
        if code == 250:
            return
        assert code == 451 or code == 450, reply
        assert time.monotonic() < deadline, f"greylisting never accepted {sender} -> {rcpt}"
        time.sleep(0.5)  # the greylisting delay must pass: a retry after it, as a sending MTA does


def test_redis_holds_only_expiring_keys(gateway_factory: Callable[..., Gateway], database_url: str,
                                        sink: SmtpSink, redis_url: str) -> None:
    db.upgrade(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine CASCADE")
    gateway = gateway_factory(POLICY + ROUTING_HOP + LIMITS, services=("ingress", "routing", "egress", "recorder"),
                              env={"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": database_url,
                                   "MAILMOAT_QUARANTINE_RELAY_AFTER": "2"})
    token = uuid.uuid4().hex[:8]
    for n in range(5):
        accepted(gateway, f"s{n}-{token}@sender.org", f"r{n}-{token}@example.com", f"plain {n}")
    wait_until(lambda: sum(len(deliveries(sink, f"plain {n}")) for n in range(5)) == 5, "five deliveries")

    accepted(gateway, "s@outside.test", "alice@example.com", "warmup")  # held() sends once: greylisting passed
    qid = held(gateway, "invoice 1", ["alice@example.com"])
    done = cli(gateway, "release", qid)
    assert done.returncode == 0 and done.stdout == f"{qid}: released to alice@example.com\n", done.stderr
    wait_until(lambda: deliveries(sink, "invoice 1"), "the released message delivered")

    client = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in client.scan_iter(count=500)]
        # what the flow wrote: delivery dedupe, rate limits, greylisting (and nothing of the records)
        assert any(k.startswith("mailmoat:delivered:") for k in keys), keys
        assert any(k.startswith("mailmoat:rl") for k in keys), keys
        assert any(k.startswith("mailmoat:grey") for k in keys), keys
        assert not [k for k in keys if k.startswith(("mailmoat:trace:", "mailmoat:quarantine:"))], keys
        assert unbounded(client) == {}
        client.set("mailmoat:no-ttl-check", 1)  # the check sees a key without a TTL
        assert unbounded(client) == {"mailmoat:no-ttl-check": "string"}
    finally:
        client.close()
