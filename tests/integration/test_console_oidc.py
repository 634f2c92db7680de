"""OpenID Connect sign-in over real HTTP: the console (uvicorn on loopback, PostgreSQL, Redis) and a minimal
provider (tests/support/oidcprovider.py), an httpx client following the redirects as a browser would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
import uvicorn

from mailmoat_console.app import create_app
from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.oidc import OidcClient, OidcConfig
from mailmoat_console.rights import Role
from mailmoat_platform import redisclient
from mailmoat_records import db
from tests.support.infra import REDIS_TEST_URL, free_port
from tests.support.oidcprovider import Behaviour, OidcProvider

pytestmark = pytest.mark.integration
PASSWORD = "a long test password"
ROLES = {"mail-admins": Role.admin, "helpdesk": Role.helpdesk}


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    idp = OidcProvider()
    await idp.start()
    yield idp
    await idp.stop()


@pytest.fixture
async def console_url(migrated: str, provider: OidcProvider) -> AsyncIterator[tuple[str, Console]]:
    client = redisclient.from_url(REDIS_TEST_URL)
    port = free_port()
    async with db.open_pool(migrated, max_size=3, name="console-oidc-test") as pool:
        console = Console.build(ConsoleConfig(host="127.0.0.1", port=port, secure_cookies=False), pool, client)
        app = create_app(console)
        app.state.oidc = OidcClient(OidcConfig(issuer=provider.issuer, client_id=provider.client_id,
                                               client_secret=provider.client_secret, name="Test IdP", roles=ROLES))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}", console
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    await client.aclose()


def browser(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, follow_redirects=True, timeout=10)


def subject() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


async def audit_rows(url: str, actor: str) -> list[tuple[str, str, dict]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT action, outcome, detail FROM console_audit WHERE actor = %s ORDER BY id",
                                 (actor,))
        return [tuple(r) for r in await cur.fetchall()]


async def test_an_admin_signs_in_through_the_provider(console_url, provider: OidcProvider, migrated: str):
    base, _ = console_url
    sub = subject()
    provider.behaviour = Behaviour(claims={"sub": sub, "email": "Ann@Example.org", "email_verified": True,
                                           "groups": ["staff", "mail-admins"]})
    async with browser(base) as web:
        page = await web.get("/signin")
        assert "Sign in with Test IdP" in page.text
        done = await web.get("/signin/oidc")
        assert done.status_code == 200 and "Signed in" in done.text, done.text
        assert str(done.url).startswith(f"{base}/signin/oidc/callback?code=")
        assert [r.url.host for r in done.history] == ["127.0.0.1", "127.0.0.1"]
        me = await web.get("/api/me")
        assert me.status_code == 200, me.text
        assert me.json()["name"] == f"oidc:{sub}" and me.json()["role"] == "admin"
        assert (await web.get("/trace")).status_code == 200
    request = provider.token_requests[-1]
    assert request["code_verifier"] and request["redirect_uri"] == f"{base}/signin/oidc/callback"
    assert await audit_rows(migrated, f"oidc:{sub}") == [
        ("signin", "ok", {"method": "oidc", "groups": ["staff", "mail-admins"]})]
    async with await psycopg.AsyncConnection.connect(migrated) as conn:
        cur = await conn.execute("SELECT role, addresses, password_hash FROM console_accounts WHERE name = %s",
                                 (f"oidc:{sub}",))
        assert await cur.fetchone() == ("admin", ["ann@example.org"], "!oidc")
    # the groups change at the provider: the account follows at the next sign-in
    provider.behaviour = Behaviour(claims={"sub": sub, "groups": ["helpdesk"]})
    async with browser(base) as web:
        assert (await web.get("/signin/oidc")).status_code == 200
        assert (await web.get("/api/me")).json()["role"] == "helpdesk"


async def test_an_end_user_by_verified_email_and_refusals(console_url, provider: OidcProvider, migrated: str):
    base, _ = console_url
    sub = subject()
    provider.behaviour = Behaviour(claims={"sub": sub, "email": "bob@example.org", "email_verified": True})
    async with browser(base) as web:
        assert (await web.get("/signin/oidc")).status_code == 200
        me = (await web.get("/api/me")).json()
        assert me["role"] == "user"
    nobody = subject()
    provider.behaviour = Behaviour(claims={"sub": nobody, "email": "eve@example.org", "email_verified": False,
                                           "groups": ["staff"]})
    async with browser(base) as web:
        refused = await web.get("/signin/oidc")
        assert refused.status_code == 403 and "refused" in refused.text
        assert (await web.get("/api/me")).status_code == 401
    rows = await audit_rows(migrated, f"oidc:{nobody}")
    assert rows[0][:2] == ("signin", "refused") and rows[0][2]["method"] == "oidc"
    assert "no group" in rows[0][2]["reason"]


@pytest.mark.parametrize("knob", ["tamper", "expired", "wrong_nonce", "foreign_key"])
async def test_a_bad_id_token_is_refused(console_url, provider: OidcProvider, migrated: str, knob: str):
    base, _ = console_url
    sub = subject()
    provider.behaviour = Behaviour(claims={"sub": sub, "groups": ["mail-admins"]}, **{knob: True})
    async with browser(base) as web:
        answer = await web.get("/signin/oidc")
        assert answer.status_code == 403, answer.text
        assert (await web.get("/api/me")).status_code == 401
    assert await audit_rows(migrated, f"oidc:{sub}") == []  # an unverified token's subject is not believed
    last = (await audit_rows(migrated, "oidc:-"))[-1]
    assert last[:2] == ("signin", "refused") and "ID token is not valid" in last[2]["reason"], last
    async with await psycopg.AsyncConnection.connect(migrated) as conn:
        cur = await conn.execute("SELECT count(*) FROM console_accounts WHERE name = %s", (f"oidc:{sub}",))
        assert (await cur.fetchone())[0] == 0


async def test_a_callback_not_started_by_this_browser_is_refused(console_url, provider: OidcProvider):
    base, _ = console_url
    provider.behaviour = Behaviour(claims={"sub": subject(), "groups": ["mail-admins"]})
    async with browser(base) as attacker:
        start = await attacker.get("/signin/oidc", follow_redirects=False)
        to_provider = await attacker.get(start.headers["location"], follow_redirects=False)
        callback = to_provider.headers["location"]
    async with browser(base) as victim:  # login CSRF: the attacker's code in another browser
        answer = await victim.get(callback)
        assert answer.status_code == 403
        assert (await victim.get("/api/me")).status_code == 401
    async with browser(base) as web:  # its own cookie but another state
        await web.get("/signin/oidc", follow_redirects=False)
        answer = await web.get(callback.split("&state=")[0] + "&state=forged")
        assert answer.status_code == 403


async def test_local_sign_in_keeps_working(console_url):
    base, console = console_url
    name = f"local-{uuid.uuid4().hex[:8]}"
    await console.accounts.create(name, Role.helpdesk, PASSWORD)
    async with browser(base) as web:
        answer = await web.post("/api/session", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200
        assert (await web.get("/api/me")).json()["role"] == "helpdesk"
    async with browser(base) as web:  # an account made by the provider has no password
        answer = await web.post("/api/session", json={"name": "oidc:x", "password": PASSWORD})
        assert answer.status_code == 401


async def test_a_disabled_account_or_one_given_a_password_is_refused(console_url, provider: OidcProvider,
                                                                     migrated: str):
    base, console = console_url
    await console.accounts.create(f"admin-{uuid.uuid4().hex[:8]}", Role.admin, PASSWORD)  # not the last admin
    sub = subject()
    provider.behaviour = Behaviour(claims={"sub": sub, "groups": ["helpdesk"]})
    async with browser(base) as web:
        assert (await web.get("/signin/oidc")).status_code == 200
        me = (await web.get("/api/me")).json()
    await console.accounts.update(me["id"], disabled=True)
    async with browser(base) as web:
        assert (await web.get("/signin/oidc")).status_code == 403
        assert (await web.get("/api/me")).status_code == 401
    await console.accounts.update(me["id"], disabled=False)
    await console.accounts.set_password(me["id"], PASSWORD)  # now a local account
    async with browser(base) as web:
        assert (await web.get("/signin/oidc")).status_code == 403
    reasons = [r[2]["reason"] for r in await audit_rows(migrated, f"oidc:{sub}") if r[1] == "refused"]
    assert reasons == ["the account is disabled", f"the account name 'oidc:{sub}' belongs to a local account"]
