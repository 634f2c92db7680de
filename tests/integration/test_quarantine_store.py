"""The quarantine store on real Redis, releases through real RabbitMQ."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.bus import Bus, decode, stage_queue
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import Quarantine
from mailmoat_records.quarantine import (
    INDEX,
    KEY,
    RELEASED,
    QuarantineStore,
    ReleaseError,
    admin_notice,
    release,
)
from mailmoat_records.trace import TraceStore

pytestmark = pytest.mark.integration

DATA = b"From: s@sender.test\r\nSubject: held\r\n\r\nbody \xff bytes\r\n"
SETTINGS = Quarantine.model_validate({"retention": {"default_days": 20, "spam_days": 3},
                                      "release_by": {"malware": "admin", "blocked-type": "user"}})


def envelope(**kw) -> Envelope:
    base = dict(mail_from="s@sender.test", rcpt_to=["a@example.com", "B@example.com"],
                itinerary=["antivirus", "routing", "egress"], message_id_header="<m@sender.test>")
    base.update(kw)
    env = Envelope(**base)
    env.add_verdict(Verdict(stage="antivirus", result="malware", detail={"names": ["Eicar-Test-Signature"]}))
    return env


@pytest.fixture
async def store(redis_url: str):
    client = redisclient.from_url(redis_url)
    yield QuarantineStore(client)
    await client.aclose()


async def drain(bus: Bus, queue: str, want: int, timeout: float = 10) -> list[tuple[Envelope, bytes]]:
    assert bus.channel is not None
    q = await bus.channel.get_queue(queue)
    got: list[tuple[Envelope, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        message = await q.get(fail=False, no_ack=True)
        if message is None:
            await asyncio.sleep(0.05)
        else:
            got.append(decode(message.body))
    return got


async def test_put_is_idempotent_and_keeps_bytes_with_ttl(store: QuarantineStore) -> None:
    env = envelope()
    held, created = await store.put(env, DATA, reason="malware", result="malware", detail="Eicar",
                                    settings=SETTINGS)
    assert created and held.id == env.id and held.release_by == "admin"
    _, created = await store.put(env, b"other", reason="malware", result="malware", detail="x",
                                     settings=SETTINGS)
    assert not created
    got = await store.get(env.id, data=True)
    assert got is not None and got.data == DATA and got.envelope == env and got.detail == "Eicar"
    assert got.verdicts["antivirus"]["detail"]["names"] == ["Eicar-Test-Signature"]
    ttl = await store.client.ttl(KEY + env.id)
    assert 19 * 86400 < ttl <= 20 * 86400 + 1
    spam, _ = await store.put(envelope(), DATA, reason="spam", result="spam", detail="SCL 6", settings=SETTINGS)
    assert 2 * 86400 < await store.client.ttl(KEY + spam.id) <= 3 * 86400 + 1
    assert spam.release_by == "user"
    blocked, _ = await store.put(envelope(), DATA, reason="malware", result="blocked-type", detail="exe",
                                 settings=SETTINGS)
    assert blocked.release_by == "user"  # its result is listed before its category


async def test_list_filters_and_prune(store: QuarantineStore) -> None:
    now = time.time()
    a, _ = await store.put(envelope(), DATA, reason="malware", result="malware", detail="", settings=SETTINGS,
                           now=now - 100)
    b, _ = await store.put(envelope(mail_from="x@other.test", rcpt_to=["c@example.com"]), DATA, reason="spam",
                           result="spam", detail="", settings=SETTINGS, now=now)
    assert [h.id for h in await store.list()] == [a.id, b.id]
    assert [h.id for h in await store.list(recipient="b@EXAMPLE.com")] == [a.id]
    assert [h.id for h in await store.list(sender="x@other.test")] == [b.id]
    assert [h.id for h in await store.list(reason="spam")] == [b.id]
    assert [h.id for h in await store.list(since=now - 50)] == [b.id]
    assert [h.id for h in await store.list(until=now - 50)] == [a.id]
    # an id whose record expired is pruned from the index
    await store.client.zadd(INDEX, {"GONE": now - 1})
    assert await store.prune() == 1
    assert "GONE" not in await store.ids()
    assert await store.delete(a.id) and not await store.delete(a.id)
    assert [h.id for h in await store.list()] == [b.id]


async def test_release_once_per_recipient_through_the_bus(store: QuarantineStore, amqp_url: str) -> None:
    bus = Bus(amqp_url)
    await bus.connect()
    routing = await bus.declare_stage("routing")
    trace = TraceStore(store.client)
    env = envelope()
    held, _ = await store.put(env, DATA, reason="malware", result="malware", detail="Eicar", settings=SETTINGS)

    with pytest.raises(ReleaseError, match="only an administrator"):
        await release(store, bus, trace, held.id, role="user")
    with pytest.raises(ReleaseError, match="not a recipient"):
        await release(store, bus, trace, held.id, recipients=["z@example.com"])
    with pytest.raises(ReleaseError, match="no quarantined message"):
        await release(store, bus, trace, "NOPE")

    first = await release(store, bus, trace, held.id, recipients=["b@example.com"], who="admin test")
    assert first.recipients == ["B@example.com"] and first.already == []
    # concurrent releases of the rest: exactly one of them releases a@example.com
    results = await asyncio.gather(*(release(store, bus, trace, held.id) for _ in range(5)))
    assert sorted(r for res in results for r in res.recipients) == ["a@example.com"]
    assert all("B@example.com" in res.already for res in results)

    got = await drain(bus, routing, 3, timeout=5)
    assert sorted(tuple(e.rcpt_to) for e, _ in got) == [("B@example.com",), ("a@example.com",)]
    for released, data in got:
        assert data == DATA and released.id == env.id and released.released_from == held.id
        assert released.verdicts == env.verdicts and released.itinerary == env.itinerary
    events = [e for e in await trace.events(env.id) if e.event == "RELEASE"]
    assert [e.recipients for e in events] in ([["B@example.com"], ["a@example.com"]],)
    shown = await store.get(held.id)
    assert shown is not None and shown.pending == [] and set(shown.released) == {"a@example.com", "b@example.com"}
    assert await store.client.ttl(RELEASED + held.id) > 0
    await bus.close()


async def test_failed_publish_undoes_the_release(store: QuarantineStore, amqp_url: str) -> None:
    bus = Bus(amqp_url)  # never connected: publishing fails
    held, _ = await store.put(envelope(), DATA, reason="hcspam", result="hcspam", detail="", settings=SETTINGS)
    with pytest.raises(RuntimeError):
        await release(store, bus, TraceStore(store.client), held.id)
    again = await store.get(held.id)
    assert again is not None and again.released == {}


def test_admin_notice() -> None:
    from mailmoat_records.quarantine import Held

    env = envelope()
    held = Held(id=env.id, envelope=env, reason="malware", result="malware", detail="malware detected",
                created=0, expires=86400, release_by="admin",
                verdicts={"antivirus": {"detail": {"names": ["Eicar-Test-Signature"]}}})
    notice, data = admin_notice(held, "sec@example.com", "gw.test")
    assert notice.rcpt_to == ["sec@example.com"] and notice.mail_from == "" and notice.id == env.id + "A"
    assert notice.itinerary == ["routing", "egress"] and stage_queue("routing") == "mailmoat.routing"
    assert b"Eicar-Test-Signature" in data and env.id.encode() in data and b"\r\n\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")
