"""The quarantine in the real PostgreSQL: hold, list, release once per recipient (claim, publish, mark),
the relay of an unfinished release, expiry, totals; releases through real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.bus import Bus
from mailmoat_platform.settings import Settings
from mailmoat_records import db
from mailmoat_records.quarantine import QuarantineStore, QuarantineUnavailable, ReleaseError, open_quarantine, release
from mailmoat_records.quarantinedb import QuarantineDB
from mailmoat_records.trace import TraceStore
from tests.integration.test_quarantine_store import DATA, SETTINGS, drain, envelope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
async def store(migrated: str) -> AsyncIterator[QuarantineDB]:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine CASCADE")
    opened = QuarantineDB(migrated)
    yield opened
    await opened.close()


@pytest.fixture
async def trace(redis_url: str) -> AsyncIterator[TraceStore]:
    client = redisclient.from_url(redis_url)
    yield TraceStore(client)
    await client.aclose()


def _rows(url: str, query: str, *args: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchall()


async def test_open_quarantine_picks_the_backend(migrated: str) -> None:
    client = redisclient.from_url("redis://127.0.0.1:6379/7")
    assert isinstance(open_quarantine(Settings(records="redis"), client), QuarantineStore)
    pg = open_quarantine(Settings(records="postgresql", database_url=migrated))
    assert isinstance(pg, QuarantineDB)
    await pg.close()
    await client.aclose()


async def test_put_is_idempotent_keeps_bytes_compressed(store: QuarantineDB, migrated: str) -> None:
    env = envelope()
    big = DATA + b"x" * 200_000  # compressed in a worker thread
    held, created = await store.put(env, big, reason="malware", result="malware", detail="Eicar", settings=SETTINGS)
    assert created and held.id == env.id and held.release_by == "admin"
    _, created = await store.put(env, b"other", reason="malware", result="malware", detail="x", settings=SETTINGS)
    assert not created
    got = await store.get(env.id, data=True)
    assert got is not None and got.data == big and got.envelope == env and got.detail == "Eicar"
    assert got.verdicts["antivirus"]["detail"]["names"] == ["Eicar-Test-Signature"]
    assert 19 * 86400 < got.expires - time.time() <= 20 * 86400
    assert got.released == {} and got.pending == env.rcpt_to and got.author == "s@sender.test"
    ((size, stored, codec),) = _rows(migrated, "SELECT size, length(data), codec FROM quarantine WHERE qid = %s",
                                     env.id)
    assert size == len(big) and stored < len(big) // 20 and codec == "zlib"
    spam, _ = await store.put(envelope(), DATA, reason="spam", result="spam", detail="SCL 6", settings=SETTINGS)
    assert spam.release_by == "user" and 2 * 86400 < spam.expires - time.time() <= 3 * 86400
    blocked, _ = await store.put(envelope(), DATA, reason="malware", result="blocked-type", detail="exe",
                                 settings=SETTINGS)
    assert blocked.release_by == "user"
    # text PostgreSQL refuses (NUL) is stored all the same
    odd, created = await store.put(envelope(helo="bad\x00helo"), DATA, reason="rule", result="r\x00", detail="d\x00",
                                   settings=SETTINGS)
    assert created and (await store.get(odd.id)) is not None


async def test_list_filters_expiry_and_totals(store: QuarantineDB) -> None:
    now = time.time()
    a, _ = await store.put(envelope(), DATA, reason="malware", result="malware", detail="", settings=SETTINGS,
                           now=now - 100)
    b, _ = await store.put(envelope(mail_from="X@other.test", rcpt_to=["c@example.com"]), DATA, reason="spam",
                           result="spam", detail="", settings=SETTINGS, now=now)
    c, _ = await store.put(envelope(), DATA, reason="malware", result="blocked-type", detail="", settings=SETTINGS,
                           now=now + 10)
    assert [h.id for h in await store.list()] == [a.id, b.id, c.id]
    assert [h.id for h in await store.list(recipient="b@EXAMPLE.com")] == [a.id, c.id]
    assert [h.id for h in await store.list(sender="x@other.test")] == [b.id]
    assert [h.id for h in await store.list(sender="s@sender.test", reason="blocked-type")] == [c.id]
    assert [h.id for h in await store.list(reason="spam")] == [b.id]
    assert [h.id for h in await store.list(since=now - 50)] == [b.id, c.id]
    assert [h.id for h in await store.list(until=now - 50)] == [a.id]
    assert await store.list(sender="") == []
    assert await store.totals() == {"malware": (2, 2 * len(DATA)), "spam": (1, len(DATA))}
    assert set(await store.ids()) == {a.id, b.id, c.id}

    # spam is kept 3 days: past that it is not shown, then pruned, and its reason goes down to zero
    later = now + 4 * 86400
    assert await store.prune(now=later) == 1
    assert await store.get(b.id) is None and [h.id for h in await store.list()] == [a.id, c.id]
    assert await store.totals() == {"malware": (2, 2 * len(DATA)), "spam": (0, 0)}
    # held again once its earlier hold expired
    expired, _ = await store.put(envelope(), DATA, reason="spam", result="spam", detail="", settings=SETTINGS,
                                 now=now - 5 * 86400)
    assert await store.get(expired.id) is None
    _, created = await store.put(expired.envelope, DATA, reason="spam", result="spam", detail="again",
                                 settings=SETTINGS)
    assert created and (await store.get(expired.id)).detail == "again"

    assert await store.delete(a.id) and not await store.delete(a.id)
    assert [h.id for h in await store.list()] == [expired.id, c.id]


async def test_release_once_per_recipient_through_the_bus(store: QuarantineDB, trace: TraceStore,
                                                          amqp_url: str, migrated: str) -> None:
    bus = Bus(amqp_url)
    await bus.connect()
    routing = await bus.declare_stage("routing")
    env = envelope()
    held, _ = await store.put(env, DATA, reason="malware", result="malware", detail="Eicar", settings=SETTINGS)

    with pytest.raises(ReleaseError, match="only an administrator"):
        await release(store, bus, trace, held.id, role="user")
    with pytest.raises(ReleaseError, match="not a recipient"):
        await release(store, bus, trace, held.id, recipients=["z@example.com"])
    with pytest.raises(ReleaseError, match="no quarantined message"):
        await release(store, bus, trace, "NOPE")

    first = await release(store, bus, trace, held.id, recipients=["b@example.com"], who="admin test")
    assert first.recipients == ["B@example.com"] and first.already == []
    results = await asyncio.gather(*(release(store, bus, trace, held.id) for _ in range(5)))
    assert sorted(r for res in results for r in res.recipients) == ["a@example.com"]
    assert all("B@example.com" in res.already for res in results)

    got = await drain(bus, routing, 3, timeout=5)
    assert sorted(tuple(e.rcpt_to) for e, _ in got) == [("B@example.com",), ("a@example.com",)]
    for released, data in got:
        assert data == DATA and released.id == env.id and released.released_from == held.id
    shown = await store.get(held.id)
    assert shown is not None and shown.pending == [] and set(shown.released) == {"a@example.com", "b@example.com"}
    assert shown.released["b@example.com"]["by"] == "admin test"
    assert _rows(migrated, "SELECT DISTINCT state FROM quarantine_recipients WHERE qid = %s", held.id) == \
        [("released",)]
    events = [e for e in await trace.events(env.id) if e.event == "RELEASE"]
    assert sorted(e.recipients[0] for e in events) == ["B@example.com", "a@example.com"]
    assert await store.relay(bus, older_than=0) == 0  # nothing left unfinished
    await bus.close()


async def test_failed_publish_undoes_the_claim(store: QuarantineDB, trace: TraceStore, amqp_url: str) -> None:
    bus = Bus(amqp_url)  # never connected: publishing fails
    held, _ = await store.put(envelope(), DATA, reason="hcspam", result="hcspam", detail="", settings=SETTINGS)
    with pytest.raises(RuntimeError):
        await release(store, bus, trace, held.id)
    again = await store.get(held.id)
    assert again is not None and again.released == {}


async def test_relay_publishes_an_unfinished_release_once(store: QuarantineDB, trace: TraceStore,
                                                          amqp_url: str, migrated: str) -> None:
    """A claim never marked (its process died) is published by the relay once it is old enough, once."""
    bus = Bus(amqp_url)
    await bus.connect()
    routing = await bus.declare_stage("routing")
    held, _ = await store.put(envelope(), DATA, reason="malware", result="malware", detail="", settings=SETTINGS)
    assert await store.claim(held.id, ["a@example.com"], "admin op") == ["a@example.com"]
    assert await store.claim(held.id, ["A@example.com", "B@example.com"]) == ["B@example.com"]
    assert await store.relay(bus, trace, older_than=60) == 0  # too recent: its process may still mark it
    assert await asyncio.gather(store.relay(bus, trace, older_than=0), store.relay(bus, trace, older_than=0)) \
        in ([2, 0], [0, 2])
    assert await store.relay(bus, trace, older_than=0) == 0
    (copy,) = await drain(bus, routing, 2, timeout=3)
    assert sorted(copy[0].rcpt_to) == ["B@example.com", "a@example.com"] and copy[1] == DATA
    assert copy[0].id == held.id and copy[0].released_from == held.id
    assert _rows(migrated, "SELECT DISTINCT state FROM quarantine_recipients WHERE qid = %s", held.id) == \
        [("released",)]
    (event,) = [e for e in await trace.events(held.id) if e.event == "RELEASE"]
    assert "relayed" in event.detail
    await bus.close()


async def test_database_down_is_unavailable(migrated: str) -> None:
    store = QuarantineDB("postgresql://postgres@127.0.0.1:1/none", timeout=1)
    with pytest.raises(QuarantineUnavailable):
        await store.put(envelope(), DATA, reason="spam", result="spam", detail="", settings=SETTINGS)
    with pytest.raises(OSError):
        await store.totals()
    await store.close()
