"""`mailmoat trace` with MAILMOAT_RECORDS=postgresql: look-ups in PostgreSQL, time ranges, pages, and a word
when trace batches wait for the recorder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_platform.bus import Bus
from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_records import db
from mailmoat_records.tracebus import TracePublisher, bus_sender
from mailmoat_records.tracedb import TraceRecord, TraceWriter
from tests.integration.test_tracedb import queue_id

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


def _trace(database_url: str, amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": database_url,
           "MAILMOAT_AMQP_URL": amqp_url}
    return subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "trace", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_find_by_sender_and_recipient_in_a_range_paged(migrated: str, amqp_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    sender = f"cli-{new_message_id().lower()}@example.net"
    ids = []
    records = []
    for n in range(5):  # one message an hour, the newest an hour ago
        at = now - timedelta(hours=5 - n)
        mid = queue_id(at)
        ids.append(mid)
        records.append(TraceRecord(
            events=[TraceEvent(event="RECEIVE", message_id=mid, service="ingress", at=at,
                               recipients=["Ann@Example.org"], detail=f"from 192.0.2.{n}"),
                    TraceEvent(event="DELIVER", message_id=mid, service="egress", at=at + timedelta(seconds=1),
                               recipients=["ann@example.org"], detail="250 ok")],
            sender=sender, recipients=["Ann@Example.org"], client_ip=f"192.0.2.{n}"))
    async with db.open_pool(migrated, max_size=1) as pool:
        await TraceWriter(pool).write(records)

    found = _trace(migrated, amqp_url, sender.upper())
    assert found.returncode == 0, found.stderr
    heads = [line for line in found.stdout.splitlines() if line.startswith("message ")]
    assert [h.split()[1] for h in heads] == ids[::-1]  # newest first
    assert f"<{sender}> -> Ann@Example.org" in heads[0]
    assert "RECEIVE" in found.stdout and "DELIVER" in found.stdout and "more:" not in found.stdout

    since = (now - timedelta(hours=3, minutes=30)).isoformat()
    until = (now - timedelta(hours=1, minutes=30)).isoformat()
    ranged = _trace(migrated, amqp_url, "ann@example.org", "--since", since, "--until", until, "--limit", "1")
    assert ranged.returncode == 0, ranged.stderr
    first = [line.split()[1] for line in ranged.stdout.splitlines() if line.startswith("message ")]
    assert first == [ids[3]]
    cursor = re.search(r"^more: --after '(.+)'$", ranged.stdout, re.M)
    assert cursor is not None
    nxt = _trace(migrated, amqp_url, "ann@example.org", "--since", since, "--until", until, "--limit", "1",
                 "--after", cursor[1])
    assert [line.split()[1] for line in nxt.stdout.splitlines() if line.startswith("message ")] == [ids[2]]
    assert "more:" not in nxt.stdout  # the range holds two: the second page is the last

    by_id = _trace(migrated, amqp_url, ids[0])
    assert by_id.returncode == 0 and by_id.stdout.splitlines()[0].startswith(f"message {ids[0]}")
    missing = _trace(migrated, amqp_url, "nobody@nowhere.example", "--since", "2h")
    assert missing.returncode == 1 and "no message found" in missing.stdout
    bad = _trace(migrated, amqp_url, "x", "--after", "garbage")
    assert bad.returncode == 2 and "--after" in bad.stderr


async def test_says_when_trace_batches_wait_for_the_recorder(migrated: str, amqp_url: str) -> None:
    mid = new_message_id()
    quiet = _trace(migrated, amqp_url, mid)
    assert "behind" not in quiet.stderr
    bus = Bus(amqp_url)
    await bus.connect()
    try:  # a stage published a record; no recorder runs
        assert await TracePublisher(bus_sender(bus)).record(
            TraceEvent(event="RECEIVE", message_id=mid, service="ingress"), sender="late@example.net")
    finally:
        await bus.close()
    late = _trace(migrated, amqp_url, "late@example.net")
    assert late.returncode == 1  # not written yet
    assert "no recorder is running: behind by 1 trace batch(es)" in late.stderr
    assert "recent events may be missing" in late.stderr


def test_range_options_need_the_postgresql_trace(redis_url: str) -> None:
    env = {**os.environ, "MAILMOAT_REDIS_URL": redis_url, "MAILMOAT_RECORDS": "redis"}
    done = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "trace", "x@example.org", "--since", "1d"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "MAILMOAT_RECORDS=postgresql" in done.stderr
