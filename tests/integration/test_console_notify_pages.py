"""The pages a digest's links open, in process against the real PostgreSQL and RabbitMQ: a GET changes nothing,
the confirm needs the page's cookie-bound token, a release goes once, expired, foreign and view-only links
change nothing, requests are recorded once and listed for administrators only."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import psycopg
import pytest

from mailmoat_console.app import create_app
from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.notifylinks import LinkSigner
from mailmoat_console.quarantine import ConsoleQuarantine
from mailmoat_console.ratelimit import SigninLimiter
from mailmoat_platform.bus import Bus
from mailmoat_platform.models import Envelope
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from tests.integration.test_console_digest import Trace
from tests.integration.test_quarantine_store import SETTINGS, drain
from tests.unit.test_console_units import FakeCounter

pytestmark = pytest.mark.integration

DATA = b"From: s@outside.test\r\nSubject: pills\r\n\r\nbuy now\r\n"


class Clock:
    def __init__(self) -> None:
        self.at = time.time()

    def __call__(self) -> float:
        return self.at


@pytest.fixture
async def setup(database_url: str, amqp_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, QuarantineDB, Bus, str,
                                                                          LinkSigner, Clock]]:
    db.upgrade(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine, console_release_requests CASCADE")
    bus = Bus(amqp_url)
    await bus.connect()
    queue = await bus.declare_stage("routing")
    assert bus.channel is not None
    await (await bus.channel.get_queue(queue)).purge()
    async with db.open_pool(database_url, max_size=3) as pool:
        store = QuarantineDB(database_url, pool=pool)
        quarantine = ConsoleQuarantine(pool, store, bus_factory=lambda: bus, trace_factory=lambda _: Trace())
        console = Console.build(ConsoleConfig(secure_cookies=False), pool, None, counter=FakeCounter(),
                                quarantine=quarantine)
        console.limiter = SigninLimiter(FakeCounter())
        app = create_app(console)
        clock = Clock()
        signer = app.state.link_signer = LinkSigner([b"s" * 32], clock)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.7", 1234)),
                                     base_url="http://testserver") as http:
            yield http, store, bus, queue, signer, clock
    await bus.close()


async def hold(store: QuarantineDB, rcpts: list[str], reason: str = "spam") -> str:
    held, _ = await store.put(Envelope(mail_from="s@outside.test", rcpt_to=rcpts, itinerary=["routing", "egress"]),
                              DATA, reason=reason, result=None, detail="", settings=SETTINGS)
    return held.id


def path(token: str) -> str:
    return "/notify/" + quote(token, safe="")


async def confirm(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """Open the link, then post its confirm form as a browser would (the cookie the page set, the form's token)."""
    page = await http.get(path(token))
    found = re.search(r'name="link_csrf" value="([^"]+)"', page.text)
    return await http.post(path(token), data={"link_csrf": found[1] if found else ""})


async def test_a_release_link_releases_once_and_only_when_confirmed(setup) -> None:
    http, store, bus, queue, signer, _ = setup
    qid = await hold(store, ["alice@example.com", "bob@example.com"])
    token = signer.sign(qid, "alice@example.com", "release", days=7)
    page = await http.get(path(token))
    assert page.status_code == 200 and "buy now" in page.text and "bob@example.com" not in page.text
    assert "HttpOnly" in page.headers["set-cookie"] and "script-src 'none'" in page.headers["content-security-policy"]
    # without the page's token (or with another), nothing happens
    for data in ({}, {"link_csrf": "forged" * 6}):
        refused = await http.post(path(token), data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert await drain(bus, queue, 1, timeout=0.3) == []
    done = await confirm(http, token)
    assert done.status_code == 200 and "Released" in done.text
    ((envelope, _),) = await drain(bus, queue, 2, timeout=1)
    assert envelope.rcpt_to == ["alice@example.com"] and envelope.released_from == qid
    again = await http.get(path(token))
    assert "Already released" in again.text and 'name="link_csrf"' not in again.text
    held = await store.get(qid)
    assert held is not None and held.pending == ["bob@example.com"]


async def test_expired_changed_foreign_and_view_links_change_nothing(setup) -> None:
    http, store, bus, queue, signer, clock = setup
    qid = await hold(store, ["alice@example.com"])
    other = await hold(store, ["carol@example.com"])
    expired = signer.sign(qid, "alice@example.com", "release", days=1)
    token = signer.sign(qid, "alice@example.com", "release", days=2)
    form = re.search(r'name="link_csrf" value="([^"]+)"', (await http.get(path(token))).text)
    assert form is not None  # the cookie and the form's token of a page still valid
    clock.at += 86400
    assert (await http.get(path(expired))).status_code == 410
    assert (await http.post(path(expired), data={"link_csrf": form[1]})).status_code == 410
    assert (await http.get(path(token[:-4] + "abcd"))).status_code == 400
    assert (await http.get(path(LinkSigner([b"x" * 32]).sign(qid, "alice@example.com", "release", days=1)))
            ).status_code == 400
    # alice's link to a message not addressed to her: as if it did not exist
    stray = signer.sign(other, "alice@example.com", "release", days=1)
    answer = await http.get(path(stray))
    assert answer.status_code == 404 and "buy now" not in answer.text
    view = signer.sign(qid, "alice@example.com", "view", days=1)
    assert 'name="link_csrf"' not in (await http.get(path(view))).text
    assert (await http.post(path(view), data={"link_csrf": "x"})).status_code == 403
    assert await drain(bus, queue, 1, timeout=0.3) == []


async def test_a_request_link_records_one_request_for_administrators(setup, database_url: str) -> None:
    http, store, bus, queue, signer, _ = setup
    qid = await hold(store, ["alice@example.com"], reason="malware")
    release = signer.sign(qid, "alice@example.com", "release", days=1)
    refused = await confirm(http, release)  # a release link to an admin-only message: not released
    assert refused.status_code == 403 and "only an administrator" in refused.text
    token = signer.sign(qid, "alice@example.com", "request", days=1)
    assert "Release requested" in (await confirm(http, token)).text
    assert "already requested" in (await http.get(path(token))).text.lower()
    assert await drain(bus, queue, 1, timeout=0.3) == []
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT qid, recipient, host(client_ip) FROM console_release_requests").fetchall() == \
            [(qid, "alice@example.com", "192.0.2.7")]
        actions = conn.execute("SELECT action, outcome, actor FROM console_audit WHERE target = %s ORDER BY id",
                               (qid,)).fetchall()
    assert actions == [("quarantine.release", "refused", "alice@example.com (digest link)"),
                       ("quarantine.release-request", "ok", "alice@example.com (digest link)")]
    assert (await http.get("/api/release-requests")).status_code == 401
