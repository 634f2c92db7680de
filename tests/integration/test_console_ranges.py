"""Dates at the ends of the calendar are a bad request or an empty answer on PostgreSQL, never a server error:
rule hits up to the first week of year 1 (schemathesis found the 500), the pages' "to" date 9999-12-31."""

from __future__ import annotations

import httpx
import pytest

from mailmoat_console.app import create_app
from mailmoat_console.core import Console
from mailmoat_console.operations import install
from mailmoat_console.policypages import PolicyPages
from mailmoat_console.rights import Role
from tests.integration import test_console as base
from tests.integration.test_console import account, api_sign_in

pytestmark = pytest.mark.integration
migrated, redis_client, console = base.migrated, base.redis_client, base.console  # the fixtures


async def test_dates_at_the_ends_of_the_calendar(console: Console, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: tag\n    actions: {prepend_subject: '[x] '}\n")
    app = create_app(console)
    install(app, None, PolicyPages(str(policy), console.search.reader.pool))
    admin = await account(console, Role.admin)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.10", 40000)),
                                 base_url="http://testserver") as client:
        await api_sign_in(client, admin)
        early = await client.get("/api/policy/rule-hits", params={"until": "0001-01-01T05:21:03Z"})
        assert early.status_code == 400 and "out of range" in early.json()["detail"]
        hits = await client.get("/api/policy/rule-hits", params={"since": "9999-12-25T00:00:00Z",
                                                                 "until": "9999-12-31T23:59:59Z"})
        assert hits.status_code == 200 and [h["rule"] for h in hits.json()] == ["tag"]
        page = await client.get("/policy", params={"until": "0001-01-01"})
        assert page.status_code == 400 and "out of range" in page.text
        late = await client.get("/trace", params={"recipient": "a@example.com", "until": "9999-12-31"})
        assert late.status_code == 200 and "No messages found" in late.text
        assert (await client.get("/policy", params={"since": "9999-12-30", "until": "9999-12-31"})).status_code == 200
