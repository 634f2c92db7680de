"""Block sender end to end: the gateway with its records in PostgreSQL holds a message by a rule; an administrator
blocks its sender through the running console's API; the sender's next message through the gateway is handled as
a blocked sender (SCL 9, SFV:SKB, high-confidence spam, as the policy's blocked senders), while another address of
the same domain is not."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
import requests

from tests.e2e.test_antispam import dns, policy, split  # noqa: F401 (the dns fixture)
from tests.e2e.test_console_browser import sign_in
from tests.e2e.test_mail_flow import queue_id, send
from tests.support.browser import CHROMIUM, SCREENSHOTS
from tests.support.console import fresh_database, running_console
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

HOLD_INVOICES = """
rules:
  - name: hold-invoices
    conditions: {{subject_contains: [invoice]}}
    actions: {{quarantine: true}}
"""


@pytest.fixture
def records(database_url: str) -> Iterator[str]:
    with fresh_database(database_url, "blocks") as url:
        yield url


def message(sender: str, subject: str) -> bytes:
    return (f"From: {sender}\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
            f"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '-')}@sender.test>\r\n\r\n"
            "Shall we meet on Thursday?\r\n").encode()


def deliver(gateway, sender: str, subject: str) -> str:
    code, reply = send(gateway.smtp_port, sender, ["alice@example.com"], message(sender, subject))
    assert code == 250, reply
    return queue_id(reply)


def wait_held(database_url: str, qid: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            if conn.execute("SELECT 1 FROM quarantine WHERE qid = %s", (qid,)).fetchone():
                return
        time.sleep(0.1)
    raise AssertionError(f"{qid} not held")


def report(got, subject: str) -> bytes:
    (item,) = [g for g in got if f"Subject: {subject}\r\n".encode() in g.data]
    return split(item.data)[0].replace(b"\r\n\t", b"")


def screenshots(url: str, password: str, qid: str) -> None:
    """The held message's page offers Block sender; the Blocked senders page lists the entry (screenshots)."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            sign_in(page, url, "admin", password)
            page.goto(f"{url}/quarantine/{qid}")
            assert page.locator("form.block-sender option").count() == 2  # the address and its domain
            page.screenshot(path=str(SCREENSHOTS / "console-held-block-sender.png"), full_page=True)
            page.goto(f"{url}/sender-blocks")
            assert page.locator("table.sender-blocks tbody tr").count() == 1
            assert "offers@sender.test" in page.locator("table.sender-blocks").inner_text()
            page.screenshot(path=str(SCREENSHOTS / "console-sender-blocks.png"), full_page=True)
        finally:
            browser.close()


def test_a_sender_blocked_from_the_console_is_a_blocked_sender_at_its_next_message(
        gateway_factory, sink: SmtpSink, dns, records: str, tmp_path) -> None:  # noqa: F811
    env = {"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": records,
           "MAILMOAT_ANTISPAM_BLOCKS_REFRESH": "0"}  # read for every message: no waiting for the copy's TTL
    gateway = gateway_factory(policy("antispam") + HOLD_INVOICES, services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port, env=env)
    deliver(gateway, "offers@sender.test", "before")
    held = deliver(gateway, "offers@sender.test", "invoice")
    wait_held(records, held)
    before = report(sink.wait_for(1, timeout=60), "before")
    assert b"SFV:NSPM" in before and b"SCL:9" not in before

    console_env = {"MAILMOAT_AMQP_URL": gateway.env["MAILMOAT_AMQP_URL"],
                   "MAILMOAT_POLICY": str(tmp_path / "policy.yaml")}
    with running_console(records, console_env) as (url, password):
        web = requests.Session()
        signed = web.post(f"{url}/api/session", json={"name": "admin", "password": password}, timeout=10)
        assert signed.status_code == 200, signed.text
        csrf = signed.json()["csrf_token"]
        assert web.post(f"{url}/api/quarantine/{held}/block-sender", json={}, timeout=10).status_code == 403
        answer = web.post(f"{url}/api/quarantine/{held}/block-sender", json={}, headers={"X-CSRF-Token": csrf},
                          timeout=10)
        assert answer.status_code == 201, answer.text
        assert answer.json()["value"] == "offers@sender.test" and answer.json()["kind"] == "sender"
        audit = web.get(f"{url}/api/audit", timeout=10).json()
        assert "sender-block.add" in str(audit)
        if CHROMIUM is not None:
            screenshots(url, password, held)

    deliver(gateway, "offers@sender.test", "after")
    deliver(gateway, "ann@sender.test", "other address")
    got = sink.wait_for(3, timeout=60)
    after = report(got, "after")
    assert b"SFV:SKB;SCL:9;" in after and b"CAT:HSPM" in after and b"X-Mailmoat-SCL: 9\r\n" in after
    other = report(got, "other address")
    assert b"SFV:NSPM" in other
