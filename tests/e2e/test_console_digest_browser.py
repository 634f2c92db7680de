"""Quarantine digests end to end, in a real browser (Playwright driving Debian's chromium): the gateway with its
records in PostgreSQL, the console as its own process (its digest round at start), RabbitMQ, Redis and a
recording SMTP sink.

- two held messages, one a recipient may release and one only an administrator may release (``release_by`` by
  the holding rule's name): each recipient's digest reaches the sink through routing and egress;
- fetching the release link (a mail scanner's prefetch) releases nothing; opening it shows the message made
  safe and a confirm form; confirming releases it, and it arrives at the sink exactly once; the link again
  says "already released";
- the request link records a request (again: "already requested") that an administrator finds in the console;
- nothing is fetched from elsewhere and no script runs on the link's pages.

Screenshots in var/screenshots/ (git-ignored)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy

import psycopg
import pytest

from tests.e2e.conftest import POLICY
from tests.e2e.test_console_browser import sign_in
from tests.e2e.test_console_quarantine_browser import hold, wait_until
from tests.e2e.test_mail_flow import send
from tests.support.browser import CHROMIUM, shot
from tests.support.console import fresh_database, running_console
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

DIGEST_POLICY = POLICY + """
rules:
  - name: hold-invoices
    conditions: {{subject_contains: [invoice]}}
    actions: {{quarantine: true}}
  - name: hold-contracts
    conditions: {{subject_contains: [contract]}}
    actions: {{quarantine: true}}
quarantine:
  release_by: {{hold-contracts: admin}}
  notifications: {{enabled: true, every_hours: 24, link_days: 7}}
"""


@pytest.fixture
def records(database_url: str) -> Iterator[str]:
    with fresh_database(database_url, "digest") as url:
        yield url


def digest_to(sink: SmtpSink, recipient: str) -> str:
    """The text of the one digest the sink got for ``recipient``."""
    found = [m for m in list(sink.messages) if recipient in m.rcpt_tos and b"Quarantine summary" in m.data]
    assert len(found) == 1, [m.data[:200] for m in found]
    assert found[0].mail_from == ""
    return message_from_bytes(found[0].data, policy=email_policy.default).get_content()


def links_in(text: str) -> list[str]:
    return re.findall(r"(http://\S+/notify/\S+)", text)


def copies_of(sink: SmtpSink, marker: bytes) -> list:
    return [m for m in list(sink.messages) if marker in m.data and b"Quarantine summary" not in m.data]


def test_a_digest_link_releases_once(gateway_factory, sink: SmtpSink, records: str, browser, tmp_path) -> None:
    gateway = gateway_factory(DIGEST_POLICY, env={"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": records})
    invoice = hold(gateway, records, ["alice@example.com"],
                   b"From: s@outside.test\r\nTo: alice@example.com\r\nSubject: invoice 42\r\n\r\nPay me.\r\n")
    contract = hold(gateway, records, ["bob@example.com"],
                    b"From: s@outside.test\r\nTo: bob@example.com\r\nSubject: contract 7\r\n\r\nSign here.\r\n")
    console_env = {"MAILMOAT_AMQP_URL": gateway.env["MAILMOAT_AMQP_URL"],
                   "MAILMOAT_POLICY": str(tmp_path / "policy.yaml"),
                   "MAILMOAT_CONSOLE_DIGEST_CHECK": "3600"}  # one round at start, the next long after the test
    with running_console(records, console_env) as (url, admin_password):
        wait_until(lambda: len([m for m in list(sink.messages) if b"Quarantine summary" in m.data]) == 2,
                   "the two digests at the sink", timeout=60)
        text = digest_to(sink, "alice@example.com")
        assert "invoice 42" in text and "contract" not in text
        view, release = links_in(text)
        _, request = links_in(digest_to(sink, "bob@example.com"))
        assert "Only an administrator may release it" in digest_to(sink, "bob@example.com")
        assert not copies_of(sink, b"invoice 42")

        problems: list[str] = []
        context = browser.new_context()  # nobody signed in
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("request", lambda r: None if r.url.startswith(url) else problems.append(f"request elsewhere: {r.url}"))

        # a scanner fetching the links releases nothing
        for link in (view, release, request):
            assert context.request.get(link).status == 200
        # the view link: the message, no form
        page.goto(view)
        assert "Pay me." in page.locator(".mailbody").inner_text()
        assert page.locator("form.confirm").count() == 0

        # the release link: confirm, delivered exactly once
        page.goto(release)
        assert "invoice 42" in page.locator("dl.summary").inner_text()
        shot(page, "digest-confirm")
        assert not copies_of(sink, b"invoice 42")
        page.click("form.confirm button[type=submit]")
        notice = page.locator("p.notice")
        notice.wait_for()
        assert "Released" in notice.inner_text()
        shot(page, "digest-released")
        (delivered,) = wait_until(lambda: copies_of(sink, b"invoice 42"), "the released message")
        assert delivered.rcpt_tos == ["alice@example.com"]
        # the link again: already released; nothing more sent
        page.goto(release)
        assert "already released" in page.locator("p.notice").inner_text().lower()
        assert page.locator("form.confirm").count() == 0
        code, _ = send(gateway.smtp_port, "s@outside.test", ["carol@example.com"], b"Subject: plain\r\n\r\nhi\r\n")
        assert code == 250
        wait_until(lambda: [m for m in list(sink.messages) if b"Subject: plain" in m.data], "the plain message")
        assert len(copies_of(sink, b"invoice 42")) == 1

        # a tampered link is refused
        assert context.request.get(release[:-3] + "AAA").status == 400

        # the request link: a request, not a release; again: already requested
        page.goto(request)
        page.click("form.confirm button[type=submit]")
        assert "Release requested" in page.locator("p.notice").inner_text()
        page.goto(request)
        assert "already requested" in page.locator("p.notice").inner_text().lower()
        assert not copies_of(sink, b"contract 7")
        context.close()

        admin = browser.new_context()
        mine = admin.new_page()
        sign_in(mine, url, "admin", admin_password)
        mine.goto(f"{url}/release-requests")
        listing = mine.locator("table.requests").inner_text()
        assert "bob@example.com" in listing and "held" in listing
        shot(mine, "release-requests")
        mine.goto(f"{url}/audit")
        audit = mine.locator("table.results").inner_text()
        assert "quarantine.release-request" in audit and "alice@example.com (digest link)" in audit
        admin.close()
    with psycopg.connect(records) as conn:
        assert conn.execute("SELECT recipient FROM console_release_requests WHERE qid = %s", (contract,)).fetchall() \
            == [("bob@example.com",)]
        assert conn.execute("SELECT state FROM quarantine_recipients WHERE qid = %s", (invoice,)).fetchall() == \
            [("released",)]
    assert problems == []
