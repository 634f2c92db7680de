"""Block sender on the real PostgreSQL: the console's API blocks a held message's sender (CSRF-checked, admins
only, audited), the antispam stage's cached copy reads it and blocks the sender's next message as the policy's
blocked senders do; a removal and an expiry reach the antispam stage once its copy is older than the TTL."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from mailmoat_antispam.check import Checker
from mailmoat_console import blockpages
from mailmoat_console.app import create_app
from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.quarantine import ConsoleQuarantine
from mailmoat_console.rights import Role
from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from mailmoat_records.senderblocks import CachedBlockList, SenderBlocks
from tests.integration.test_console import account, api_sign_in
from tests.integration.test_quarantine_store import SETTINGS
from tests.support.infra import REDIS_TEST_URL

pytestmark = pytest.mark.integration

MESSAGE = (b"From: Spammer <offers@spam-sender.test>\r\nTo: a@example.com\r\nSubject: offer\r\n"
           b"Message-ID: <o1@spam-sender.test>\r\n\r\nBuy now.\r\n")


@pytest.fixture
async def console(database_url: str) -> AsyncIterator[Console]:
    db.upgrade(database_url)
    redis = redisclient.from_url(REDIS_TEST_URL)
    async with db.open_pool(database_url, max_size=3, name="blocks-test") as pool:
        async with pool.connection() as conn:
            await conn.execute("DELETE FROM sender_blocks")
            await conn.execute("DELETE FROM console_audit WHERE action LIKE 'sender-block.%'")
        yield Console.build(ConsoleConfig(secure_cookies=False), pool, redis,
                            quarantine=ConsoleQuarantine(pool, QuarantineDB(database_url, pool=pool)))
    await redis.aclose()


def client(console: Console) -> httpx.AsyncClient:
    """The console's app with the blocked senders installed, as ``service.serve`` does."""
    app = create_app(console)
    blockpages.install(app, SenderBlocks(console.audit.pool))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.10", 40000)),
                             base_url="http://testserver")


async def held(console: Console) -> str:
    qid = "SB" + uuid.uuid4().hex[:10].upper()
    env = Envelope(id=qid, mail_from="bounces@mail.spam-sender.test", rcpt_to=["a@example.com"],
                   itinerary=["routing", "egress"])
    assert console.quarantine is not None
    await console.quarantine.store.put(env, MESSAGE, reason="spam", result="spam", detail="SCL 6", settings=SETTINGS)
    return qid


async def verdict(checker: Checker, mail_from: str = "offers@spam-sender.test"):
    env = Envelope(id="N1", client_ip="192.0.2.7", helo="mx.spam-sender.test", mail_from=mail_from,
                   rcpt_to=["a@example.com"])
    return (await checker.check(env, MESSAGE, parse_policy("{}"), authenticate_sender=False)).verdict


async def audit_actions(console: Console) -> list[tuple[str, str, str]]:
    async with console.audit.pool.connection() as conn:
        cur = await conn.execute("SELECT action, target, outcome FROM console_audit WHERE action LIKE 'sender-block.%' "
                                 "ORDER BY id")
        return [tuple(r) for r in await cur.fetchall()]


async def test_console_blocks_antispam_reads_removal_and_expiry_after_the_ttl(console: Console,
                                                                               database_url: str) -> None:
    qid = await held(console)
    admin, helpdesk = await account(console, Role.admin), await account(console, Role.helpdesk)
    now = [1000.0]
    cache = CachedBlockList(database_url, ttl=30, clock=lambda: now[0])
    checker = Checker(blocks=cache)
    try:
        assert (await verdict(checker)).result == "clean"  # read: nothing blocked yet
        async with client(console) as web:
            csrf = await api_sign_in(web, helpdesk)
            assert (await web.get("/api/sender-blocks")).json() == {"entries": [], "may_change": False}
            refused = await web.post(f"/api/quarantine/{qid}/block-sender", json={}, headers={"X-CSRF-Token": csrf})
            assert refused.status_code == 403
        async with client(console) as web:
            csrf = await api_sign_in(web, admin)
            no_token = await web.post(f"/api/quarantine/{qid}/block-sender", json={})
            assert no_token.status_code == 403 and "CSRF" in no_token.text
            other = await web.post(f"/api/quarantine/{qid}/block-sender", json={"address": "x@elsewhere.test"},
                                   headers={"X-CSRF-Token": csrf})
            assert other.status_code == 400
            answer = await web.post(f"/api/quarantine/{qid}/block-sender", json={"kind": "domain",
                                    "address": "offers@spam-sender.test"}, headers={"X-CSRF-Token": csrf})
            assert answer.status_code == 201, answer.text
            entry = answer.json()
            assert entry["kind"] == "domain" and entry["value"] == "spam-sender.test" and entry["qid"] == qid
            days = (time.mktime(time.strptime(entry["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
                    - time.mktime(time.strptime(entry["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))) / 86400
            assert round(days) == 30  # EOP's default

            assert (await verdict(checker)).result == "clean"  # the antispam copy is fresh for 30 s
            now[0] += 30
            blocked = await verdict(checker)
            assert blocked.result == "hcspam" and blocked.detail["sfv"] == "SKB" and blocked.detail["scl"] == 9
            assert (await verdict(checker, "news@eu.spam-sender.test")).detail["sfv"] == "SKB"  # subdomain

            listed = (await web.get("/api/sender-blocks")).json()["entries"]
            assert [e["value"] for e in listed] == ["spam-sender.test"]
            assert (await web.delete(f"/api/sender-blocks/{entry['id']}")).status_code == 403  # no token
            assert (await web.delete(f"/api/sender-blocks/{entry['id']}",
                                     headers={"X-CSRF-Token": csrf})).status_code == 204
            assert (await web.delete(f"/api/sender-blocks/{entry['id']}",
                                     headers={"X-CSRF-Token": csrf})).status_code == 404
            assert (await verdict(checker)).detail["sfv"] == "SKB"  # until the copy is read again
            now[0] += 30
            assert (await verdict(checker)).result == "clean"

            again = await web.post("/api/sender-blocks", json={"value": "Offers@Spam-Sender.test", "days": 1},
                                   headers={"X-CSRF-Token": csrf})
            assert again.status_code == 201 and again.json()["value"] == "offers@spam-sender.test"
            bad = await web.post("/api/sender-blocks", json={"value": "not an address"}, headers={"X-CSRF-Token": csrf})
            assert bad.status_code == 400
        now[0] += 30
        assert (await verdict(checker)).detail["sfv"] == "SKB"
        copy = await cache.current()
        assert copy.at(time.time() + 2 * 86400) == (frozenset(), [])  # a one-day entry ends even in the copy
        async with console.audit.pool.connection() as conn:
            await conn.execute("UPDATE sender_blocks SET expires_at = now() - interval '1 second'")
        now[0] += 30
        assert (await verdict(checker)).result == "clean"  # expired: not read
        assert await SenderBlocks(console.audit.pool).entries() == []
    finally:
        await cache.close()
    assert await audit_actions(console) == [
        ("sender-block.add", "spam-sender.test", "ok"), ("sender-block.remove", "spam-sender.test", "ok"),
        ("sender-block.remove", str(entry["id"]), "not-found"), ("sender-block.add", "offers@spam-sender.test", "ok"),
        ("sender-block.add", "not an address", "refused")]


async def test_the_antispam_copy_survives_the_database_going_away(console: Console, database_url: str) -> None:
    await SenderBlocks(console.audit.pool).add("sender", "x@spam-sender.test", by="admin root")
    now = [0.0]
    cache = CachedBlockList(database_url, ttl=30, clock=lambda: now[0])
    try:
        assert "x@spam-sender.test" in (await cache.current()).senders
        assert cache._conn is not None
        await cache._conn.close()  # the connection breaks (a restart of PostgreSQL)
        cache._conn = _Broken()
        now[0] += 30
        assert "x@spam-sender.test" in (await cache.current()).senders and cache.problem
        now[0] += 30
        assert "x@spam-sender.test" in (await cache.current()).senders and cache.problem is None  # reconnected
    finally:
        await cache.close()


class _Broken:
    closed = False

    def cursor(self):
        import psycopg

        raise psycopg.OperationalError("the connection is gone")

    async def close(self) -> None:
        return None


async def test_the_pages_block_from_a_held_message_list_and_remove(console: Console) -> None:
    qid = await held(console)
    admin, helpdesk = await account(console, Role.admin), await account(console, Role.helpdesk)
    async with client(console) as web:
        await api_sign_in(web, helpdesk)
        page = await web.get(f"/quarantine/{qid}")
        assert page.status_code == 200 and "block-sender" not in page.text
        assert (await web.get("/sender-blocks")).status_code == 200
    async with client(console) as web:
        csrf = await api_sign_in(web, admin)
        page = await web.get(f"/quarantine/{qid}")
        assert 'value="sender:bounces@mail.spam-sender.test"' in page.text
        assert 'value="domain:spam-sender.test"' in page.text and "Block sender" in page.text
        assert (await web.post(f"/quarantine/{qid}/block-sender", data={"entry": "sender:offers@spam-sender.test"})
                ).status_code == 403  # no CSRF token
        forged = await web.post(f"/quarantine/{qid}/block-sender", data={"entry": "domain:example.com",
                                                                          "csrf_token": csrf})
        assert forged.status_code == 400  # not one of the message's senders
        done = await web.post(f"/quarantine/{qid}/block-sender", data={"entry": "domain:spam-sender.test",
                                                                        "days": "7", "csrf_token": csrf})
        assert done.status_code == 303 and done.headers["location"] == "/sender-blocks?added=spam-sender.test"
        listing = await web.get(done.headers["location"])
        assert "Blocked spam-sender.test" in listing.text and f"/quarantine/{qid}" in listing.text
        (entry,) = await SenderBlocks(console.audit.pool).entries()
        assert round((entry.expires_at - entry.created_at).total_seconds() / 86400) == 7
        removed = await web.post(f"/sender-blocks/{entry.id}/remove", data={"csrf_token": csrf})
        assert removed.status_code == 303 and await SenderBlocks(console.audit.pool).entries() == []
    assert [a for a, *_ in await audit_actions(console)][-2:] == ["sender-block.add", "sender-block.remove"]
