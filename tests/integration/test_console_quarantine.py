"""The console's quarantine listing and release on the real PostgreSQL and RabbitMQ: filters, keyset pages
newest first, an end user's view limited to their own mailboxes, a release published once."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from mailmoat_console.quarantine import ConsoleQuarantine, HeldQuery
from mailmoat_console.rights import Principal, Role
from mailmoat_platform.bus import Bus
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from tests.integration.test_quarantine_store import DATA, SETTINGS, drain, envelope

pytestmark = pytest.mark.integration

ADMIN = Principal(1, "root", Role.admin)
ALICE = Principal(5, "alice", Role.user, frozenset({"a@example.com"}))


class Trace:
    def __init__(self) -> None:
        self.events: list = []

    async def record(self, *events) -> bool:
        self.events += events
        return True


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[QuarantineDB]:
    db.upgrade(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine CASCADE")
    async with db.open_pool(database_url, max_size=2) as pool:
        yield QuarantineDB(database_url, pool=pool)


async def test_listing_filters_pages_and_an_end_users_view(store: QuarantineDB) -> None:
    now = time.time()
    for n in range(5):
        rcpts = ["a@example.com", "b@example.com"] if n % 2 == 0 else ["b@example.com"]
        await store.put(envelope(id=f"CQ{n}", rcpt_to=rcpts, mail_from=f"s{n % 2}@sender.test"), DATA,
                        reason="spam" if n < 3 else "malware", result=None, detail="", settings=SETTINGS,
                        now=now - 100 + n)
    q = ConsoleQuarantine(store.pool, store)
    first = await q.page(HeldQuery(limit=2), ADMIN)
    assert [r.id for r in first.rows] == ["CQ4", "CQ3"] and first.next
    second = await q.page(HeldQuery(limit=2, after=first.next), ADMIN)
    third = await q.page(HeldQuery(limit=2, after=second.next), ADMIN)
    assert [r.id for r in second.rows + third.rows] == ["CQ2", "CQ1", "CQ0"] and third.next is None
    assert [r.id for r in (await q.page(HeldQuery(reason="malware"), ADMIN)).rows] == ["CQ4", "CQ3"]
    assert [r.id for r in (await q.page(HeldQuery(sender="S1@sender.test"), ADMIN)).rows] == ["CQ3", "CQ1"]
    assert [r.id for r in (await q.page(HeldQuery(recipient="a@example.com"), ADMIN)).rows] == ["CQ4", "CQ2", "CQ0"]
    since = datetime.fromtimestamp(now - 98, UTC)
    dated = await q.page(HeldQuery(since=since, until=since + timedelta(seconds=2)), ADMIN)
    assert [r.id for r in dated.rows] == ["CQ3", "CQ2"]
    mine = await q.page(HeldQuery(), ALICE)
    assert [r.id for r in mine.rows] == ["CQ4", "CQ2", "CQ0"]
    assert all(r.recipients == ["a@example.com"] for r in mine.rows)
    assert (await q.page(HeldQuery(recipient="b@example.com"), ALICE)).rows == []


async def test_a_release_from_the_console_is_published_once(store: QuarantineDB, amqp_url: str) -> None:
    await store.put(envelope(id="CR1"), DATA, reason="spam", result=None, detail="", settings=SETTINGS)
    probe = Bus(amqp_url)  # the test's own connection: the console connects the bus it makes itself
    await probe.connect()
    routing = await probe.declare_stage("routing")
    trace = Trace()
    q = ConsoleQuarantine(store.pool, store, bus_factory=lambda: Bus(amqp_url), trace_factory=lambda _: trace)
    try:
        done = await q.release("CR1", ALICE)
        again = await q.release("CR1", ALICE)
        assert done.recipients == ["a@example.com"] and again.already == ["a@example.com"]
        assert [e.event for e in trace.events] == ["RELEASE"]
        row = (await q.page(HeldQuery(), ADMIN)).rows[0]
        assert row.released == ["a@example.com"] and row.state == "partly released"
        published = await drain(probe, routing, 2, timeout=1)
        assert [(e.id, e.rcpt_to) for e, _ in published] == [("CR1", ["a@example.com"])]
    finally:
        await q.close()
        await probe.close()


async def test_not_junk_learns_ham_in_the_antispam_classifier(tmp_path, redis_url: str) -> None:
    """The console's learner writes where the antispam stage reads (its Bayes store, the policy's prefix)."""
    from mailmoat_antispam.bayes import BayesStore
    from mailmoat_console.service import ham_learner
    from mailmoat_platform import redisclient
    from mailmoat_platform.settings import Settings

    policy = tmp_path / "policy.yaml"
    prefix = f"test:console:bayes:{uuid.uuid4().hex[:8]}"
    policy.write_text("accepted_domains: [{domain: example.com, route: r}]\nroutes: {r: {hosts: [127.0.0.1:25]}}\n"
                      f"antispam: {{bayes: {{key_prefix: '{prefix}'}}}}\n")
    client = redisclient.from_url(redis_url)
    try:
        learn = ham_learner(Settings(policy_path=str(policy)), client)
        assert learn is not None
        assert await learn(DATA) is True and await learn(DATA) is False
        assert await BayesStore(client, prefix).counts() == (0, 1)
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_the_listing_shows_each_messages_subject(store: QuarantineDB) -> None:
    """Held messages are told apart by their Subject, as in EOP's quarantine: decoded, on one line; none: empty."""
    now = time.time()
    subjects = {"CS1": b"Subject: =?utf-8?q?Rechnung_f=C3=BCr_Q4?=\r\n\tfolded\r\n",
                "CS2": b"X-No-Subject: 1\r\n", "CS3": b"Subject: plain one\r\n"}
    for n, (qid, head) in enumerate(subjects.items()):
        await store.put(envelope(id=qid), b"From: s@sender.test\r\n" + head + b"\r\nbody\r\n", reason="spam",
                        result=None, detail="", settings=SETTINGS, now=now - 10 + n)
    q = ConsoleQuarantine(store.pool, store)
    rows = (await q.page(HeldQuery(), ADMIN)).rows
    assert [(r.id, r.subject) for r in rows] == [("CS3", "plain one"), ("CS2", ""), ("CS1", "Rechnung für Q4 folded")]
