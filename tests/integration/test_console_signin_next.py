"""A page opened before signing in (a link to a held message from a colleague or a notice) comes back after the
sign-in, on PostgreSQL and Redis: only a path of the console itself, never another site."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from mailmoat_console.core import Console
from mailmoat_console.rights import Role
from tests.integration import test_console as base
from tests.integration.test_console import PASSWORD, account, http

pytestmark = pytest.mark.integration
migrated, redis_client, console = base.migrated, base.redis_client, base.console  # the fixtures


async def sign_in_from(client, target: str, name: str) -> str:
    """Open ``target`` signed out, follow to the sign-in page, sign in there; where the console sends us."""
    first = await client.get(target)
    assert first.status_code == 303
    page = await client.get(first.headers["location"])
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    back = re.search(r'name="next" value="([^"]+)"', page.text)
    form = {"name": name, "password": PASSWORD, "csrf_token": token, **({"next": back.group(1)} if back else {})}
    signed = await client.post("/signin", data=form)
    assert signed.status_code == 303
    return signed.headers["location"]


async def test_the_page_asked_for_comes_back_after_signing_in(console: Console):
    helpdesk = await account(console, Role.helpdesk)
    async with http(console) as client:
        answer = await client.get("/quarantine/01ABC?x=1")
        assert answer.status_code == 303
        assert parse_qs(urlsplit(answer.headers["location"]).query) == {"next": ["/quarantine/01ABC?x=1"]}
    async with http(console) as client:
        assert await sign_in_from(client, "/quarantine/01ABC?x=1", helpdesk) == "/quarantine/01ABC?x=1"
        assert (await client.get("/signin", params={"next": "/queues"})).headers["location"] == "/queues"
    async with http(console) as client:
        assert await sign_in_from(client, "/trace", helpdesk) == "/trace"
    for hostile in ("//evil.test/x", "https://evil.test/", "/\\evil.test", "/api/trace", "/signin"):
        async with http(console) as client:
            page = await client.get("/signin", params={"next": hostile})
            assert 'name="next"' not in page.text, hostile
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            signed = await client.post("/signin", data={"name": helpdesk, "password": PASSWORD, "csrf_token": token,
                                                        "next": hostile})
            assert signed.headers["location"] == "/trace", hostile
    async with http(console) as client:  # the API still answers 401, a change is not remembered
        assert (await client.get("/api/me")).status_code == 401
        assert (await client.post("/quarantine/01ABC/release")).headers["location"] == "/signin"
