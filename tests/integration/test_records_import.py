"""``mailmoat db import-redis`` and the quarantine's expiry in ``mailmoat db maintain``, against the real
Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from mailmoat_cli import db as dbcli
from mailmoat_platform import redisclient
from mailmoat_platform.models import TraceEvent
from mailmoat_records import db
from mailmoat_records.quarantine import QuarantineStore
from mailmoat_records.quarantinedb import QuarantineDB
from mailmoat_records.trace import TraceStore
from mailmoat_records.tracedb import TraceReader
from tests.integration.test_quarantine_store import DATA, SETTINGS, envelope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
def empty(migrated: str) -> str:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine, trace_events, trace_messages, trace_keys CASCADE")
    return migrated


def seed(redis_url: str) -> dict[str, str]:
    """Two held messages (one released to a recipient) and the trace of one message, in Redis."""
    async def run() -> dict[str, str]:
        client = redisclient.from_url(redis_url)
        store, trace = QuarantineStore(client), TraceStore(client)
        malware, _ = await store.put(envelope(), DATA, reason="malware", result="malware", detail="Eicar",
                                     settings=SETTINGS)
        spam, _ = await store.put(envelope(mail_from="x@other.test"), DATA + b"more", reason="spam", result="spam",
                                  detail="SCL 6", settings=SETTINGS, now=time.time() - 60)
        assert await store.claim(spam.id, ["B@example.com"], "admin op") == ["B@example.com"]
        traced = envelope()
        await trace.record(TraceEvent(event="RECEIVE", message_id=traced.id, service="ingress",
                                      recipients=traced.rcpt_to, detail="from [192.0.2.7]"),
                           sender=traced.mail_from, recipients=traced.rcpt_to, message_id_header="<m1@sender.test>",
                           client_ip="192.0.2.7", authors=["boss@sender.test"])
        await trace.record([TraceEvent(event="DELIVER", message_id=traced.id, service="egress",
                                       recipients=traced.rcpt_to, detail="250 ok")])
        await client.aclose()
        return {"malware": malware.id, "spam": spam.id, "traced": traced.id}

    return asyncio.run(run())


def test_import_redis_twice_adds_nothing_the_second_time(empty: str, redis_url: str, capsys) -> None:
    ids = seed(redis_url)
    assert dbcli.main(["import-redis", "--url", empty, "--redis-url", redis_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "quarantine: 2 imported, 0 already there, 0 gone"
    assert out[1] == "trace: 1 messages, 2 events, 2 new"
    assert dbcli.main(["import-redis", "--url", empty, "--redis-url", redis_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["quarantine: 0 imported, 2 already there, 0 gone", "trace: 1 messages, 2 events, 0 new"]

    async def check() -> None:
        store = QuarantineDB(empty)
        try:
            spam = await store.get(ids["spam"], data=True)
            assert spam is not None and spam.data == DATA + b"more" and spam.detail == "SCL 6"
            assert spam.envelope.mail_from == "x@other.test" and spam.pending == ["a@example.com"]
            assert spam.released["b@example.com"]["by"] == "admin op"
            malware = await store.get(ids["malware"], data=True)
            assert malware is not None and malware.data == DATA and malware.release_by == "admin"
            assert [h.id for h in await store.list()] == [ids["spam"], ids["malware"]]
            assert await store.totals() == {"malware": (1, len(DATA)), "spam": (1, len(DATA) + 4)}
        finally:
            await store.close()
        async with db.open_pool(empty, max_size=1) as pool:
            reader = TraceReader(pool)
            for needle in ("boss@sender.test", "192.0.2.7", "m1@sender.test", "b@example.com"):
                page = await reader.find(needle)
                assert [m.message_id for m in page.messages] == [ids["traced"]], needle
            assert [e.event for e in await reader.events(ids["traced"])] == ["RECEIVE", "DELIVER"]

    asyncio.run(check())

    # --remove: each message leaves Redis once PostgreSQL holds it
    assert dbcli.main(["import-redis", "--url", empty, "--redis-url", redis_url, "--no-trace", "--remove"]) == 0
    assert capsys.readouterr().out == "quarantine: 0 imported, 2 already there, 0 gone, 2 removed from Redis\n"

    async def in_redis() -> list[str]:
        client = redisclient.from_url(redis_url)
        try:
            return await QuarantineStore(client).ids()
        finally:
            await client.aclose()

    assert asyncio.run(in_redis()) == []


def test_maintain_deletes_expired_quarantined_messages(empty: str, capsys) -> None:
    async def hold() -> tuple[str, str]:
        store = QuarantineDB(empty)
        try:
            old, _ = await store.put(envelope(), DATA, reason="spam", result="spam", detail="", settings=SETTINGS,
                                     now=time.time() - 4 * 86400)
            kept, _ = await store.put(envelope(), DATA, reason="spam", result="spam", detail="", settings=SETTINGS)
            return old.id, kept.id
        finally:
            await store.close()

    old, kept = asyncio.run(hold())
    assert dbcli.main(["maintain", "--url", empty, "--retention-days", "90", "--ahead-days", "0"]) == 0
    assert "1 expired quarantined messages deleted" in capsys.readouterr().out
    with psycopg.connect(empty) as conn:
        assert conn.execute("SELECT qid FROM quarantine").fetchall() == [(kept,)]
        assert conn.execute("SELECT count(*) FROM quarantine_recipients WHERE qid = %s", (old,)).fetchone() == (0,)
