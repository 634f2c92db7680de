"""``mailmoat quarantine list|show|delete`` against real Redis."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from mailmoat_cli.main import main
from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import Quarantine
from mailmoat_records.quarantine import QuarantineStore

pytestmark = pytest.mark.integration

JAN = datetime(2026, 1, 10, 12, tzinfo=UTC).timestamp()
FEB = datetime(2026, 2, 10, 12, tzinfo=UTC).timestamp()


def seed(redis_url: str) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        client = redisclient.from_url(redis_url)
        store = QuarantineStore(client)
        ids = []
        for when, sender, rcpt, reason in ((JAN, "a@out.test", "x@example.com", "spam"),
                                           (FEB, "b@out.test", "y@example.com", "malware")):
            env = Envelope(mail_from=sender, rcpt_to=[rcpt], itinerary=["routing", "egress"])
            env.add_verdict(Verdict(stage="antispam", result=reason, detail={"scl": 6}))
            data = f"From: {sender}\r\nSubject: {reason} one\r\n\r\nbody\r\n".encode()
            held, _ = await store.put(env, data, reason=reason, result=reason, detail="d", settings=Quarantine())
            key = "mailmoat:quarantine:" + held.id
            meta = json.loads(await client.hget(key, "meta"))
            await client.hset(key, "meta", json.dumps({**meta, "created": when}))  # held at a fixed date
            ids.append(held.id)
        await client.aclose()
        return ids[0], ids[1]

    return asyncio.run(run())


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_list_show_delete(redis_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MAILMOAT_REDIS_URL", redis_url)
    monkeypatch.setenv("MAILMOAT_RECORDS", "redis")  # the quarantine in Redis (test_quarantine_cli_backends: both)
    jan, feb = seed(redis_url)
    assert main(["quarantine", "list"]) == 0
    assert [line.split()[0] for line in lines(capsys)] == [jan, feb]
    assert main(["quarantine", "list", "--since", "2026-02-01"]) == 0
    assert [line.split()[0] for line in lines(capsys)] == [feb]
    assert main(["quarantine", "list", "--until", "2026-01-31T23:59"]) == 0
    assert [line.split()[0] for line in lines(capsys)] == [jan]
    assert main(["quarantine", "list", "--recipient", "Y@example.com"]) == 0
    assert [line.split()[0] for line in lines(capsys)] == [feb]
    assert main(["quarantine", "list", "--sender", "a@out.test", "--reason", "spam"]) == 0
    assert [line.split()[0] for line in lines(capsys)] == [jan]
    assert main(["quarantine", "list", "--reason", "bulk"]) == 0
    assert lines(capsys) == []
    with pytest.raises(SystemExit):
        main(["quarantine", "list", "--since", "yesterday"])
    capsys.readouterr()

    assert main(["quarantine", "show", feb]) == 0
    out = "\n".join(lines(capsys))
    assert "reason:      malware" in out and "sender:      <b@out.test>" in out
    assert "antispam: malware" in out and "  Subject: malware one" in out and '"rcpt_to":["y@example.com"]' in out
    assert main(["quarantine", "show", "NOPE"]) == 1

    assert main(["quarantine", "delete", jan]) == 0
    assert main(["quarantine", "delete", jan]) == 1
    capsys.readouterr()
    assert main(["quarantine", "list"]) == 0
    assert [line.split()[0] for line in lines(capsys)] == [feb]
