"""The console against the real PostgreSQL (accounts, sessions, audit, the trace) and Redis (sign-in limits),
its ASGI app driven in process over HTTP."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from mailmoat_console.app import create_app
from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.rights import Role
from mailmoat_console.service import announce_admin, bootstrap
from mailmoat_platform import redisclient
from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_records import db
from mailmoat_records.tracedb import TraceRecord, TraceWriter
from tests.support.infra import REDIS_TEST_URL

pytestmark = pytest.mark.integration
PASSWORD = "a long test password"


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
async def redis_client() -> AsyncIterator[redisclient.Redis]:
    client = redisclient.from_url(REDIS_TEST_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def console(migrated: str, redis_client: redisclient.Redis) -> AsyncIterator[Console]:
    async with db.open_pool(migrated, max_size=3, name="console-test") as pool:
        yield Console.build(ConsoleConfig(secure_cookies=False, signin_per_account=3, signin_per_ip=6), pool,
                            redis_client)


def http(console: Console, ip: str = "192.0.2.10") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(console), client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def account(console: Console, role: Role, addresses: list[str] = ()) -> str:
    name = unique(role.value)
    await console.accounts.create(name, role, PASSWORD, addresses)
    return name


async def api_sign_in(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> str:
    answer = await client.post("/api/session", json={"name": name, "password": password})
    assert answer.status_code == 200, answer.text
    return answer.json()["csrf_token"]


async def trace(console: Console, sender: str, rcpts: list[str], ip: str = "198.51.100.20") -> str:
    """A message as ingress and egress trace it, written with TraceWriter; its queue id."""
    mid = new_message_id()
    at = datetime.now(UTC) - timedelta(seconds=5)
    receive = TraceEvent(event="RECEIVE", message_id=mid, service="ingress", at=at, recipients=rcpts,
                         detail=f"from {ip}")
    verdict = TraceEvent(event="SCAN", message_id=mid, service="antispam", at=at + timedelta(milliseconds=30),
                         detail="clean", data={"verdict": {"scl": 1, "result": "clean"}})
    deliveries = [TraceEvent(event="DELIVER", message_id=mid, service="egress", at=at + timedelta(seconds=1),
                             recipients=[r], detail=f"250 ok for {r}") for r in rcpts]
    writer = TraceWriter(console.search.reader.pool)
    await writer.write([TraceRecord(events=[receive], sender=sender, recipients=rcpts,
                                    message_id_header=f"<{mid.lower()}@test>", client_ip=ip),
                        TraceRecord(events=[verdict, *deliveries])])
    return mid


# --- accounts and sign-in ---------------------------------------------------------------------------------

async def test_first_admin_is_made_once(migrated: str, console: Console, capsys):
    with psycopg.connect(migrated, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM console_accounts").fetchone()[0]:
            pytest.skip("accounts exist already in this test session's database")
    await announce_admin(console, "http://127.0.0.1:8025/")
    line = capsys.readouterr().out
    password = re.search(r"password '([^']+)'", line).group(1)
    assert "name 'admin'" in line and len(password) == 20
    await announce_admin(console, "http://127.0.0.1:8025/")
    assert capsys.readouterr().out == ""  # not again, and the password is nowhere else
    admin = await console.accounts.authenticate("admin", password)
    assert admin is not None and admin.role is Role.admin
    with psycopg.connect(migrated) as conn:
        stored = conn.execute("SELECT password_hash FROM console_accounts WHERE name = 'admin'").fetchone()[0]
        assert stored.startswith("$argon2id$") and password not in stored
        assert conn.execute("SELECT count(*) FROM console_audit WHERE action = 'account.bootstrap'").fetchone()[0] == 1


async def test_a_console_with_accounts_hashes_no_password_at_start(console: Console, monkeypatch):
    """Each argon2 hash takes 64 MiB while it runs: a console started on a database with accounts makes none."""
    from mailmoat_console import accounts

    await account(console, Role.helpdesk)

    def no_hash(password: str) -> str:
        raise AssertionError("a password was hashed at start with accounts in the database")

    monkeypatch.setattr(accounts, "hash_password", no_hash)
    assert await console.accounts.bootstrap_admin() is None


async def test_sign_in_session_and_sign_out(console: Console, migrated: str):
    name = await account(console, Role.helpdesk)
    async with http(console) as client:
        csrf = await api_sign_in(client, name)
        me = (await client.get("/api/me")).json()
        assert me["name"] == name and me["role"] == "helpdesk" and "trace.all" in me["rights"]
        assert (await client.delete("/api/session")).status_code == 403  # no CSRF token
        assert (await client.delete("/api/session", headers={"X-CSRF-Token": csrf})).status_code == 204
        assert (await client.get("/api/me")).status_code == 401
    with psycopg.connect(migrated) as conn:
        rows = conn.execute("SELECT action, outcome, host(client_ip) FROM console_audit WHERE actor = %s ORDER BY id",
                            (name,)).fetchall()
        sessions = conn.execute("SELECT token_hash, revoked_at IS NOT NULL FROM console_sessions s "
                                "JOIN console_accounts a ON a.id = s.account_id WHERE a.name = %s", (name,)).fetchall()
    assert rows == [("signin", "ok", "192.0.2.10"), ("signout", "ok", "192.0.2.10")]
    assert len(sessions) == 1 and sessions[0][1] and len(sessions[0][0]) == 32  # the token's digest, revoked


async def test_a_stolen_cookie_is_useless_after_a_password_change(console: Console):
    name = await account(console, Role.admin)
    async with http(console) as client:
        await api_sign_in(client, name)
        account_id = (await client.get("/api/me")).json()["id"]
        await console.accounts.set_password(account_id, "another long password")
        assert (await client.get("/api/me")).status_code == 401


async def test_expired_and_idle_sessions_end(console: Console, migrated: str):
    name = await account(console, Role.user, ["x@example.com"])
    async with http(console) as client:
        await api_sign_in(client, name)
        assert (await client.get("/api/me")).status_code == 200
        with psycopg.connect(migrated, autocommit=True) as conn:
            conn.execute("UPDATE console_sessions s SET last_seen = now() - interval '2 hours' FROM console_accounts a "
                         "WHERE a.id = s.account_id AND a.name = %s", (name,))
        assert (await client.get("/api/me")).status_code == 401  # idle past 60 minutes


async def test_sign_in_rate_limit_per_account_and_per_address(console: Console, redis_client: redisclient.Redis,
                                                              migrated: str):
    name = await account(console, Role.admin)
    async with http(console, "192.0.2.50") as client:
        for _ in range(3):
            answer = await client.post("/api/session", json={"name": name, "password": "wrong password!"})
            assert answer.status_code == 401
        answer = await client.post("/api/session", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 429 and 0 < int(answer.headers["retry-after"]) <= 900
    keys = [k.decode() for k in await redis_client.keys("console:signin:*")]
    assert sorted(k.split(":")[2] for k in keys) == ["account", "ip"]
    assert all(0 < ttl <= 900 for ttl in [await redis_client.ttl(k) for k in keys])  # every key expires
    async with http(console, "192.0.2.51") as other:  # the account is limited from anywhere
        answer = await other.post("/api/session", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 429
    await redis_client.flushdb()
    async with http(console, "192.0.2.52") as client:  # an address trying many names is limited too
        for n in range(6):
            await client.post("/api/session", json={"name": f"nobody-{n}", "password": "wrong password!"})
        answer = await client.post("/api/session", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 429
    with psycopg.connect(migrated) as conn:
        outcomes = conn.execute("SELECT outcome, count(*) FROM console_audit WHERE actor = %s GROUP BY outcome",
                                (name,)).fetchall()
    assert dict(outcomes) == {"failed": 3, "rate-limited": 3}


async def test_accounts_changed_by_an_admin_are_audited(console: Console, migrated: str):
    admin = await account(console, Role.admin)
    async with http(console) as client:
        csrf = await api_sign_in(client, admin)
        headers = {"X-CSRF-Token": csrf}
        name = unique("bob")
        created = await client.post("/api/accounts", json={"name": name, "role": "user",
                                                           "addresses": ["<Bob@Example.com>"]}, headers=headers)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["account"]["addresses"] == ["bob@example.com"] and len(body["password"]) == 20
        again = await client.post("/api/accounts", json={"name": name.upper(), "role": "user"}, headers=headers)
        assert again.status_code == 400  # names are unique whatever their case
        short = await client.post("/api/accounts", json={"name": unique("c"), "role": "user", "password": "short"},
                                  headers=headers)
        assert short.status_code == 400
        changed = await client.patch(f"/api/accounts/{body['account']['id']}", headers=headers,
                                     json={"role": "helpdesk", "disabled": True})
        assert changed.status_code == 200 and changed.json()["role"] == "helpdesk"
        missing = await client.patch("/api/accounts/999999999", json={"role": "user"}, headers=headers)
        assert missing.status_code == 404
        me = (await client.get("/api/me")).json()
        audit = (await client.get("/api/audit", params={"limit": 500})).json()["entries"]
    mine = [(e["action"], e["target"], e["client_ip"]) for e in audit if e["actor"] == admin]
    assert ("account.create", name, "192.0.2.10") in mine and ("account.change", name, "192.0.2.10") in mine
    change = next(e for e in audit if e["actor"] == admin and e["action"] == "account.change")
    assert change["detail"] == {"role": "helpdesk", "disabled": True}
    assert me["role"] == "admin"
    async with http(console) as client:  # the disabled account cannot sign in
        answer = await client.post("/api/session", json={"name": name, "password": body["password"]})
        assert answer.status_code == 401


async def test_the_last_enabled_admin_stays(console: Console, migrated: str):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("UPDATE console_accounts SET disabled = true WHERE role = 'admin'")
    name = await account(console, Role.admin)
    async with http(console) as client:
        csrf = await api_sign_in(client, name)
        me = (await client.get("/api/me")).json()
        answer = await client.patch(f"/api/accounts/{me['id']}", json={"role": "user"}, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 400 and "last enabled admin" in answer.json()["detail"]
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("UPDATE console_accounts SET disabled = false WHERE role = 'admin'")


async def test_changing_ones_own_password(console: Console, migrated: str):
    name = await account(console, Role.user, ["pw@example.com"])
    async with http(console) as first, http(console) as second:
        await api_sign_in(second, name)
        csrf = await api_sign_in(first, name)
        headers = {"X-CSRF-Token": csrf}
        body = {"current": "not the password", "new": "a brand new password"}
        assert (await first.post("/api/me/password", json=body)).status_code == 403  # no CSRF token
        assert (await first.post("/api/me/password", json=body, headers=headers)).status_code == 400
        short = {"current": PASSWORD, "new": "short"}
        assert (await first.post("/api/me/password", json=short, headers=headers)).status_code == 400
        changed = await first.post("/api/me/password", json={"current": PASSWORD, "new": "a brand new password"},
                                   headers=headers)
        assert changed.status_code == 200
        new_csrf = changed.json()["csrf_token"]
        assert new_csrf != csrf and (await first.get("/api/me")).status_code == 200  # this one goes on
        assert (await second.get("/api/me")).status_code == 401  # the other session ended
        assert (await first.delete("/api/session", headers=headers)).status_code == 403  # the old token is dead
    assert await console.accounts.authenticate(name, "a brand new password") is not None
    with psycopg.connect(migrated) as conn:
        outcomes = conn.execute("SELECT outcome FROM console_audit WHERE actor = %s AND action = 'password.change' "
                                "ORDER BY id", (name,)).fetchall()
    assert [o for (o,) in outcomes] == ["failed", "ok"]


async def test_password_rescue_from_the_shell(console: Console, migrated: str, monkeypatch, capsys):
    from mailmoat_console import admin

    monkeypatch.setenv("MAILMOAT_DATABASE_URL", migrated)
    name = unique("root")
    assert await asyncio.to_thread(admin.main, ["create-admin", name]) == 0
    first = capsys.readouterr().out.rsplit(" ", 1)[1].strip()
    assert (await console.accounts.authenticate(name, first)).role is Role.admin
    assert await asyncio.to_thread(admin.main, ["reset-password", name.upper()]) == 0
    second = capsys.readouterr().out.rsplit(" ", 1)[1].strip()
    assert second != first and await console.accounts.authenticate(name, first) is None
    assert await console.accounts.authenticate(name, second) is not None
    assert await asyncio.to_thread(admin.main, ["reset-password", unique("nobody")]) == 1


# --- the trace --------------------------------------------------------------------------------------------

async def test_trace_search_and_timeline_with_rights(console: Console):
    domain = f"{uuid.uuid4().hex[:8]}.example"
    alice, bob, carol = f"alice@{domain}", f"bob@{domain}", f"carol@{domain}"
    to_alice = await trace(console, f"news@{domain}", [alice, carol])
    to_bob = await trace(console, f"news@{domain}", [bob])
    desk = await account(console, Role.helpdesk)
    user = await account(console, Role.user, [alice])
    async with http(console) as client:
        await api_sign_in(client, desk)
        found = (await client.get("/api/trace", params={"sender": f"news@{domain}"})).json()
        assert [m["message_id"] for m in found["messages"]] == [to_bob, to_alice]
        assert found["looked_up"] == "sender"
        page = (await client.get("/api/trace", params={"sender": f"news@{domain}", "limit": 1})).json()
        assert [m["message_id"] for m in page["messages"]] == [to_bob] and page["next"]
        page = (await client.get("/api/trace", params={"sender": f"news@{domain}", "limit": 1,
                                                       "after": page["next"]})).json()
        assert [m["message_id"] for m in page["messages"]] == [to_alice] and page["next"] is None
        by_ip = (await client.get("/api/trace", params={"client_ip": "198.51.100.20", "recipient": bob})).json()
        assert [m["message_id"] for m in by_ip["messages"]] == [to_bob]
        delivered = (await client.get("/api/trace", params={"sender": f"news@{domain}", "status": "DELIVER"})).json()
        assert len(delivered["messages"]) == 2
        failed = (await client.get("/api/trace", params={"sender": f"news@{domain}", "status": "FAIL"})).json()
        assert failed["messages"] == []
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        later = (await client.get("/api/trace", params={"sender": f"news@{domain}", "since": tomorrow})).json()
        assert later["messages"] == []
        timeline = (await client.get(f"/api/trace/{to_alice}")).json()
        assert [e["event"] for e in timeline["events"]] == ["RECEIVE", "SCAN", "DELIVER", "DELIVER"]
        assert timeline["verdicts"] == {"antispam": {"scl": 1, "result": "clean"}}
        assert (await client.get("/api/trace", params={})).json()["looked_up"] == "range"  # the last 2 days
    async with http(console) as client:
        await api_sign_in(client, user)
        found = (await client.get("/api/trace", params={"sender": f"news@{domain}"})).json()
        assert [m["message_id"] for m in found["messages"]] == [to_alice]
        assert found["messages"][0]["recipients"] == [alice]  # carol's address is not alice's to see
        refused = await client.get("/api/trace", params={"recipient": bob})
        assert refused.status_code == 400
        timeline = (await client.get(f"/api/trace/{to_alice}")).json()
        assert [e["recipients"] for e in timeline["events"] if e["event"] == "DELIVER"] == [[alice]]
        for missing in (to_bob, new_message_id(), "nonsense"):
            answer = await client.get(f"/api/trace/{missing}")
            assert answer.status_code == 404 and answer.json() == {"detail": "Not found."}
        page = await client.get(f"/trace/{to_bob}")
        assert page.status_code == 404 and to_bob not in page.text and bob not in page.text


async def test_pages_sign_in_search_and_csrf(console: Console):
    domain = f"{uuid.uuid4().hex[:8]}.example"
    mid = await trace(console, f"sender@{domain}", [f"dest@{domain}"])
    admin = await account(console, Role.admin)
    async with http(console) as client:
        form = await client.get("/signin")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        wrong = await client.post("/signin", data={"name": admin, "password": "nope nope nope", "csrf_token": token})
        assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
        signed = await client.post("/signin", data={"name": admin, "password": PASSWORD, "csrf_token": token})
        assert signed.status_code == 303 and signed.headers["location"] == "/trace"
        cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("mailmoat_session="))
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Max-Age=28800" in cookie
        results = await client.get("/trace", params={"recipient": f"dest@{domain}"})
        assert results.status_code == 200 and mid in results.text
        assert results.headers["cache-control"] == "no-store"
        timeline = await client.get(f"/trace/{mid}")
        assert "DELIVER" in timeline.text and f"sender@{domain}" in timeline.text
        accounts = await client.get("/accounts")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', accounts.text).group(1)
        refused = await client.post("/accounts", data={"name": unique("eve"), "role": "admin"})
        assert refused.status_code == 403
        made = await client.post("/accounts", data={"name": unique("eve"), "role": "user",
                                                     "addresses": "eve@x.example", "csrf_token": csrf})
        assert made.status_code == 201 and "shown once" in made.text
        audit = await client.get("/audit")
        assert "account.create" in audit.text and "signin" in audit.text
        out = await client.post("/signout", data={"csrf_token": csrf})
        assert out.status_code == 303
        assert (await client.get("/trace")).status_code == 303


async def test_the_console_waits_for_the_schema_then_makes_the_first_admin(database_url: str, redis_client,
                                                                           capsys, caplog):
    """Started before `mailmoat db upgrade` (as `run all` may), it warns once and retries instead of failing."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") + "_unmigrated"
    server = parts._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = parts._replace(path=f"/{name}").geturl()
    try:
        async with db.open_pool(url, max_size=2, name="console-test") as pool:
            console = Console.build(ConsoleConfig(secure_cookies=False), pool, redis_client)
            task = asyncio.create_task(bootstrap(console, "http://127.0.0.1:8025/", retry=0.05))
            deadline = asyncio.get_running_loop().time() + 10
            while "run `mailmoat db upgrade`" not in caplog.text:
                assert asyncio.get_running_loop().time() < deadline and not task.done()
                await asyncio.sleep(0.02)
            assert caplog.text.count("run `mailmoat db upgrade`") == 1
            await asyncio.to_thread(db.upgrade, url)
            await asyncio.wait_for(task, 10)
            assert "first admin account created" in capsys.readouterr().out
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def test_text_postgresql_cannot_take_is_a_bad_request_not_a_server_error(console: Console):
    name = await account(console, Role.admin)
    async with http(console) as client:
        await api_sign_in(client, name)
        for params in ({"sender": "a\x00b@example.com"}, {"message_id": "\x00"}, {"client_ip": "1.2.3.4\x00"}):
            answer = await client.get("/api/trace", params=params)
            assert answer.status_code == 400, (params, answer.text)
        assert (await client.get("/api/trace/A%00B")).status_code in (400, 404)
        assert (await client.get("/trace", params={"client_ip": "\x00"})).status_code == 400
    async with http(console) as client:
        for body in ('{"name": "a\\u0000b", "password": "x"}', '{"name": "\\ud800", "password": "x"}'):
            answer = await client.post("/api/session", content=body, headers={"content-type": "application/json"})
            assert answer.status_code in (400, 401, 422), answer.text
