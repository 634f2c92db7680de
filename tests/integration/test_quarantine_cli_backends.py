"""``mailmoat quarantine list|show|release|delete`` prints the same with the quarantine in Redis and in
PostgreSQL (``MAILMOAT_RECORDS``): the same messages held in both, every command's output compared."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import psycopg
import pytest

from mailmoat_cli.main import main
from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import Quarantine
from mailmoat_records import db
from mailmoat_records.quarantine import KEY, QuarantineStore
from mailmoat_records.quarantinedb import QuarantineDB

pytestmark = pytest.mark.integration

JAN = datetime(2026, 1, 10, 12, tzinfo=UTC)
FEB = datetime(2026, 2, 10, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


def seed(redis_url: str, database_url: str) -> list[str]:
    """The same two messages held in Redis and in PostgreSQL, at fixed dates."""
    async def run() -> list[str]:
        client = redisclient.from_url(redis_url)
        stores = (QuarantineStore(client), QuarantineDB(database_url))
        ids, now = [], time.time()
        for when, sender, rcpts, reason in ((JAN, "a@out.test", ["x@example.com"], "spam"),
                                            (FEB, "b@out.test", ["y@example.com", "z@example.com"], "malware")):
            env = Envelope(mail_from=sender, rcpt_to=rcpts, itinerary=["routing", "egress"], client_ip="192.0.2.1")
            env.add_verdict(Verdict(stage="antispam", result=reason, detail={"scl": 6}))
            data = f"From: Boss <{sender}>\r\nSubject: {reason} one\r\n\r\nbody\r\n".encode()
            for store in stores:
                await store.put(env, data, reason=reason, result=reason, detail="d", settings=Quarantine(), now=now)
            raw = await client.hget(KEY + env.id, "meta")
            meta = json.loads(raw)
            await client.hset(KEY + env.id, "meta", json.dumps({**meta, "created": when.timestamp()}))
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("UPDATE quarantine SET received_at = %s WHERE qid = %s", (when, env.id))
            ids.append(env.id)
        await stores[1].close()
        await client.aclose()
        return ids

    return asyncio.run(run())


def outputs(monkeypatch, capsys, records: str, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    monkeypatch.setenv("MAILMOAT_RECORDS", records)
    out = []
    for command in commands:
        code = main(["quarantine", *command])
        captured = capsys.readouterr()
        out.append((code, captured.out, captured.err))
    return out


def test_same_output_on_both_backends(redis_url: str, migrated: str, amqp_url: str, monkeypatch, capsys) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine CASCADE")
    monkeypatch.setenv("MAILMOAT_REDIS_URL", redis_url)
    monkeypatch.setenv("MAILMOAT_DATABASE_URL", migrated)
    monkeypatch.setenv("MAILMOAT_AMQP_URL", amqp_url)
    monkeypatch.setenv("USER", "op")
    jan, feb = seed(redis_url, migrated)
    commands = [
        ["list"], ["list", "--since", "2026-02-01"], ["list", "--until", "2026-01-31T23:59"],
        ["list", "--recipient", "Y@example.com"], ["list", "--sender", "a@out.test", "--reason", "spam"],
        ["list", "--reason", "bulk"], ["list", "--sender", "B@OUT.test"],
        ["show", feb], ["show", "NOPE"],
        ["release", feb, "--recipient", "z@example.com"], ["release", feb], ["release", jan, "--as", "user"],
        ["list"], ["show", feb],
        ["release", "NOPE"], ["release", feb, "--recipient", "q@example.com"],
        ["delete", jan], ["delete", jan], ["list"],
    ]
    in_redis = outputs(monkeypatch, capsys, "redis", commands)
    in_postgresql = outputs(monkeypatch, capsys, "postgresql", commands)
    for command, expected, got in zip(commands, in_redis, in_postgresql, strict=True):
        assert got == expected, command
    # what was compared is what a user expects
    assert [line.split()[0] for line in in_redis[0][1].splitlines()] == [jan, feb]
    assert in_redis[9][1] == f"{feb}: released to z@example.com\n"
    assert in_redis[10][1] == f"{feb}: released to y@example.com\n{feb}: already released to z@example.com\n"
    assert "partly released" not in in_redis[12][1] and f"{feb}  2026-02-10T12:00:00+00:00  malware" in in_redis[12][1]
    assert "released:    z@example.com, y@example.com" in in_redis[13][1]
    assert [code for code, _, _ in in_redis[14:18]] == [1, 1, 0, 1]
