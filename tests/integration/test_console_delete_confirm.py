"""Deleting a held message from its page on PostgreSQL takes the "for good" tick (a page has no script to ask
"are you sure?"): without it the message stays held and the page says why; with it the message is gone and the
delete is audited. The API's DELETE is unchanged."""

from __future__ import annotations

import re
import time
import uuid

import psycopg
import pytest

from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.quarantine import ConsoleQuarantine
from mailmoat_console.rights import Role
from mailmoat_platform.models import Envelope, new_message_id
from mailmoat_policy.quarantine import Quarantine
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from tests.integration import test_console as base
from tests.integration.test_console import account, api_sign_in, http

pytestmark = pytest.mark.integration
migrated, redis_client = base.migrated, base.redis_client  # the fixtures


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
