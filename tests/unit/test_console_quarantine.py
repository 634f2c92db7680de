"""The console's quarantine without a database: the safe rendering of hostile mail, the rights of each role to
see and release (decided on the server), and the pages and API over a fake store."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest

from mailmoat_console.app import create_app
from mailmoat_console.quarantine import ConsoleQuarantine, HeldQuery, QueryError, parse_cursor, where_clause
from mailmoat_console.rights import Principal, Right, Role, releasable_recipients, release_role_of
from mailmoat_console.safemail import render, sanitize_html
from mailmoat_console.sessions import SESSION_COOKIE
from mailmoat_platform.models import Envelope
from mailmoat_records.quarantine import Held, ReleaseError
from tests.unit.test_console_app import console

HOSTILE = (
    b"From: Prize <win@spam.test>\r\nTo: alice@example.com\r\nSubject: You won\r\n"
    b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><style>body{background:url(http://tracker.test/bg.png)}</style>"
    b"<script>document.title='pwned'</script></head>"
    b"<body onload=\"alert(1)\"><p style=\"width:expression(alert(2))\">Claim <b>now</b></p>"
    b"<img src=\"http://tracker.test/pixel.gif\"><a href=\"javascript:alert(3)\">click</a>"
    b"<a href=\"https://shop.test/\">shop</a><iframe src=\"http://evil.test/\"></iframe>"
    b"<form action=\"http://evil.test/\"><input name=p></form>"
    b"<div style=\"background-image:url(http://tracker.test/div.png)\">x</div></body></html>\r\n"
    b"--B\r\nContent-Type: application/x-msdownload\r\nContent-Disposition: attachment; filename=\"invoice.exe\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--B--\r\n"
)

ALICE = Principal(5, "alice", Role.user, frozenset({"alice@example.com"}))
BOB = Principal(6, "bob", Role.user, frozenset({"bob@example.com"}))
DESK = Principal(7, "desk", Role.helpdesk)
ROOT = Principal(1, "root", Role.admin)


@pytest.mark.parametrize("unit", ["<div>", "<ul><li>", "<dl><dd>", "<blockquote>"])
def test_html_nested_too_deep_is_shown_as_its_text(unit: str) -> None:
    """The sanitiser's tree builder is quadratic in the nesting (40,000 divs: 4.6 s): such HTML is shown as text."""
    safe = render(b"Content-Type: text/html\r\n\r\n<p>Hello <b>there</b> <script>x()</script>"
                  + unit.encode() * 10_000 + b"deep text\r\n")
    assert safe.html == ""
    assert safe.text == "Hello there\ndeep text"
    assert any("more than 500 deep" in note for note in safe.notes)


def test_ordinary_nesting_is_shown_as_html() -> None:
    markup = "<table><tr><td>" + "<div>" * 50 + "<p>a<p>b" * 1000 + "</div>" * 50 + "</table>"
    safe = render(b"Content-Type: text/html\r\n\r\n" + markup.encode() + b"\r\n")
    assert "<div>" in safe.html and not safe.text


def test_hostile_html_is_made_safe():
    safe = render(HOSTILE)
    assert safe.subject == "You won"
    html = safe.html.lower()
    for bad in ("<script", "onload", "expression", "javascript:", "<img", "<style", "tracker.test", "<iframe",
                "<form", "<input", "style="):
        assert bad not in html, bad
    assert "claim <b>now</b>" in html and 'href="https://shop.test/"' in html and "noreferrer" in html
    assert [(a.filename, a.content_type) for a in safe.attachments] == [("invoice.exe", "application/x-msdownload")]
    assert safe.attachments[0].size == 12
    assert safe.headers.startswith("From: Prize <win@spam.test>") and "Content-Type: multipart" in safe.headers


def test_plain_text_and_odd_messages():
    safe = render(b"Subject: hi\r\n\r\n<script>x</script> plain\r\n")
    assert safe.html == "" and "<script>x</script> plain" in safe.text  # escaped by the template
    safe = render(b"Content-Type: text/html; charset=no-such-charset\r\n\r\n<p>odd\xff</p>")
    assert "odd" in safe.html
    cleaned = sanitize_html('<a href="vbscript:x">v</a><area href="http://x">')
    assert cleaned == '<a rel="noopener noreferrer nofollow">v</a>'


def test_every_hostile_message_a_stage_can_hold_can_be_shown():
    """The view reads MIME as the stages do: RFC 2231 parameters the library cannot decode (charset
    ``punycode``, continuations it cannot order) made it raise, so such a held message could not be opened."""
    from tests.support.hostile import cases

    for case in cases():
        safe = render(case.data)
        shown = safe.html or safe.text or safe.attachments or safe.notes
        assert safe.headers.startswith("From: ") and shown, case.name
    broken = next(c.data for c in cases() if c.name == "rfc2231-broken")
    assert [a.content_type for a in render(broken).attachments] == ["application/octet-stream"]
    punycode = (b"Subject: =?punycode?q?x?=\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                b"Content-Type: text/plain; charset=punycode\r\n\r\nbody \xff\r\n--b\r\n"
                b"Content-Disposition: attachment; filename*=punycode''%FF%FE\r\n\r\nx\r\n--b--\r\n")
    safe = render(punycode)
    assert "body" in safe.text and len(safe.attachments) == 1


def test_release_rights():
    assert release_role_of(ROOT) == "admin" and release_role_of(DESK) == "user" and release_role_of(ALICE) == "user"
    rcpts = ["Alice@example.com", "bob@example.com"]
    assert releasable_recipients(ALICE, rcpts) == ["Alice@example.com"]
    assert releasable_recipients(DESK, rcpts, ["BOB@example.com"]) == ["bob@example.com"]
    assert releasable_recipients(ROOT, rcpts) == rcpts
    assert not DESK.can(Right.quarantine_release_any) and DESK.can(Right.quarantine_delete)
    assert ALICE.can(Right.quarantine_release) and not ALICE.can(Right.quarantine_delete)


def test_listing_query_and_cursor():
    where, args = where_clause(HeldQuery(sender="<>"), ALICE)
    assert "ANY(%(mine)s)" in where and args["mine"] == ["alice@example.com"] and args["sender"] == ""
    where, args = where_clause(HeldQuery(reason="spam", recipient="<Bob@Example.com>"), DESK)
    assert "mine" not in args and args["recipient"] == "bob@example.com" and args["reason"] == "spam"
    assert parse_cursor("2026-01-02T03:04:05+00:00|Q1") == (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "Q1")
    with pytest.raises(QueryError):
        parse_cursor("garbage")


def held(qid: str, rcpts: list[str], release_by: str = "user", reason: str = "spam") -> Held:
    envelope = Envelope(id=qid, mail_from="win@spam.test", rcpt_to=rcpts, size=len(HOSTILE),
                        received_at=datetime.now(UTC))
    return Held(id=qid, envelope=envelope, reason=reason, result=reason, detail="SCL 9", created=time.time(),
                expires=time.time() + 86400, release_by=release_by, data=HOSTILE)  # type: ignore[arg-type]


class FakeStore:
    def __init__(self, *items: Held):
        self.items = {h.id: h for h in items}
        self.published: list[tuple[str, list[str], str]] = []

    async def get(self, qid, *, data=False):
        return self.items.get(qid)

    async def delete(self, qid):
        return self.items.pop(qid, None) is not None

    async def send_release(self, bus, item, recipients, who, role):
        done = [r for r in recipients if r.lower() not in item.released]
        for r in done:
            item.released[r.lower()] = {"at": time.time(), "by": who}
        if done:
            self.published.append((item.id, done, role))
        return done


class FakeBus:
    async def connect(self):
        pass

    async def close(self):
        pass


class FakeTrace:
    def __init__(self):
        self.events = []

    async def record(self, *events):
        self.events += events
        return True


def quarantine(store: FakeStore, learned: list[bytes] | None = None) -> ConsoleQuarantine:
    trace = FakeTrace()

    async def learn(data: bytes) -> bool:
        assert learned is not None
        learned.append(data)
        return True

    return ConsoleQuarantine(None, store, bus_factory=FakeBus, trace_factory=lambda bus: trace,  # type: ignore[arg-type]
                             learn_ham=learn if learned is not None else None)


async def test_an_end_user_releases_only_their_own_and_never_sees_others():
    store = FakeStore(held("Q1", ["alice@example.com", "bob@example.com"]), held("Q2", ["bob@example.com"]),
                      held("Q3", ["alice@example.com"], release_by="admin", reason="malware"))
    q = quarantine(store)
    assert await q.get("Q2", ALICE) is None and await q.release("Q2", ALICE) is None
    view = await q.view("Q1", ALICE)
    assert view is not None and view.recipients == ["alice@example.com"] and view.may_release == ["alice@example.com"]
    with pytest.raises(ReleaseError, match="not a recipient you may release to"):
        await q.release("Q1", ALICE, ["bob@example.com"])
    done = await q.release("Q1", ALICE)
    assert done.recipients == ["alice@example.com"] and store.published == [("Q1", ["alice@example.com"], "user")]
    again = await q.release("Q1", ALICE)
    assert again.recipients == [] and again.already == ["alice@example.com"]
    with pytest.raises(ReleaseError, match="only an administrator"):
        await q.release("Q3", ALICE)
    with pytest.raises(ReleaseError, match="only an administrator"):
        await q.release("Q3", DESK)
    assert (await q.view("Q3", DESK)).may_release == []
    done = await q.release("Q3", ROOT)
    assert done.recipients == ["alice@example.com"] and store.published[-1] == ("Q3", ["alice@example.com"], "admin")


async def test_delete_and_learn():
    learned: list[bytes] = []
    store = FakeStore(held("Q1", ["alice@example.com"]))
    q = quarantine(store, learned)
    assert await q.learn("Q1", ALICE) == "learned" and learned == [HOSTILE]
    assert await q.delete("Q1", BOB) is False and "Q1" in store.items
    assert await q.delete("Q1", DESK) is True and "Q1" not in store.items
    assert await quarantine(FakeStore(held("Q2", ["a@b"]))).learn("Q2", ROOT) == "unavailable"


def app_client(q: ConsoleQuarantine, who: Principal):
    made, _, _, audit = console(who)
    made.quarantine = q
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(made)), base_url="http://testserver",
                             cookies={SESSION_COOKIE: "good"})
    return http, audit


async def test_pages_and_api_over_the_store():
    store = FakeStore(held("Q1", ["alice@example.com"]), held("Q2", ["bob@example.com"]))
    http, audit = app_client(quarantine(store), ALICE)
    async with http:
        page = await http.get("/quarantine/Q1")
        assert page.status_code == 200
        text = page.text
        assert "<script" not in text and "tracker.test/pixel" not in text and "javascript:" not in text
        assert "invoice.exe" in text and "Release" in text and "Delete" not in text
        assert (await http.get("/quarantine/Q2")).status_code == 404
        assert (await http.get("/api/quarantine/Q2")).status_code == 404
        assert (await http.post("/quarantine/Q2/release", data={"csrf_token": "the-csrf-token"})).status_code == 404
        assert (await http.post("/quarantine/Q1/delete", data={"csrf_token": "the-csrf-token"})).status_code == 403
        detail = (await http.get("/api/quarantine/Q1")).json()
        assert detail["attachments"][0]["filename"] == "invoice.exe" and "<img" not in detail["html"]
        answer = await http.post("/api/quarantine/Q1/release", json={}, headers={"X-CSRF-Token": "the-csrf-token"})
        assert answer.status_code == 200 and answer.json()["released"] == ["alice@example.com"]
        page = await http.post("/quarantine/Q1/release", data={"csrf_token": "the-csrf-token"})
        assert page.status_code == 200 and "Already released to alice@example.com" in page.text
    assert audit.calls.count("write") == 2
    assert store.published == [("Q1", ["alice@example.com"], "user")]


class DownStore(FakeStore):
    async def get(self, qid, *, data=False):
        from mailmoat_records.quarantine import QuarantineUnavailable

        raise QuarantineUnavailable("quarantine database: connection refused")


async def test_an_unavailable_quarantine_is_503_and_changes_nothing():
    http, audit = app_client(quarantine(DownStore()), ROOT)
    async with http:
        answer = await http.post("/api/quarantine/Q1/release", json={}, headers={"X-CSRF-Token": "the-csrf-token"})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert (await http.get("/quarantine/Q1")).status_code == 503
    assert audit.calls == []
