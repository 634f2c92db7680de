"""The quarantine and the trace know who a message is from the way the antispam stage and a mail
client do (the one author parser), on real Redis."""

from __future__ import annotations

import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope, TraceEvent
from mailmoat_policy import Quarantine
from mailmoat_records.quarantine import QuarantineStore
from mailmoat_records.trace import TraceStore

pytestmark = pytest.mark.integration


async def test_held_messages_show_and_match_their_author(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    store = QuarantineStore(client)
    try:
        spoof = Envelope(mail_from="bounce@esp.test", rcpt_to=["a@example.com"])
        data = b'From: "ceo@bank.test" <X@Evil.test>\r\nSubject: s\r\n\r\nbody\r\n'
        held, _ = await store.put(spoof, data, reason="phish", result="phish", detail="", settings=Quarantine())
        odd = Envelope(mail_from="other@esp.test", rcpt_to=["a@example.com"])
        twisted = b"From: x@evil.test)<ceo@bank.test>\r\n\r\nbody\r\n"
        other, _ = await store.put(odd, twisted, reason="spoof", result="spoof", detail="", settings=Quarantine())
        got = await store.get(held.id)
        assert got is not None and got.author == "ceo@bank.test <X@evil.test>" and got.authors == ["x@evil.test"]
        assert [h.id for h in await store.list(sender="x@evil.test")] == [held.id, other.id]
        assert [h.id for h in await store.list(sender="bounce@esp.test")] == [held.id]
        assert [h.id for h in await store.list(sender="ceo@bank.test")] == [other.id]  # what a client shows
        assert await store.list(sender="bank.test") == []
    finally:
        await client.aclose()


async def test_the_trace_finds_a_message_by_its_from_address(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    trace = TraceStore(client)
    try:
        event = TraceEvent(event="SPAM", message_id="Q1", service="antispam", detail="spoof")
        assert await trace.record(event, authors=["ceo@bank.test", "x@evil.test"])
        assert await trace.find("CEO@bank.test") == ["Q1"] and await trace.find("x@evil.test") == ["Q1"]
        assert await trace.find("nobody@bank.test") == []
    finally:
        await client.aclose()
