"""The trace listed by date range and status alone (EOP's trace of every message in a range) on PostgreSQL: for
administrators and the help desk, newest first and paged through the API and the page, the last two days when no
date is given; an end user still sees only their own mailboxes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest

from mailmoat_console.core import Console
from mailmoat_console.rights import Role
from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_records.tracedb import TraceRecord, TraceWriter
from tests.integration import test_console as base
from tests.integration.test_console import account, api_sign_in, http

pytestmark = pytest.mark.integration
migrated, redis_client, console = base.migrated, base.redis_client, base.console  # the fixtures


async def write(console: Console, at: datetime, rcpt: str, outcome: str) -> str:
    """A message received at ``at`` for ``rcpt`` whose copy ended ``outcome`` (DELIVER, FAIL, DEFER)."""
    mid = new_message_id()
    await TraceWriter(console.search.reader.pool).write([
        TraceRecord(events=[TraceEvent(event="RECEIVE", message_id=mid, service="ingress", at=at, recipients=[rcpt],
                                       detail="from 203.0.113.9")],
                    sender="s@range.test", recipients=[rcpt], message_id_header=f"<{mid.lower()}@t>",
                    client_ip="203.0.113.9"),
        TraceRecord(events=[TraceEvent(event=outcome, message_id=mid, service="egress", at=at + timedelta(seconds=2),
                                       recipients=[rcpt], detail=f"{outcome.lower()} {rcpt}")])])
    return mid


def far_day() -> datetime:
    """A day of this test's own, years ahead (no other test's messages in it)."""
    return datetime(2040, 1, 1, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 3000)


async def test_a_range_by_status_alone_in_the_api_and_the_page(console: Console):
    day = far_day()
    domain = f"{uuid.uuid4().hex[:8]}.example"
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    written: list[tuple[datetime, str, str]] = []  # (received, queue id, outcome)
    to_alice: list[str] = []
    for n in range(14):
        at = day + timedelta(hours=n * 3, seconds=n)
        outcome = "FAIL" if n % 3 == 0 else "DELIVER"
        written.append((at, await write(console, at, alice if n % 2 else bob, outcome), outcome))
        if n % 2:
            to_alice.insert(0, written[-1][1])
    outside = await write(console, day + timedelta(days=2), alice, "FAIL")  # after the range
    newest_first = [mid for _, mid, _ in sorted(written, reverse=True)]
    failed = [mid for at, mid, outcome in sorted(written, reverse=True) if outcome == "FAIL"]
    since, until = day.isoformat(), (day + timedelta(days=2)).isoformat()
    desk, user = await account(console, Role.helpdesk), await account(console, Role.user, [alice])

    async with http(console) as client:
        await api_sign_in(client, desk)
        seen, after, pages = [], None, 0
        while True:
            params = {"since": since, "until": until, "limit": 4, **({"after": after} if after else {})}
            page = (await client.get("/api/trace", params=params)).json()
            assert page["looked_up"] == "range"
            seen += [m["message_id"] for m in page["messages"]]
            pages, after = pages + 1, page["next"]
            if after is None:
                break
            assert pages < 10
        assert seen == newest_first and pages == 4 and outside not in seen
        found = (await client.get("/api/trace", params={"since": since, "until": until, "status": "FAIL"})).json()
        assert [m["message_id"] for m in found["messages"]] == failed and found["next"] is None
        assert all(m["statuses"] == ["FAIL"] for m in found["messages"])
        mine = (await client.get("/api/trace", params={"since": since, "until": until, "status": "DELIVER",
                                                       "sender": "s@range.test", "limit": 200})).json()
        assert mine["looked_up"] == "sender"  # a look-up field given: the index of that field, as before
        assert [m["message_id"] for m in mine["messages"]] == [
            mid for _, mid, outcome in sorted(written, reverse=True) if outcome == "DELIVER"]

        # the page: the form's dates are days (the 'to' day included); the range said; older pages linked
        listing = await client.get("/trace", params={"since": f"{day:%Y-%m-%d}",
                                                     "until": f"{day + timedelta(days=1):%Y-%m-%d}", "status": "FAIL"})
        assert listing.status_code == 200
        assert f"Every message received from {day:%Y-%m-%d} 00:00 to {day + timedelta(days=2):%Y-%m-%d} 00:00 UTC" \
            in listing.text and "status FAIL" in listing.text
        assert re.findall(r'href="/trace/([0-9A-Z]{26})"', listing.text) == failed
        listing = await client.get("/trace", params={"since": f"{day:%Y-%m-%d}",
                                                     "until": f"{day + timedelta(days=1):%Y-%m-%d}"})
        first = re.findall(r'href="/trace/([0-9A-Z]{26})"', listing.text)
        assert first == newest_first  # 14 of at most 50 a page
        assert 'class="next"' not in listing.text

        # no date: the last two days, said on the page
        recent = await write(console, datetime.now(UTC) - timedelta(hours=47), bob, "DEFER")
        older = await write(console, datetime.now(UTC) - timedelta(hours=49), bob, "DEFER")
        listed, after = [], None
        for _ in range(50):
            page = (await client.get("/api/trace", params={"status": "DEFER", "limit": 200,
                                                           **({"after": after} if after else {})})).json()
            listed += [m["message_id"] for m in page["messages"]]
            after = page["next"]
            if after is None:
                break
        assert recent in listed and older not in listed
        bare = await client.get("/trace")  # nothing asked yet: the hint, no listing
        assert "table class=\"results\"" not in bare.text and "the last 2 days" in bare.text
        empty_form = await client.get("/trace", params={"sender": "", "recipient": "", "status": "DEFER"})
        assert "(no start date given: the last 2 days)" in unescape(empty_form.text) and recent in empty_form.text

    async with http(console) as client:  # an end user: still their own mailbox only
        await api_sign_in(client, user)
        theirs = (await client.get("/api/trace", params={"since": since, "until": until, "limit": 200})).json()
        assert theirs["looked_up"] == "recipient"
        assert [m["message_id"] for m in theirs["messages"]] == to_alice
