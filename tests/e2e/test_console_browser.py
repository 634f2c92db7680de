"""The console in a real browser (Playwright driving Debian's chromium; no browser download): the console
runs as its own process (``mailmoat run console``) on a fresh records database, prints its first admin's
password, and the test signs in with it, makes accounts, searches the trace for messages written with
TraceWriter, reads a timeline, and checks the refusals: a change without the CSRF token, another user's
message by id (404). Screenshots of the main pages go to var/screenshots/ (git-ignored)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_records import db
from mailmoat_records.tracedb import TraceRecord, TraceWriter
from tests.support.browser import CHROMIUM, shot
from tests.support.console import fresh_database, running_console

pytestmark = pytest.mark.e2e


playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): apt-get install chromium "
                "(scripts/setup.sh --test does)", allow_module_level=True)


@pytest.fixture(scope="module")
def console_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url, "console") as url:
        yield url


@pytest.fixture(scope="module")
def console(console_database: str) -> Iterator[tuple[str, str]]:
    """The running console: (its URL, the first admin's password as it printed it)."""
    with running_console(console_database) as started:
        yield started


def write_messages(database_url: str, domain: str) -> dict[str, str]:
    """A message to alice and one to bob, traced as ingress, antispam and egress do; their queue ids."""

    async def write() -> dict[str, str]:
        ids = {}
        async with db.open_pool(database_url, max_size=1) as pool:
            writer = TraceWriter(pool)
            for n, who in enumerate(("alice", "bob")):
                mid, rcpt = new_message_id(), f"{who}@{domain}"
                at = datetime.now(UTC) - timedelta(minutes=5 - n)
                await writer.write([
                    TraceRecord(events=[TraceEvent(event="RECEIVE", message_id=mid, service="ingress", at=at,
                                                   recipients=[rcpt], detail="from 203.0.113.5 size 2048")],
                                sender=f"newsletter@{domain}", recipients=[rcpt],
                                message_id_header=f"<{who}-{mid.lower()}@news.test>", client_ip="203.0.113.5"),
                    TraceRecord(events=[
                        TraceEvent(event="SCAN", message_id=mid, service="antispam", at=at + timedelta(seconds=1),
                                   detail="SCL 1 (clean)", data={"verdict": {"scl": 1, "result": "clean"}}),
                        TraceEvent(event="DELIVER", message_id=mid, service="egress", at=at + timedelta(seconds=2),
                                   recipients=[rcpt], detail="250 2.0.0 queued as 4XyZ")]),
                ])
                ids[who] = mid
        return ids

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # playwright's loop runs in this thread
        return pool.submit(asyncio.run, write()).result(timeout=60)


def sign_in(page, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/signin")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/trace*")


def create_account(page, url: str, name: str, mailbox: str) -> str:
    """Create an end user on the accounts page; the password it shows once."""
    page.goto(f"{url}/accounts")
    form = page.locator("form[action='/accounts']")
    form.locator("input[name=name]").fill(name)
    form.locator("select[name=role]").select_option("user")
    form.locator("input[name=addresses]").fill(mailbox)
    form.locator("button[type=submit]").click()
    return page.locator("code.password").inner_text(timeout=10_000)


def test_console_in_a_browser(console: tuple[str, str], console_database: str, browser) -> None:
    url, admin_password = console
    domain = f"{uuid.uuid4().hex[:8]}.example"
    ids = write_messages(console_database, domain)
    problems: list[str] = []

    admin = browser.new_context()
    page = admin.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text} at {m.location.get('url')}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: None if r.url.startswith(url) else problems.append(f"request elsewhere: {r.url}"))

    page.goto(f"{url}/signin")
    shot(page, "signin")
    sign_in(page, url, "admin", admin_password)
    cookie = next(c for c in admin.cookies() if c["name"] == "mailmoat_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    alice_password = create_account(page, url, "alice", f"alice@{domain}")
    shot(page, "accounts")
    create_account(page, url, "bob", f"bob@{domain}")

    # the trace: both messages by their sender, newest first; then alice's timeline
    page.goto(f"{url}/trace")
    page.fill("input[name=sender]", f"newsletter@{domain}")
    page.click("form.search button[type=submit]")
    rows = page.locator("table.results tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    assert f"bob@{domain}" in rows.nth(0).inner_text() and f"alice@{domain}" in rows.nth(1).inner_text()
    shot(page, "trace")
    rows.nth(1).locator("a").click()
    page.wait_for_url(f"{url}/trace/{ids['alice']}")
    events = page.locator("table.events tbody tr")
    assert [events.nth(i).locator("td").nth(1).inner_text() for i in range(events.count())] == [
        "RECEIVE", "SCAN", "DELIVER"]
    assert "clean" in page.locator("body").inner_text()
    shot(page, "message")

    # a change without the CSRF token (the session cookie goes with it): refused, nothing made
    refused = admin.request.post(f"{url}/accounts", form={"name": "mallory", "role": "admin"})
    assert refused.status == 403 and "CSRF" in refused.text()
    refused = admin.request.post(f"{url}/accounts", form={"name": "mallory", "role": "admin",
                                                          "csrf_token": "guessed"})
    assert refused.status == 403
    page.goto(f"{url}/accounts")
    assert "mallory" not in page.locator("table.results").inner_text()

    page.goto(f"{url}/audit")
    audit = page.locator("table.results").inner_text()
    assert "account.create" in audit and "signin" in audit and "account.bootstrap" in audit
    shot(page, "audit")

    # alice: her message, never bob's (404 by id, not 403, nothing of it shown)
    user = browser.new_context()
    mine = user.new_page()
    mine.on("console", lambda m: problems.append(f"console {m.type}: {m.text} at {m.location.get('url')}")
            if m.type == "error" else None)
    sign_in(mine, url, "alice", alice_password)
    rows = mine.locator("table.results tbody tr")
    rows.first.wait_for()
    assert rows.count() == 1 and ids["alice"] in rows.first.locator("a").get_attribute("href")
    shot(mine, "trace-end-user")
    answer = mine.goto(f"{url}/trace/{ids['bob']}")
    assert answer is not None and answer.status == 404
    assert ids["bob"] not in mine.content() and f"bob@{domain}" not in mine.content()
    api = user.request.get(f"{url}/api/trace/{ids['bob']}")
    assert api.status == 404
    assert mine.goto(f"{url}/accounts").status == 403
    assert mine.goto(f"{url}/trace/{ids['alice']}").status == 200

    # her own password, changed on its page: she stays signed in
    mine.goto(f"{url}/password")
    mine.fill("input[name=current]", alice_password)
    mine.fill("input[name=new]", "alice's own long password")
    mine.fill("input[name=repeat]", "alice's own long password")
    mine.click("form[action='/password'] button[type=submit]")
    mine.locator("p.notice").wait_for()
    shot(mine, "password")
    assert mine.goto(f"{url}/trace/{ids['alice']}").status == 200

    # signing out ends the session on the server: the old cookie opens nothing
    old = [c for c in user.cookies() if c["name"] == "mailmoat_session"]
    mine.goto(f"{url}/trace")
    mine.click("form.signout button")
    mine.wait_for_url(f"{url}/signin")
    replay = browser.new_context()
    replay.add_cookies(old)
    assert replay.request.get(f"{url}/api/me").status == 401
    for context in (admin, user, replay):
        context.close()
    # the browser logs the two refusals asked for above as failed loads; nothing else may appear
    expected = {f"{url}/trace/{ids['bob']}", f"{url}/accounts"}
    assert [p for p in problems if not any(p.endswith(f"at {e}") and "status of 40" in p for e in expected)] == []
