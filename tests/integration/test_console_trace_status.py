"""The trace's status per recipient on PostgreSQL: a held message stays QUARANTINE after the digest's AGENTINFO,
a message delivered to one recipient and deferred for another is both (and only DELIVER to the end user who is the
first), the status filter finds them so, and a timeline lists each recipient's outcome and decodes the antispam
verdict (SCL, BCL, SFV, CAT, rules) with a link to the held message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_console.core import Console
from mailmoat_console.rights import Role
from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_records.tracedb import TraceRecord, TraceWriter
from tests.integration.test_console import (  # noqa: F401 (fixtures)
    account,
    api_sign_in,
    console,
    http,
    migrated,
    redis_client,
)

pytestmark = pytest.mark.integration

SPAM = {"bcl": 0, "scl": 9, "sfv": "SPM", "bulk": [], "dmarc": {"result": "fail", "policy": "none"}, "rules": ["GTUBE"],
        "score": 1000.0, "author": {"from": "Pills <p@spam.test>"}, "result": "hcspam", "category": "hcspam"}


async def write(console: Console, sender: str, rcpts: list[str], later: list[tuple[str, str, list[str], dict]]) -> str:
    """A received message and then ``later`` events (event, service, recipients, data), a second apart."""
    mid = new_message_id()
    at = datetime.now(UTC) - timedelta(minutes=1)
    receive = TraceEvent(event="RECEIVE", message_id=mid, service="ingress", at=at, recipients=rcpts, detail="from x")
    events = [TraceEvent(event=event, message_id=mid, service=service, at=at + timedelta(seconds=n + 1),
                         recipients=who, detail=f"{event.lower()} {' '.join(who)}", data=data)
              for n, (event, service, who, data) in enumerate(later)]
    await TraceWriter(console.search.reader.pool).write([
        TraceRecord(events=[receive], sender=sender, recipients=rcpts, message_id_header=f"<{mid.lower()}@t>",
                    client_ip="198.51.100.7"),
        TraceRecord(events=events)])
    return mid


async def test_status_per_recipient_in_search_and_timeline(console: Console):
    domain = f"{uuid.uuid4().hex[:8]}.example"
    alice, bob, dave = (f"{n}@{domain}" for n in ("alice", "bob", "dave"))
    held = await write(console, "p@spam.test", [alice, bob], [
        ("SPAM", "antispam", [alice, bob], SPAM),
        ("QUARANTINE", "routing", [alice, bob], {"quarantine_id": "placeholder"}),
        ("AGENTINFO", "console", [alice], {"digest_id": "D1"})])
    mixed = await write(console, "ann@news.test", [alice, dave], [
        ("ROUTE", "routing", [alice, dave], {}),
        ("DELIVER", "egress", [alice], {}), ("DEFER", "egress", [dave], {"attempts": 1}),
        ("AGENTINFO", "egress", [], {})])
    admin, user = await account(console, Role.admin), await account(console, Role.user, [alice])

    async with http(console) as client:
        await api_sign_in(client, admin)
        listed = (await client.get("/api/trace", params={"recipient": alice})).json()["messages"]
        status = {m["message_id"]: (m["last_event"], m["statuses"]) for m in listed}
        assert status[held] == ("QUARANTINE", ["QUARANTINE"])
        assert status[mixed] == ("DEFER", ["DEFER", "DELIVER"])
        for wanted, ids in (("QUARANTINE", [held]), ("DEFER", [mixed]), ("DELIVER", [mixed]), ("AGENTINFO", [])):
            found = (await client.get("/api/trace", params={"recipient": alice, "status": wanted})).json()["messages"]
            assert [m["message_id"] for m in found] == ids, wanted

        timeline = (await client.get(f"/api/trace/{mixed}")).json()
        assert [(d["recipient"], d["status"]) for d in timeline["deliveries"]] == [(alice, "DELIVER"), (dave, "DEFER")]
        assert timeline["message"]["statuses"] == ["DEFER", "DELIVER"] and timeline["spam"] is None
        timeline = (await client.get(f"/api/trace/{held}")).json()
        assert timeline["spam"] == {"result": "hcspam", "scl": 9, "bcl": 0, "sfv": "SPM", "cat": "HSPM",
                                    "score": 1000.0, "rules": ["GTUBE"], "dmarc": "fail", "author": "Pills <p@spam.test>"}
        assert timeline["quarantine_id"] == "placeholder" and timeline["message"]["last_event"] == "QUARANTINE"
        page = (await client.get(f"/trace/{held}")).text
        assert "HSPM" in page and "GTUBE" in page and 'href="/quarantine/placeholder"' in page
        assert "Spam filter verdict" in page and "Recipients" in page
        listing = (await client.get("/trace", params={"recipient": alice})).text
        assert "status-agentinfo" not in listing and "status-quarantine" in listing

    async with http(console) as client:  # the end user: their own recipient's status only
        await api_sign_in(client, user)
        listed = (await client.get("/api/trace", params={"recipient": alice})).json()["messages"]
        assert {m["message_id"]: m["statuses"] for m in listed}[mixed] == ["DELIVER"]
        assert (await client.get("/api/trace", params={"status": "DEFER"})).json()["messages"] == []
        timeline = (await client.get(f"/api/trace/{mixed}")).json()
        assert [(d["recipient"], d["status"]) for d in timeline["deliveries"]] == [(alice, "DELIVER")]
        assert timeline["message"]["statuses"] == ["DELIVER"]
        assert "DEFER" not in (await client.get(f"/trace/{mixed}")).text
