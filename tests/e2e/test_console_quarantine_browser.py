"""The console's quarantine in a real browser (Playwright driving Debian's chromium) against the running gateway
with its records in PostgreSQL (``MAILMOAT_RECORDS=postgresql``), the console as its own process, RabbitMQ,
Redis and a recording SMTP sink:

- a message a rule held is found by the reason filter, released from its page, and reaches the sink exactly
  once; releasing it again says it was released already;
- a held message with ``<script>``, remote images, CSS expressions, ``javascript:`` links, a frame and a form
  renders without running or fetching anything: the test watches every request the page makes, the console
  log and page errors;
- an end user opening someone else's held message by id gets 404; a release without the CSRF token is refused.

Screenshots in var/screenshots/ (git-ignored)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.e2e.test_console_browser import create_account, sign_in
from tests.e2e.test_mail_flow import queue_id, send
from tests.e2e.test_quarantine_postgresql import RULES
from tests.support.browser import CHROMIUM, shot
from tests.support.console import fresh_database, running_console
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

HOSTILE_HTML = (
    "<html><head><link rel=stylesheet href=\"http://tracker.invalid/style.css\">"
    "<style>body{{background:url(http://tracker.invalid/bg.png)}}</style>"
    "<script>document.title='pwned'; fetch('http://tracker.invalid/script')</script>"
    "<meta http-equiv=refresh content=\"0;url=http://tracker.invalid/refresh\"></head>"
    "<body onload=\"fetch('http://tracker.invalid/onload')\">"
    "<p id=lure style=\"width:expression(alert(1)); background-image:url(http://tracker.invalid/p.png)\">"
    "Your invoice is ready</p>"
    "<img src=\"http://tracker.invalid/pixel.gif\" width=1 height=1>"
    "<img src=x onerror=\"fetch('http://tracker.invalid/onerror')\">"
    "<a href=\"javascript:fetch('http://tracker.invalid/js')\">Open the invoice</a> "
    "<a href=\"https://shop.invalid/pay\">Pay here</a>"
    "<iframe src=\"http://tracker.invalid/frame\"></iframe>"
    "<object data=\"http://tracker.invalid/object\"></object>"
    "<form action=\"http://tracker.invalid/form\"><input name=card><button>Send</button></form>"
    "<svg><script>alert(2)</script></svg>"
    "</body></html>"
)


def hostile_message(to: str) -> bytes:
    return (
        f"From: Billing <billing@outside.test>\r\nTo: {to}\r\nSubject: invoice overdue\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
        "--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"{HOSTILE_HTML}\r\n"
        "--XX\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\r\n--XX--\r\n"
    ).encode()


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def is_held(database_url: str, qid: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT 1 FROM quarantine WHERE qid = %s", (qid,)).fetchone() is not None


def hold(gateway, database_url: str, rcpts: list[str], data: bytes) -> str:
    code, reply = send(gateway.smtp_port, "billing@outside.test", rcpts, data)
    assert code == 250, reply
    qid = queue_id(reply)
    wait_until(lambda: is_held(database_url, qid), f"{qid} held in PostgreSQL")
    return qid


@pytest.fixture
def records(database_url: str) -> Iterator[str]:
    with fresh_database(database_url, "consoleq") as url:
        yield url


def test_quarantine_in_a_browser(gateway_factory, sink: SmtpSink, records: str, browser, tmp_path) -> None:
    env = {"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": records}
    gateway = gateway_factory(RULES, env=env)
    release_data = (b"From: s@outside.test\r\nTo: alice@example.com\r\nSubject: invoice to release\r\n\r\n"
                    b"Please find it attached.\r\n")
    released_qid = hold(gateway, records, ["alice@example.com", "bob@example.com"], release_data)
    hostile_qid = hold(gateway, records, ["alice@example.com"], hostile_message("alice@example.com"))
    ticked_qid = hold(gateway, records, ["alice@example.com", "bob@example.com"],
                      b"From: s@outside.test\r\nTo: bob@example.com\r\nSubject: invoice for bob only\r\n\r\nHi.\r\n")
    assert not [m for m in list(sink.messages) if b"invoice" in m.data]  # both held

    console_env = {"MAILMOAT_AMQP_URL": gateway.env["MAILMOAT_AMQP_URL"],
                   "MAILMOAT_POLICY": str(tmp_path / "policy.yaml")}
    with running_console(records, console_env) as (url, admin_password):
        problems: list[str] = []
        admin = browser.new_context()
        page = admin.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text} at {m.location.get('url')}")
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("request", lambda r: None if r.url.startswith(url)
                else problems.append(f"request elsewhere: {r.url}"))
        page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
        sign_in(page, url, "admin", admin_password)

        # the listing, filtered by reason
        page.goto(f"{url}/quarantine")
        page.select_option("select[name=reason]", "rule")
        page.click("form.search button[type=submit]")
        rows = page.locator("table.held tbody tr")
        rows.first.wait_for()
        assert rows.count() == 3
        listing = page.locator("table.held").inner_text()
        assert "alice@example.com, bob@example.com" in listing and "rule" in listing
        shot(page, "quarantine")

        # the hostile message: shown, nothing run, nothing fetched
        page.goto(f"{url}/quarantine/{hostile_qid}")
        page.wait_for_load_state("networkidle")
        body = page.locator(".mailbody")
        assert "Your invoice is ready" in body.inner_text()
        for selector in ("script", "img", "iframe", "object", "form", "input", "style", "link", "svg", "[style]",
                         "[onload]", "[onerror]", "a[href^='javascript']"):
            assert body.locator(selector).count() == 0, selector
        link = body.locator("a[href='https://shop.invalid/pay']")
        assert link.get_attribute("rel") == "noopener noreferrer nofollow"
        assert "pwned" not in page.title()
        assert "invoice.pdf.exe" in page.locator("table.attachments").inner_text()
        assert "Subject: invoice overdue" in page.locator("pre.headers").inner_text()
        shot(page, "quarantine-held")
        response = admin.request.get(f"{url}/quarantine/{hostile_qid}")
        assert "script-src 'none'" in response.headers["content-security-policy"]

        # a release without the CSRF token is refused; nothing reaches the sink
        refused = admin.request.post(f"{url}/quarantine/{released_qid}/release", form={})
        assert refused.status == 403 and "CSRF" in refused.text()

        # release to all from the page: delivered exactly once
        page.goto(f"{url}/quarantine/{released_qid}")
        page.click("form.release button[type=submit]")
        notice = page.locator("p.notice")
        notice.wait_for()
        assert "Released to alice@example.com, bob@example.com" in notice.inner_text()
        shot(page, "quarantine-released")
        (delivered,) = [m for m in sink.wait_for(1) if b"invoice to release" in m.data]
        assert sorted(delivered.rcpt_tos) == ["alice@example.com", "bob@example.com"]
        # again: already released, no second copy
        page.goto(f"{url}/quarantine/{released_qid}")
        assert page.locator("form.release").count() == 0  # nobody left to release to
        again = admin.request.post(f"{url}/api/quarantine/{released_qid}/release", data={},
                                   headers={"X-CSRF-Token": csrf_of(page)})
        assert again.status == 200 and again.json()["already"] == ["alice@example.com", "bob@example.com"]
        # a plain message after it is delivered: the release had its turn at egress, and went once
        code, _ = send(gateway.smtp_port, "s@outside.test", ["carol@example.com"], b"Subject: plain\r\n\r\nhi\r\n")
        assert code == 250
        wait_until(lambda: [m for m in list(sink.messages) if b"Subject: plain" in m.data], "the plain message")
        assert len([m for m in list(sink.messages) if b"invoice to release" in m.data]) == 1
        assert not [m for m in list(sink.messages) if b"invoice overdue" in m.data]
        assert not [m for m in list(sink.messages) if b"invoice for bob only" in m.data]

        # Not junk with one recipient ticked: released to that recipient only (the ticks belong to both buttons)
        page.goto(f"{url}/quarantine/{ticked_qid}")
        page.check("form.release input[value='bob@example.com']")
        page.click("form.release button.notjunk")
        notice = page.locator("p.notice")
        notice.wait_for()
        assert "Released to bob@example.com." in notice.inner_text() and "alice" not in notice.inner_text()
        shot(page, "quarantine-not-junk")
        copy = wait_until(lambda: [m for m in list(sink.messages) if b"invoice for bob only" in m.data], "bob's copy")
        assert [m.rcpt_tos for m in copy] == [["bob@example.com"]]

        page.goto(f"{url}/audit")
        assert "quarantine.release" in page.locator("table.results").inner_text()

        # an end user: another user's held message by id is 404, in the page and the API
        carol_password = create_account(page, url, "carol", "carol@example.com")
        user = browser.new_context()
        mine = user.new_page()
        sign_in(mine, url, "carol", carol_password)
        answer = mine.goto(f"{url}/quarantine/{hostile_qid}")
        assert answer is not None and answer.status == 404 and "invoice" not in mine.content()
        assert user.request.get(f"{url}/api/quarantine/{hostile_qid}").status == 404
        mine.goto(f"{url}/quarantine")
        assert "invoice" not in mine.locator("main").inner_text()
        shot(mine, "quarantine-end-user")
        for context in (admin, user):
            context.close()
    assert len([m for m in list(sink.messages) if b"invoice for bob only" in m.data]) == 1
    assert problems == []


def csrf_of(page) -> str:
    """The session's CSRF token from a form on the page (the sign-out form carries it)."""
    return page.locator("form.signout input[name=csrf_token]").get_attribute("value")
