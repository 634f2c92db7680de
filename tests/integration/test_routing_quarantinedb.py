"""The routing handler with the quarantine in PostgreSQL: a held message is in the database when
``handle`` returns (before routing acks); the database down is a transient failure (the message is
retried), never a loss."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import psycopg
import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Transient
from mailmoat_platform.settings import Settings
from mailmoat_policy import parse_policy
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from mailmoat_records.trace import TraceStore
from mailmoat_routing.service import Router

pytestmark = pytest.mark.integration

POLICY = """
accepted_domains:
  - {domain: example.com, route: onprem}
routes:
  onprem: {hosts: ["127.0.0.1:2526"], tls: none}
rules:
  - name: hold
    conditions: {subject_contains: [hold me]}
    actions: {quarantine: true}
"""
HOLD = b"From: s@outside.test\r\nSubject: hold me\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
async def runtime(redis_url: str, migrated: str) -> AsyncIterator[SimpleNamespace]:
    client = redisclient.from_url(redis_url)
    trace = TraceStore(client)
    yield SimpleNamespace(policy=SimpleNamespace(current=parse_policy(POLICY)), redis=client, trace=trace,
                          record=trace.record, settings=Settings(records="postgresql", database_url=migrated))
    await client.aclose()


def envelope() -> Envelope:
    return Envelope(mail_from="s@outside.test", rcpt_to=["a@example.com"], itinerary=["routing", "egress"])


async def test_held_in_postgresql_before_handle_returns(runtime: SimpleNamespace, migrated: str) -> None:
    router = Router(runtime)  # type: ignore[arg-type]
    assert isinstance(router.quarantine, QuarantineDB)  # chosen by settings.records
    env = envelope()
    try:
        assert await router.handle(env, HOLD) == []
        assert await router.handle(env, HOLD) == []  # redelivered: held once
    finally:
        await router.quarantine.close()
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT reason, result FROM quarantine WHERE qid = %s", (env.id,)).fetchall() == \
            [("rule", "hold")]
    assert [e.event for e in await runtime.trace.events(env.id)].count("QUARANTINE") == 2


async def test_database_down_is_transient(runtime: SimpleNamespace) -> None:
    down = QuarantineDB("postgresql://postgres@127.0.0.1:1/none", timeout=1)
    router = Router(runtime, down)  # type: ignore[arg-type]
    try:
        with pytest.raises(Transient, match="quarantine store unavailable"):
            await router.handle(envelope(), HOLD)
    finally:
        await down.close()
