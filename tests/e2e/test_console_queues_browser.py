"""The console's queues and policy pages in a real browser (Playwright driving Debian's chromium) against the running
gateway (records in PostgreSQL), the console as its own process, RabbitMQ, Redis and a recording SMTP sink:

- a message the sink defers (451) appears on the queues page under its destination with its last error; the sink
  then accepts, and "Retry now" delivers it at once (its delay queue holds it 10 minutes), exactly once; the retry
  is in the audit log and a retry without the CSRF token is refused;
- a pasted draft policy with an error shows the error's field path; the policy in force is shown.

Screenshots in var/screenshots/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import POLICY
from tests.e2e.test_console_browser import sign_in
from tests.e2e.test_console_quarantine_browser import wait_until
from tests.e2e.test_mail_flow import queue_id, send
from tests.support.browser import CHROMIUM, shot
from tests.support.console import fresh_database, running_console
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

LONG_RETRY = POLICY.replace("retry_delays: [1, 2]", "retry_delays: [600]")
BAD_DRAFT = """organization:
  hostname: gw.example.com
rules:
  - name: tag
    mode: sometimes
    conditions: {subject_contains: [x]}
    actions: {prepend_subject: "[x] "}
"""


@pytest.fixture
def records(database_url: str) -> Iterator[str]:
    with fresh_database(database_url, "consolequeues") as url:
        yield url


def test_queues_and_policy_in_a_browser(gateway_factory, sink: SmtpSink, records: str, browser, tmp_path) -> None:
    assert "retry_delays: [600]" in LONG_RETRY
    gateway = gateway_factory(LONG_RETRY, env={"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": records})
    sink.reply_next("451 4.3.0 mailbox busy, try later")
    data = b"From: s@outside.test\r\nTo: alice@example.com\r\nSubject: deferred report\r\n\r\nQuarterly.\r\n"
    code, reply = send(gateway.smtp_port, "s@outside.test", ["alice@example.com"], data)
    assert code == 250, reply
    qid = queue_id(reply)
    wait_until(lambda: sink.refused, "the sink's 451")

    console_env = {"MAILMOAT_AMQP_URL": gateway.env["MAILMOAT_AMQP_URL"],
                   "MAILMOAT_POLICY": str(tmp_path / "policy.yaml")}
    with running_console(records, console_env) as (url, admin_password):
        problems: list[str] = []
        context = browser.new_context()
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        sign_in(page, url, "admin", admin_password)

        # the deferred message under its destination, with its last error
        def listed() -> bool:
            page.goto(f"{url}/queues")
            return page.locator(f"tr[data-id='{qid}']").count() == 1

        wait_until(listed, "the deferred message on the queues page")
        row = page.locator(f"tr[data-id='{qid}']")
        assert "451 4.3.0 mailbox busy, try later" in row.locator("td.last-error").inner_text()
        assert "alice@example.com" in row.inner_text()
        assert "onprem" in page.locator("section.destination h2").first.inner_text()
        shot(page, "queues")
        assert not [m for m in list(sink.messages) if b"deferred report" in m.data]

        # without the CSRF token: refused, nothing sent
        refused = context.request.post(f"{url}/queues/retry", form={"id": qid, "route": "onprem"})
        assert refused.status == 403 and "CSRF" in refused.text()

        # the sink accepts now; retry now delivers it at once, exactly once
        row.locator("form.retry button").click()
        page.locator("p.notice").wait_for()
        assert "Retry now asked" in page.locator("p.notice").inner_text()
        delivered = wait_until(lambda: [m for m in list(sink.messages) if b"deferred report" in m.data],
                               "the retried message at the sink", timeout=20)
        assert delivered[0].rcpt_tos == ["alice@example.com"]

        def gone() -> bool:
            page.goto(f"{url}/queues")
            return page.locator(f"tr[data-id='{qid}']").count() == 0

        wait_until(gone, "the delivered message off the queues page")
        code, _ = send(gateway.smtp_port, "s@outside.test", ["carol@example.com"], b"Subject: plain\r\n\r\nhi\r\n")
        assert code == 250
        wait_until(lambda: [m for m in list(sink.messages) if b"Subject: plain" in m.data], "the plain message")
        assert len([m for m in list(sink.messages) if b"deferred report" in m.data]) == 1
        page.goto(f"{url}/audit")
        assert "queue.retry" in page.locator("table.results").inner_text()

        # the policy: in force shown; a pasted draft with an error shows its field path
        page.goto(f"{url}/policy")
        assert "gw.mailmoat.test" in page.locator("pre.policy-yaml").inner_text()
        page.fill("textarea[name=draft]", BAD_DRAFT)
        page.click("form.draft button[type=submit]")
        errors = page.locator("div.check-errors")
        errors.wait_for()
        assert page.locator("td.field-path").first.inner_text() == "rules.0.mode"
        assert "'enforce' or 'test'" in errors.inner_text()
        shot(page, "policy-check")
        page.fill("textarea[name=draft]", BAD_DRAFT.replace("sometimes", "test"))
        page.click("form.draft button[type=submit]")
        assert "The draft is valid" in page.locator("p.check-ok").inner_text()
        assert problems == []
        context.close()
