"""The trace's status per recipient on PostgreSQL: a held message stays QUARANTINE after the digest's AGENTINFO,
a message delivered to one recipient and deferred for another is both (and only DELIVER to the end user who is the
first), the status filter finds them so, and a timeline lists each recipient's outcome and decodes the antispam
verdict (SCL, BCL, SFV, CAT, rules) with a link to the held message; an end user's timeline has no event data and
no rule hit in test mode."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.quarantine import ConsoleQuarantine
from mailmoat_console.rights import Role
from mailmoat_platform.models import Envelope, TraceEvent, new_message_id
from mailmoat_policy.quarantine import Quarantine
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from mailmoat_records.tracedb import TraceRecord, TraceWriter
from tests.integration import test_console as base
from tests.integration.test_console import account, api_sign_in, http

pytestmark = pytest.mark.integration
migrated, redis_client, console = base.migrated, base.redis_client, base.console  # the fixtures

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
        ("RULE", "routing", [alice, bob], {"rule": "trial-rule", "mode": "test", "actions": ["quarantine"]}),
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
                                    "score": 1000.0, "rules": ["GTUBE"], "dmarc": "fail",
                                    "author": "Pills <p@spam.test>"}
        assert timeline["quarantine_id"] == "placeholder" and timeline["message"]["last_event"] == "QUARANTINE"
        assert [e["event"] for e in timeline["events"]] == ["RECEIVE", "SPAM", "RULE", "QUARANTINE", "AGENTINFO"]
        page = (await client.get(f"/trace/{held}")).text
        assert "HSPM" in page and "GTUBE" in page and 'href="/quarantine/placeholder"' in page
        assert "Spam filter verdict" in page and "Recipients" in page and "<summary>data</summary>" in page
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
        # the events' data (hosts, addresses, policy details) are the administrators'; the verdict is decoded
        timeline = (await client.get(f"/api/trace/{held}")).json()
        assert [e["event"] for e in timeline["events"]] == ["RECEIVE", "SPAM", "QUARANTINE", "AGENTINFO"]  # no trial
        assert all(e["data"] == {} for e in timeline["events"])
        assert timeline["spam"]["cat"] == "HSPM" and timeline["quarantine_id"] == "placeholder"
        page = (await client.get(f"/trace/{held}")).text
        assert "HSPM" in page and "<summary>data</summary>" not in page and "GTUBE" in page


HELD = (b"Authentication-Results: gw.example.net;\r\n spf=fail (sender.test: 192.0.2.9 not allowed)"
        b" smtp.mailfrom=sender.test;\r\n dkim=pass (signature verified) header.d=sender.test;\r\n dmarc=fail"
        b" header.from=sender.test\r\nAuthentication-Results: upstream.test; spf=pass\r\n"
        b"From: p@spam.test\r\nSubject: held\r\n\r\nbody\r\n")


async def test_a_held_messages_timeline_decodes_its_authentication_results(migrated: str, redis_client):
    """The gateway's own Authentication-Results (the first field) of the held copy, per method, in the API and
    the page; another end user still gets 404."""
    async with db.open_pool(migrated, max_size=3, name="console-test") as pool:
        store = QuarantineDB(migrated, pool=pool)
        console = Console.build(ConsoleConfig(secure_cookies=False), pool, redis_client,
                                quarantine=ConsoleQuarantine(pool, store))
        domain = f"{uuid.uuid4().hex[:8]}.example"
        alice = f"alice@{domain}"
        mid = await write(console, "p@spam.test", [alice], [("SPAM", "antispam", [alice], SPAM)])
        await store.put(Envelope(id=mid, mail_from="p@spam.test", rcpt_to=[alice], client_ip="192.0.2.9"), HELD,
                        reason="hcspam", result=None, detail="SCL 9", settings=Quarantine(), now=time.time())
        await write_quarantine_event(console, mid, alice)
        admin, other = await account(console, Role.admin), await account(console, Role.user, [f"bob@{domain}"])
        async with http(console) as client:
            await api_sign_in(client, admin)
            timeline = (await client.get(f"/api/trace/{mid}")).json()
            assert timeline["quarantine_id"] == mid
            assert [(a["method"], a["result"], a["properties"]) for a in timeline["authentication_results"]] == [
                ("spf", "fail", "smtp.mailfrom=sender.test"), ("dkim", "pass", "header.d=sender.test"),
                ("dmarc", "fail", "header.from=sender.test")]
            assert timeline["authentication_results"][0]["comment"] == "sender.test: 192.0.2.9 not allowed"
            page = (await client.get(f"/trace/{mid}")).text
            assert "Authentication results" in page and "gw.example.net" in page and "upstream.test" not in page
        async with http(console) as client:
            await api_sign_in(client, other)
            assert (await client.get(f"/api/trace/{mid}")).status_code == 404


async def write_quarantine_event(console: Console, mid: str, recipient: str) -> None:
    event = TraceEvent(event="QUARANTINE", message_id=mid, service="routing", at=datetime.now(UTC),
                       recipients=[recipient], detail="quarantine: hcspam", data={"quarantine_id": mid})
    await TraceWriter(console.search.reader.pool).write([TraceRecord(events=[event])])
