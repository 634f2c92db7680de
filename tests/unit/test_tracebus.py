"""Trace records onto the bus: group commit into confirmed publishes, the batch body, failures."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from mailmoat_platform.models import TraceEvent
from mailmoat_records.trace import TraceRecord, decode_batch, encode_batch, make_record
from mailmoat_records.tracebus import OLDEST_HEADER, TracePublisher, chunks


def _event(mid: str, name: str = "RECEIVE", **fields: object) -> TraceEvent:
    return TraceEvent(event=name, message_id=mid, service="ingress", **fields)  # type: ignore[arg-type]


class FakeBroker:
    """Records each publish; confirms when ``gate`` is set (at once by default) or fails."""

    def __init__(self, fail: bool = False):
        self.sent: list[tuple[list[TraceRecord], dict[str, object]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail

    async def send(self, body: bytes, headers: dict[str, object]) -> None:
        self.sent.append((decode_batch(body), headers))
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("broker gone")


def test_batch_body_round_trips_every_field() -> None:
    at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    record = make_record(
        [_event("A", at=at, recipients=["r@x.org"], detail="from 192.0.2.1", data={"tls": True, "n": [1, "é"]}),
         _event("A", "DELIVER")],
        sender="", recipients=["r@x.org"], message_id_header="<m@x>", client_ip="192.0.2.1", authors=["", "f@x"])
    assert record.authors == ["f@x"]  # empty author values left out, as the Redis store leaves them
    body = encode_batch([record, TraceRecord(events=[_event("B")])])
    back = decode_batch(body)
    assert back[0] == record and back[0].events[0].at == at and back[0].sender == ""
    assert back[1].sender is None
    assert isinstance(json.loads(body), list)
    with pytest.raises(ValueError):
        decode_batch(b'{"not": "a list"}')
    with pytest.raises(ValueError):
        decode_batch(b"\xff")


def test_chunks_keep_order_and_bound() -> None:
    assert chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]  # type: ignore[arg-type]
    assert chunks([], 3) == []


async def test_records_of_one_moment_go_in_one_confirmed_publish() -> None:
    broker = FakeBroker()
    publisher = TracePublisher(broker.send)
    results = await asyncio.gather(*(publisher.record(_event(f"M{i}"), sender=f"s{i}@x") for i in range(50)))
    assert results == [True] * 50
    assert len(broker.sent) == 1
    records, headers = broker.sent[0]
    assert [r.events[0].message_id for r in records] == [f"M{i}" for i in range(50)]
    assert records[7].sender == "s7@x"
    assert isinstance(headers[OLDEST_HEADER], int)
    assert publisher.batches == 1 and publisher.records == 50


async def test_record_returns_only_after_the_confirm_and_records_queue_for_the_next_publish() -> None:
    broker = FakeBroker()
    broker.gate.clear()
    publisher = TracePublisher(broker.send)
    first = asyncio.create_task(publisher.record(_event("A")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(broker.sent) == 1 and not first.done()  # published, not confirmed: the caller still waits
    later = [asyncio.create_task(publisher.record(_event(f"B{i}"))) for i in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(broker.sent) == 1  # they wait for the publish in flight, then go together
    broker.gate.set()
    assert await first is True
    assert await asyncio.gather(*later) == [True, True, True]
    assert [len(records) for records, _ in broker.sent] == [1, 3]


async def test_a_burst_is_split_into_messages_of_at_most_max_records() -> None:
    broker = FakeBroker()
    publisher = TracePublisher(broker.send, max_records=200)
    assert all(await asyncio.gather(*(publisher.record(_event(f"M{i}")) for i in range(450))))
    assert sorted(len(records) for records, _ in broker.sent) == [50, 200, 200]
    sent = [r.events[0].message_id for records, _ in broker.sent for r in records]
    assert sorted(sent) == sorted(f"M{i}" for i in range(450))


async def test_a_failed_publish_returns_false_at_once_and_its_records_are_published_later() -> None:
    broker = FakeBroker(fail=True)
    publisher = TracePublisher(broker.send, retry_delays=(0.01,))
    assert await asyncio.gather(publisher.record(_event("A")), publisher.record(_event("B"))) == [False, False]
    assert publisher.waiting == 2 and publisher.failures == 0
    await asyncio.sleep(0.05)  # retries while the broker still refuses: nothing lost, nothing sent twice
    assert publisher.waiting == 2
    broker.fail = False
    for _ in range(200):  # bounded: the retrier publishes them within its next delay
        if not publisher.waiting:
            break
        await asyncio.sleep(0.01)
    assert publisher.waiting == 0 and publisher.failures == 0
    assert await publisher.record(_event("C")) is True
    confirmed = [[r.events[0].message_id for r in records] for records, _ in broker.sent]
    assert confirmed[-2:] == [["A", "B"], ["C"]]


async def test_records_beyond_the_waiting_bound_and_those_waiting_at_the_end_are_counted_lost() -> None:
    broker = FakeBroker(fail=True)
    publisher = TracePublisher(broker.send, max_waiting=3, retry_delays=(60.0,))
    results = await asyncio.gather(*(publisher.record(_event(f"M{i}")) for i in range(5)))
    assert results == [False] * 5
    assert publisher.waiting == 3 and publisher.failures == 2
    await publisher.drain()  # one last try, refused: the waiting ones are lost too
    assert publisher.waiting == 0 and publisher.failures == 5


async def test_drain_publishes_what_waits_when_the_broker_is_back() -> None:
    broker = FakeBroker(fail=True)
    publisher = TracePublisher(broker.send, retry_delays=(60.0,))
    assert await publisher.record(_event("A")) is False
    broker.fail = False
    await publisher.drain()
    assert publisher.waiting == 0 and publisher.failures == 0
    assert [r.events[0].message_id for r in broker.sent[-1][0]] == ["A"]


async def test_nothing_to_record_publishes_nothing() -> None:
    broker = FakeBroker()
    publisher = TracePublisher(broker.send)
    assert await publisher.record([]) is True
    await publisher.drain()
    assert broker.sent == []


async def test_a_linger_gathers_the_records_of_a_few_milliseconds_into_one_publish() -> None:
    broker = FakeBroker()
    publisher = TracePublisher(broker.send, linger=0.05)
    first = asyncio.ensure_future(publisher.record(_event("A")))
    await asyncio.sleep(0.01)  # within the linger: goes with A
    second = asyncio.ensure_future(publisher.record(_event("B")))
    assert await asyncio.gather(first, second) == [True, True]
    assert [[r.events[0].message_id for r in records] for records, _ in broker.sent] == [["A", "B"]]
    eager = TracePublisher(broker.send)  # no linger: C goes on the next turn of the loop, alone
    first = asyncio.ensure_future(eager.record(_event("C")))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(eager.record(_event("D")))
    await asyncio.gather(first, second)
    assert [[r.events[0].message_id for r in records] for records, _ in broker.sent[1:]] == [["C"], ["D"]]


async def test_a_linger_ends_once_flush_at_records_are_queued() -> None:
    broker = FakeBroker()
    publisher = TracePublisher(broker.send, linger=30.0, flush_at=3)  # a linger the test would never outwait
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = [asyncio.ensure_future(publisher.record(_event(mid))) for mid in ("A", "B")]
    await asyncio.sleep(0.05)
    assert broker.sent == []  # two of three: still lingering
    third = asyncio.ensure_future(publisher.record(_event("C")))
    assert await asyncio.wait_for(asyncio.gather(*first, third), 5) == [True, True, True]
    assert loop.time() - started < 5
    assert [[r.events[0].message_id for r in records] for records, _ in broker.sent] == [["A", "B", "C"]]
    assert publisher._full is None  # the linger's timer and future are gone with it
    with pytest.raises(ValueError):
        TracePublisher(broker.send, max_records=0)
    assert TracePublisher(broker.send, max_records=10, flush_at=50).flush_at == 10  # never above max_records
