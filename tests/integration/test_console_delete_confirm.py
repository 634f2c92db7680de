"""Deleting for good from a page takes the "for good" tick (a page has no script to ask "are you sure?"): a held
message (PostgreSQL) and a deferred copy (Redis, RabbitMQ) stay without it and the page says why; with it they go
and the delete is audited. The API's deletes are unchanged."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import psycopg
import pytest

from mailmoat_console.app import create_app
from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.operations import install
from mailmoat_console.quarantine import ConsoleQuarantine
from mailmoat_console.queues import ConsoleQueues
from mailmoat_console.rights import Role
from mailmoat_platform.bus import Bus
from mailmoat_platform.models import Envelope, Route, new_message_id
from mailmoat_policy.quarantine import Quarantine
from mailmoat_records import db
from mailmoat_records.deferred import CONTROL_ARGUMENTS, CONTROL_QUEUE, Control, DeferredStore, deferral_of
from mailmoat_records.quarantinedb import QuarantineDB
from tests.integration import test_console as base
from tests.integration.test_console import account, api_sign_in, http

pytestmark = pytest.mark.integration
migrated, redis_client, console = base.migrated, base.redis_client, base.console  # the fixtures


def held_in(database_url: str, qid: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT 1 FROM quarantine WHERE qid = %s", (qid,)).fetchone() is not None


async def test_a_delete_from_the_page_needs_the_tick(migrated: str, redis_client):
    async with db.open_pool(migrated, max_size=3, name="console-test") as pool:
        store = QuarantineDB(migrated, pool=pool)
        console = Console.build(ConsoleConfig(secure_cookies=False), pool, redis_client,
                                quarantine=ConsoleQuarantine(pool, store))
        qid = new_message_id()
        await store.put(Envelope(id=qid, mail_from="s@sender.test", rcpt_to=[f"a@{uuid.uuid4().hex[:8]}.example"]),
                        b"Subject: old offer\r\n\r\nbody\r\n", reason="spam", result=None, detail="",
                        settings=Quarantine(), now=time.time())
        helpdesk = await account(console, Role.helpdesk)
        async with http(console) as client:
            csrf = await api_sign_in(client, helpdesk)
            page = (await client.get(f"/quarantine/{qid}")).text
            assert re.search(r'<input type="checkbox" name="confirm" value="yes" required>', page)
            untouched = await client.post(f"/quarantine/{qid}/delete", data={"csrf_token": csrf})
            assert untouched.status_code == 400 and "for good" in untouched.text and held_in(migrated, qid)
            gone = await client.post(f"/quarantine/{qid}/delete", data={"csrf_token": csrf, "confirm": "yes"})
            assert gone.status_code == 303 and not held_in(migrated, qid)
        entries, _ = await console.audit.page(target=qid)
        assert [(e.action, e.actor) for e in entries] == [("quarantine.delete", helpdesk)]


async def test_a_deferred_copy_is_deleted_from_the_page_only_with_the_tick(console: Console, redis_client,
                                                                          amqp_url: str):
    """Delete on the queues page drops mail without a DSN: without the tick nothing is sent to egress (Redis
    and RabbitMQ real), the page says why; with it the control message goes out."""
    probe = Bus(amqp_url)
    await probe.connect()
    await probe.declare_queue(CONTROL_QUEUE, CONTROL_ARGUMENTS)
    assert probe.channel is not None
    control = await probe.channel.get_queue(CONTROL_QUEUE)
    await control.purge()
    queues = ConsoleQueues(lambda: redis_client, lambda: Bus(amqp_url))
    app = create_app(console)
    install(app, queues, None)
    envelope = Envelope(mail_from="s@out.org", rcpt_to=["a@dest.test"], itinerary=["egress"],
                        route=Route(name="mx", kind="mx", domain="dest.test"), attempts=2, last_error="451 later")
    await DeferredStore(redis_client).record(deferral_of(envelope, "mailmoat.egress.retry.900s", 900), 900)
    admin = await account(console, Role.admin)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.10", 40000)),
                                     base_url="http://testserver") as client:
            csrf = await api_sign_in(client, admin)
            page = (await client.get("/queues")).text
            assert 'name="confirm" value="yes" required' in page
            form = {"csrf_token": csrf, "id": envelope.id, "route": "mx"}
            untouched = await client.post("/queues/delete", data=form)
            assert untouched.status_code == 303 and "confirm=" in untouched.headers["location"]
            assert "was not deleted" in (await client.get(untouched.headers["location"])).text
            await asyncio.sleep(0.5)
            assert await control.get(no_ack=True, fail=False) is None
            done = await client.post("/queues/delete", data={**form, "confirm": "yes"})
            assert done.status_code == 303 and "done=delete" in done.headers["location"]
            for _ in range(100):
                message = await control.get(no_ack=True, fail=False)
                if message is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no control message published")
            assert Control.decode(message.body).action == "delete"
        entries, _ = await console.audit.page(target=envelope.id)
        assert [e.action for e in entries] == ["queue.delete"]
    finally:
        await queues.close()
        await probe.close()
