"""Quarantine digests on the real PostgreSQL and RabbitMQ: who is due, what each digest lists, once per period,
a digest left pending by a round that died sent again under the same queue id, one round at a time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy

import psycopg
import pytest

from mailmoat_console.digest import DigestSender
from mailmoat_console.notifylinks import LinkSigner, link_keys
from mailmoat_platform.bus import Bus
from mailmoat_platform.models import Envelope, TraceEvent
from mailmoat_policy import Policy, parse_policy
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from tests.integration.test_quarantine_store import SETTINGS, drain

pytestmark = pytest.mark.integration

POLICY = """
organization: {hostname: gw.example.test}
accepted_domains: [{domain: example.com, route: r}]
routes: {r: {hosts: ["127.0.0.1:25"]}}
quarantine:
  notifications: {enabled: %s, every_hours: 24}
"""
START = datetime.now(UTC).replace(microsecond=0)


class Trace:
    """The trace's records, kept."""

    def __init__(self) -> None:
        self.events: list = []

    async def record(self, events, **keys) -> bool:
        self.events += [events] if isinstance(events, TraceEvent) else list(events)
        return True


def policy(enabled: bool = True) -> Policy:
    return parse_policy(POLICY % ("true" if enabled else "false"), "test")


def message(subject: str) -> bytes:
    return f"From: Shop <s@outside.test>\r\nSubject: {subject}\r\n\r\nbuy now\r\n".encode()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[QuarantineDB]:
    db.upgrade(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE quarantine, console_digests, console_release_requests CASCADE")
    async with db.open_pool(database_url, max_size=3) as pool:
        yield QuarantineDB(database_url, pool=pool)


async def hold(store: QuarantineDB, subject: str, rcpts: list[str], at: datetime, reason: str = "spam") -> str:
    envelope = Envelope(mail_from="s@outside.test", rcpt_to=rcpts, itinerary=["routing", "egress"])
    held, _ = await store.put(envelope, message(subject), reason=reason, result=None, detail="", settings=SETTINGS,
                              now=at.timestamp())
    return held.id


@pytest.fixture
async def routing(amqp_url: str) -> AsyncIterator[tuple[Bus, str]]:
    bus = Bus(amqp_url)
    await bus.connect()
    queue = await bus.declare_stage("routing")
    assert bus.channel is not None
    await (await bus.channel.get_queue(queue)).purge()  # the module's vhost: nothing from an earlier test
    yield bus, queue
    await bus.close()


def sender_for(store: QuarantineDB, bus: Bus, trace: Trace) -> DigestSender:
    async def signer() -> LinkSigner:
        return LinkSigner(await link_keys(store.pool))

    sender = DigestSender(store.pool, signer, bus_factory=lambda: bus, trace_factory=lambda _: trace,
                          console_url="https://console.example.com/")
    sender.close = _keep_open  # the test's bus outlives the sender  # type: ignore[method-assign]
    sender._bus, sender._trace = bus, trace  # connected already: no second connection on the same Bus object
    return sender


async def _keep_open() -> None:
    return None


def text_of(data: bytes) -> str:
    return message_from_bytes(data, policy=email_policy.default).get_content()


async def test_each_recipient_in_an_accepted_domain_gets_what_was_held_since_the_last(
        store: QuarantineDB, routing: tuple[Bus, str]) -> None:
    bus, queue = routing
    trace = Trace()
    first = await hold(store, "pills", ["alice@example.com", "bob@outside.test"], START - timedelta(hours=3))
    malware = await hold(store, "invoice", ["Alice@example.com"], START - timedelta(hours=2), reason="malware")
    await hold(store, "carol's", ["carol@example.com"], START - timedelta(hours=1))
    sender = sender_for(store, bus, trace)

    done = await sender.run(policy(), START)
    assert (done.sent, done.failed, done.skipped) == (2, 0, False)
    sent = {e.rcpt_to[0]: (e, data) for e, data in await drain(bus, queue, 3, timeout=1)}
    assert sorted(sent) == ["alice@example.com", "carol@example.com"]  # bob is not in an accepted domain
    envelope, data = sent["alice@example.com"]
    assert envelope.mail_from == "" and envelope.kind == "dsn" and envelope.itinerary == ["routing", "egress"]
    text = text_of(data)
    assert "pills" in text and "invoice" in text and "carol" not in text
    signer = LinkSigner(await link_keys(store.pool))
    links = [signer.verify(w.rsplit("/", 1)[1]) for w in text.split() if "/notify/" in w]
    assert [(link.qid, link.action) for link in links] == [(first, "view"), (first, "release"), (malware, "view"),
                                                           (malware, "request")]
    assert {envelope.id, sent["carol@example.com"][0].id, first, malware} <= {e.message_id for e in trace.events}
    assert any(e.event == "AGENTINFO" and e.message_id == envelope.id and "digest of 2" in e.detail
               for e in trace.events)

    # within the period: nothing, even with something new held
    assert (await sender.run(policy(), START)).sent == 0
    later = await hold(store, "later", ["alice@example.com"], START + timedelta(hours=1))
    assert (await sender.run(policy(), START + timedelta(hours=2))).sent == 0
    assert await drain(bus, queue, 1, timeout=0.5) == []

    # the next period: only what was held since, and not what was released meanwhile
    released = await hold(store, "released", ["alice@example.com"], START + timedelta(hours=3))
    assert await store.claim(released, ["alice@example.com"], "test") == ["alice@example.com"]
    done = await sender.run(policy(), START + timedelta(hours=25))
    assert done.sent == 1  # carol has nothing new
    ((envelope, data),) = await drain(bus, queue, 2, timeout=1)
    text = text_of(data)
    assert envelope.rcpt_to == ["alice@example.com"] and "later" in text
    assert "pills" not in text and "released" not in text.replace("Release", "")
    assert later in [link.qid for link in (signer.verify(w.rsplit("/", 1)[1]) for w in text.split() if "/notify/" in w)]
    with psycopg.connect(store.pool.conninfo) as conn:
        rows = conn.execute("SELECT recipient, messages, pending_id FROM console_digests ORDER BY recipient").fetchall()
    assert rows == [("alice@example.com", 1, None), ("carol@example.com", 1, None)]


async def test_notifications_off_send_nothing(store: QuarantineDB, routing: tuple[Bus, str]) -> None:
    bus, queue = routing
    await hold(store, "pills", ["alice@example.com"], START - timedelta(hours=1))
    assert (await sender_for(store, bus, Trace()).run(policy(enabled=False), START)).sent == 0
    assert await drain(bus, queue, 1, timeout=0.3) == []


async def test_a_digest_left_pending_is_sent_again_under_its_queue_id(store: QuarantineDB,
                                                                       routing: tuple[Bus, str]) -> None:
    bus, queue = routing
    await hold(store, "pills", ["alice@example.com"], START - timedelta(hours=1))
    sender = sender_for(store, bus, Trace())
    claimed = await sender._claim("alice@example.com", START, timedelta(hours=24))  # then the round died
    assert claimed is not None
    assert (await sender.run(policy(), START + timedelta(minutes=5))).sent == 1
    ((envelope, data),) = await drain(bus, queue, 2, timeout=1)
    assert envelope.id == claimed[0] and "pills" in text_of(data)
    assert (await sender.run(policy(), START + timedelta(minutes=10))).sent == 0


def _wait_until_unlocked(database_url: str, key: int, timeout: float = 10.0) -> None:
    """Wait until the server has let go of the advisory lock ``key``: a closed session's backend ends, and
    its locks with it, a moment after the client has closed the connection."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as probe:
        while probe.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() != (True,):
            assert time.monotonic() < deadline, "the advisory lock outlived its session"
            time.sleep(0.02)
        probe.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def test_one_round_at_a_time(store: QuarantineDB, routing: tuple[Bus, str], database_url: str) -> None:
    from mailmoat_console.digest import LOCK_KEY

    bus, queue = routing
    await hold(store, "pills", ["alice@example.com"], START - timedelta(hours=1))
    with psycopg.connect(database_url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone() == (True,)
        done = await sender_for(store, bus, Trace()).run(policy(), START)
        assert done.skipped and done.sent == 0
    _wait_until_unlocked(database_url, LOCK_KEY)
    started = time.monotonic()
    assert (await sender_for(store, bus, Trace()).run(policy(), START)).sent == 1  # the lock went with the session
    assert time.monotonic() - started < 10
    assert len(await drain(bus, queue, 1, timeout=1)) == 1
