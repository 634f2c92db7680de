"""The message trace in the real PostgreSQL: migrations, batch writes, paged look-ups, retention."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from mailmoat_cli import db as dbcli
from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_records import db
from mailmoat_records.tracedb import Cursor, TraceReader, TraceRecord, TraceWriter

pytestmark = pytest.mark.integration

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TABLES = {"trace_events", "trace_messages", "trace_keys"}


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[AsyncConnectionPool]:
    async with db.open_pool(migrated, max_size=2) as opened:
        yield opened


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """Another empty database on the same server, dropped afterwards."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") + "_scratch"
    server = parts._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield parts._replace(path=f"/{name}").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'p'",
                            (list(TABLES),)).fetchall()
    return {r[0] for r in rows}


def _revision(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def queue_id(at: datetime) -> str:
    """A gateway queue id as ingress would have made it at ``at`` (``new_message_id``'s layout)."""
    value = (int(at.timestamp() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(CROCKFORD[(value >> (5 * n)) & 31] for n in reversed(range(26)))


def _message(at: datetime, *, sender: str, rcpts: list[str], ip: str = "192.0.2.7", events: int = 3,
             header: str | None = None) -> tuple[str, list[TraceRecord]]:
    """A message as the stages trace it: ingress's RECEIVE record with the look-up values, then later events."""
    mid = queue_id(at)
    receive = TraceEvent(event="RECEIVE", message_id=mid, service="ingress", at=at, recipients=rcpts,
                         detail=f"from {ip} size 1234", data={"helo": "mx.example.net", "tls": True})
    records = [TraceRecord(events=[receive], sender=sender, recipients=rcpts, client_ip=ip,
                           message_id_header=header or f"<{mid}@example.net>")]
    later = [TraceEvent(event=name, message_id=mid, service="routing", at=at + timedelta(milliseconds=10 * (n + 1)),
                        recipients=rcpts, detail=f"step {n}") for n, name in
             enumerate(["ROUTE", "SCAN", "DELIVER", "AGENTINFO"][: events - 1])]
    if later:
        records.append(TraceRecord(events=later))
    return mid, records


def test_upgrade_from_empty_is_idempotent_and_reversible(scratch_url: str) -> None:
    assert _tables(scratch_url) == set()
    db.upgrade(scratch_url)
    assert _tables(scratch_url) == TABLES
    assert _revision(scratch_url) == db.head_revision()
    db.upgrade(scratch_url)  # at head already: nothing to do, no error
    assert _revision(scratch_url) == db.head_revision()
    db.downgrade(scratch_url, "base")
    assert _tables(scratch_url) == set()
    db.upgrade(scratch_url)
    assert _tables(scratch_url) == TABLES


def test_db_upgrade_command_migrates_and_creates_partitions_ahead(scratch_url: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert dbcli.main(["upgrade", "--url", scratch_url, "--ahead-days", "2"]) == 0
    assert dbcli.main(["upgrade", "--url", scratch_url, "--ahead-days", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"records database at revision {db.head_revision()}, 9 partitions created"
    assert out[1] == f"records database at revision {db.head_revision()}"
    today = db.utc_today()
    with psycopg.connect(scratch_url) as conn:
        rows = conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'trace_%%_p%%' AND relkind = 'r'")
        names = {r[0] for r in rows}
    assert names == {db.partition_name(t, today + timedelta(days=n)) for t in TABLES for n in range(3)}


def test_db_maintain_command_drops_partitions_past_retention(scratch_url: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert dbcli.main(["upgrade", "--url", scratch_url, "--ahead-days", "0"]) == 0
    old = db.utc_today() - timedelta(days=40)

    async def make_old() -> None:
        async with await psycopg.AsyncConnection.connect(scratch_url, autocommit=True) as conn:
            await db.ensure_partitions(conn, [old, old + timedelta(days=1)])

    asyncio.run(make_old())
    capsys.readouterr()
    assert dbcli.main(["maintain", "--url", scratch_url, "--retention-days", "39", "--ahead-days", "1"]) == 0
    assert capsys.readouterr().out.startswith("3 partitions created, 3 dropped (older than ")
    with psycopg.connect(scratch_url) as conn:
        rows = conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'trace_events_p%%' AND relkind = 'r'")
        names = {r[0] for r in rows}
    today = db.utc_today()
    assert names == {db.partition_name("trace_events", d) for d in (old + timedelta(days=1), today,
                                                                      today + timedelta(days=1))}
    assert dbcli.main(["maintain", "--url", scratch_url, "--retention-days", "0"]) == 2


def test_db_upgrade_command_creates_a_missing_database(scratch_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(scratch_url, autocommit=True) as conn:  # the scratch database's name, free again
        name = conn.execute("SELECT current_database()").fetchone()[0]
    parts = urlsplit(scratch_url)
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    assert dbcli.main(["upgrade", "--url", scratch_url, "--ahead-days", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "records database created"
    assert _tables(scratch_url) == TABLES


def test_db_upgrade_command_reports_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert dbcli.main(["upgrade", "--url", "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"]) == 1
    assert "mailmoat db upgrade:" in capsys.readouterr().err


async def test_write_then_find_by_every_kind_and_read_events(pool: AsyncConnectionPool) -> None:
    tag = uuid.uuid4().hex[:10]
    now = datetime.now(UTC).replace(microsecond=0)
    mid, records = _message(now, sender=f"Alice.{tag}@Example.org", rcpts=[f"bob.{tag}@example.com"],
                            ip="2001:db8::0:1", header=f"<Abc.{tag}@mail.example.org>")
    records.append(TraceRecord(events=[TraceEvent(event="SPAM", message_id=mid, service="antispam",
                                                  at=now + timedelta(seconds=1), detail="SCL 5")],
                               authors=[f"ceo.{tag}@example.org"]))
    result = await TraceWriter(pool).write(records)
    assert (result.given, result.added, result.expired) == (4, 4, 0)
    reader = TraceReader(pool)
    for needle in (mid, f"<alice.{tag}@example.org>", f"BOB.{tag}@example.com", f"abc.{tag}@mail.example.org",
                   f"ceo.{tag}@example.org"):
        page = await reader.find(needle)
        assert [m.message_id for m in page.messages] == [mid], needle
        assert page.next is None
    found = (await reader.find(f"bob.{tag}@example.com")).messages[0]
    assert found.sender == f"Alice.{tag}@Example.org"
    assert found.recipients == [f"bob.{tag}@example.com"]
    assert found.client_ip == "2001:db8::1"
    assert found.at == now
    assert found.last_event == "SPAM"
    assert (await reader.find("2001:DB8::1", since=now - timedelta(seconds=1))).messages[0].message_id == mid
    assert (await reader.find(f"bob.{tag}@example.com", kinds=["sender"])).messages == []
    events = await reader.events(mid)
    assert [e.event for e in events] == ["RECEIVE", "ROUTE", "SCAN", "SPAM"]
    assert events[0] == records[0].events[0]
    assert (await reader.find(f"nobody.{tag}@example.com")).messages == []
    async with pool.connection() as conn:  # the pool's sessions plan once per statement (db.open_pool)
        assert (await (await conn.execute("SHOW plan_cache_mode")).fetchone())[0] == "force_generic_plan"
    assert (await reader.find(new_message_id())).messages == []


async def test_redelivered_batch_is_not_duplicated(pool: AsyncConnectionPool) -> None:
    tag = uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    batch: list[TraceRecord] = []
    ids = []
    for n in range(20):
        mid, records = _message(now + timedelta(milliseconds=n), sender=f"s{n}.{tag}@example.org",
                                rcpts=[f"r.{tag}@example.com", f"r{n}.{tag}@example.com"], events=4)
        batch += records
        ids.append(mid)
    writer = TraceWriter(pool)
    first = await writer.write(batch)
    assert (first.given, first.added) == (80, 80)
    again = await TraceWriter(pool).write(batch)  # the bus redelivers to another recorder
    assert (again.given, again.added) == (80, 0)
    # A batch overlapping the first: only its new events are added.
    extra = TraceEvent(event="DELIVER", message_id=ids[0], service="egress", at=now + timedelta(seconds=5),
                       detail="250 ok")
    overlap = await writer.write([*batch[:4], TraceRecord(events=[extra])])
    assert (overlap.given, overlap.added) == (9, 1)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM trace_events WHERE message_id = ANY(%s)", (ids,))
        assert (await cur.fetchone())[0] == 81
        cur = await conn.execute("SELECT count(*) FROM trace_messages WHERE message_id = ANY(%s)", (ids,))
        assert (await cur.fetchone())[0] == 20
        cur = await conn.execute("SELECT count(*) FROM trace_keys WHERE message_id = ANY(%s)", (ids,))
        assert (await cur.fetchone())[0] == 20 * 5  # sender, 2 rcpt, msgid, ip
    page = await TraceReader(pool).find(f"r.{tag}@example.com", limit=100)
    assert sorted(m.message_id for m in page.messages) == sorted(ids)
    assert len(await TraceReader(pool).events(ids[0])) == 5


async def test_paging_is_newest_first_without_gaps_or_repeats(pool: AsyncConnectionPool) -> None:
    tag = uuid.uuid4().hex[:10]
    base = datetime.now(UTC) - timedelta(hours=1)
    batch: list[TraceRecord] = []
    ids: list[str] = []
    for n in range(25):
        # Pairs of messages received at the same instant: the cursor's message id breaks the tie.
        mid, records = _message(base + timedelta(seconds=n // 2), sender=f"s.{tag}@example.org",
                                rcpts=[f"r.{tag}@example.com"], events=1)
        batch += records
        ids.append(mid)
    await TraceWriter(pool).write(batch)
    reader = TraceReader(pool)
    seen: list[str] = []
    after: Cursor | None = None
    pages = 0
    while True:
        page = await reader.find(f"r.{tag}@example.com", limit=10, after=after)
        pages += 1
        seen += [m.message_id for m in page.messages]
        if page.next is None:
            break
        after = Cursor.parse(page.next.token)  # as a console would pass it back
        assert pages < 10
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25
    expected = sorted(zip([base + timedelta(seconds=n // 2) for n in range(25)], ids, strict=True), reverse=True)
    assert seen == [mid for _, mid in expected]


async def test_time_range_bounds_the_look_up(pool: AsyncConnectionPool) -> None:
    tag = uuid.uuid4().hex[:10]
    now = datetime.now(UTC).replace(microsecond=0)
    days = [now - timedelta(days=d) for d in (0, 3, 10)]
    batch: list[TraceRecord] = []
    ids = []
    for at in days:
        mid, records = _message(at, sender=f"s.{tag}@example.org", rcpts=[f"r.{tag}@example.com"])
        batch += records
        ids.append(mid)
    await TraceWriter(pool).write(batch)
    reader = TraceReader(pool)
    got = await reader.find(f"s.{tag}@example.org", since=now - timedelta(days=5))
    assert [m.message_id for m in got.messages] == ids[:2]
    got = await reader.find(f"s.{tag}@example.org", since=now - timedelta(days=11), until=now - timedelta(days=3))
    assert [m.message_id for m in got.messages] == [ids[2]]
    got = await reader.find(f"s.{tag}@example.org", until=now - timedelta(days=3, seconds=-1))
    assert [m.message_id for m in got.messages] == ids[1:]
    assert (await reader.find(ids[2], since=now - timedelta(days=5))).messages == []
    assert [m.message_id for m in (await reader.find(ids[2])).messages] == [ids[2]]


async def test_retention_drops_whole_old_partitions(pool: AsyncConnectionPool) -> None:
    # Days long past, so the partitions of the other tests are never touched.
    today = date(2020, 3, 10)
    tag = uuid.uuid4().hex[:10]
    writer = TraceWriter(pool, retention_days=5)
    ids = {}
    for offset in range(7):  # 2020-03-03 .. 2020-03-09
        at = datetime(2020, 3, 3, 12, tzinfo=UTC) + timedelta(days=offset)
        mid, records = _message(at, sender=f"s.{tag}@example.org", rcpts=[f"r.{tag}@example.com"])
        ids[at.date()] = mid
        result = await writer.write(records, today=today)
        assert result.expired == (3 if at.date() < date(2020, 3, 5) else 0)
    reader = TraceReader(pool)
    kept = [m.message_id for m in (await reader.find(f"r.{tag}@example.com")).messages]
    assert kept == [ids[date(2020, 3, d)] for d in (9, 8, 7, 6, 5)]
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        created, dropped = await db.maintain(conn, retention_days=3, ahead_days=1, today=today)
        assert set(created) == {db.partition_name(t, d) for t in TABLES for d in (today, date(2020, 3, 11))}
        assert set(dropped) == {db.partition_name(t, date(2020, 3, d)) for t in TABLES for d in (5, 6)}
        assert date(2020, 3, 6) not in await db.partitions(conn, "trace_events")
        assert date(2020, 3, 7) in await db.partitions(conn, "trace_keys")
        assert await db.maintain(conn, retention_days=3, ahead_days=1, today=today) == ([], [])
    kept = [m.message_id for m in (await reader.find(f"r.{tag}@example.com")).messages]
    assert kept == [ids[date(2020, 3, d)] for d in (9, 8, 7)]
    assert await reader.events(ids[date(2020, 3, 6)]) == []
    # A writer that knew the dropped days creates them again when an event of theirs is still in retention.
    late = TraceEvent(event="DELIVER", message_id=ids[date(2020, 3, 7)], service="egress",
                      at=datetime(2020, 3, 6, 23, tzinfo=UTC))
    assert (await writer.write([late], today=today)).added == 1


async def test_awkward_text_is_stored_not_refused(pool: AsyncConnectionPool) -> None:
    tag = uuid.uuid4().hex[:10]
    mid = new_message_id()
    event = TraceEvent(event="REJECT", message_id=mid, service="ingress", recipients=[f"r\udcff.{tag}@example.com"],
                       detail="bad\x00byte", data={"helo": "x\x00y", "nested": [{"k": "\ud800"}]})
    record = TraceRecord(events=[event], sender=f"s\x00.{tag}@example.org", recipients=event.recipients,
                         client_ip="not an ip")
    assert (await TraceWriter(pool).write([record])).added == 1
    got = await TraceReader(pool).events(mid)
    assert got[0].detail == "bad\ufffdbyte"
    assert got[0].recipients == [f"r\\xff.{tag}@example.com"]
    assert got[0].data["helo"] == "x\ufffdy"
    found = await TraceReader(pool).find(f"r\\xff.{tag}@example.com")
    assert [m.message_id for m in found.messages] == [mid]
    assert found.messages[0].client_ip is None


async def test_two_writers_with_the_same_batch_on_a_new_day_store_it_once(migrated: str) -> None:
    # A redelivery may reach a second recorder while the first still writes; the day has no partition yet.
    tag = uuid.uuid4().hex[:10]
    day = datetime(2031, 1, 1, 8, tzinfo=UTC) + timedelta(days=int(tag[:4], 16) % 300)
    batch: list[TraceRecord] = []
    for n in range(50):
        batch += _message(day + timedelta(seconds=n), sender=f"s.{tag}@example.org",
                          rcpts=[f"r.{tag}@example.com"], events=4)[1]
    async with db.open_pool(migrated, max_size=2) as pool:
        results = await asyncio.gather(TraceWriter(pool).write(batch), TraceWriter(pool).write(batch))
        assert sorted(r.added for r in results) == [0, 200]
        page = await TraceReader(pool).find(f"r.{tag}@example.com", since=day, limit=100)
        assert len(page.messages) == 50


def _indexed_partitions(url: str) -> set[str]:
    """The day partitions of ``trace_messages`` whose index is a part of ``trace_messages_received``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT t.relname FROM pg_inherits i JOIN pg_class x ON x.oid = i.inhrelid "
            "JOIN pg_index ix ON ix.indexrelid = x.oid JOIN pg_class t ON t.oid = ix.indrelid "
            "WHERE i.inhparent = to_regclass('trace_messages_received')").fetchall()
    return {r[0] for r in rows}


def test_the_received_index_is_made_on_every_partition_and_undone(scratch_url: str) -> None:
    assert dbcli.main(["upgrade", "--url", scratch_url, "--ahead-days", "1"]) == 0
    today = db.utc_today()
    expected = {db.partition_name("trace_messages", today + timedelta(days=n)) for n in range(2)}
    assert _indexed_partitions(scratch_url) == expected
    db.downgrade(scratch_url, "0005_sender_blocks")
    assert _indexed_partitions(scratch_url) == set()
    with psycopg.connect(scratch_url) as conn:
        assert conn.execute("SELECT to_regclass('trace_messages_received')").fetchone()[0] is None
    db.upgrade(scratch_url)  # partitions made before the index get it; one made after it too
    later = today + timedelta(days=9)

    async def make_later() -> None:
        async with await psycopg.AsyncConnection.connect(scratch_url, autocommit=True) as conn:
            await db.ensure_partitions(conn, [later])

    asyncio.run(make_later())
    assert _indexed_partitions(scratch_url) == expected | {db.partition_name("trace_messages", later)}
    with psycopg.connect(scratch_url) as conn:
        definition = conn.execute("SELECT pg_get_indexdef(to_regclass('trace_messages_received'))").fetchone()[0]
    assert definition.endswith("(received_at DESC, message_id DESC)")


def _far_day(tag: str) -> datetime:
    """A day of this test's own, years ahead (no other test's messages in it)."""
    return datetime(2060, 1, 1, tzinfo=UTC) + timedelta(days=int(tag[:6], 16) % 3000)


async def test_received_lists_a_range_newest_first_in_pages(pool: AsyncConnectionPool) -> None:
    tag = uuid.uuid4().hex[:10]
    day = _far_day(tag)
    batch: list[TraceRecord] = []
    ids: dict[str, datetime] = {}
    for n in range(23):  # over three days; pairs received at the same instant (the cursor's id breaks the tie)
        at = day + timedelta(hours=3 * (n // 2))
        mid, records = _message(at, sender=f"s{n}.{tag}@example.org", rcpts=[f"r{n}.{tag}@example.com"])
        batch += records
        ids[mid] = at
    # Events of a message without its first record (no trace_messages row) are not a message received.
    orphan = TraceEvent(event="DELIVER", message_id=queue_id(day), service="egress", at=day + timedelta(hours=1))
    before = _message(day - timedelta(microseconds=1), sender=f"x.{tag}@example.org", rcpts=["x@example.com"])
    after = _message(day + timedelta(days=3), sender=f"y.{tag}@example.org", rcpts=["y@example.com"])
    await TraceWriter(pool).write([*batch, TraceRecord(events=[orphan]), *before[1], *after[1]])
    reader = TraceReader(pool)
    seen: list[str] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        page = await reader.received(since=day, until=day + timedelta(days=3), limit=10, after=cursor)
        pages += 1
        seen += [m.message_id for m in page.messages]
        if page.next is None:
            break
        cursor = Cursor.parse(page.next.token)  # as the console passes it back
        assert pages < 10
    assert pages == 3
    assert seen == [mid for mid, _ in sorted(ids.items(), key=lambda item: (item[1], item[0]), reverse=True)]
    first = (await reader.received(since=day, until=day + timedelta(days=3), limit=1)).messages[0]
    newest = seen[0]
    assert (first.message_id, first.at, first.last_event) == (newest, ids[newest], "SCAN")
    assert first.sender.endswith(f".{tag}@example.org") and first.client_ip == "192.0.2.7"
    # [since, until): the bounds, and an open end
    assert [m.message_id for m in (await reader.received(since=day - timedelta(microseconds=1), until=day,
                                                         limit=5)).messages] == [before[0]]
    open_end = await reader.received(since=day + timedelta(days=1), limit=50)
    ours = {after[0], *seen}  # (another test's messages may be later still)
    assert [m.message_id for m in open_end.messages if m.message_id in ours] == [after[0], *seen[:7]]
    with pytest.raises(ValueError):
        await reader.received(since=day, limit=0)
