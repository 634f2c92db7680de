"""The recorder's holdings: whole deliveries per batch, oldest first; lag; backoff."""

from __future__ import annotations

from mailmoat_platform.models import TraceEvent
from mailmoat_recorder.inbox import Held, Inbox, backoff, records_of
from mailmoat_records.trace import TraceRecord


def _held(name: str, records: int, since: float) -> Held:
    return Held(name, [TraceRecord(events=[TraceEvent(event="X", message_id=f"{name}{i}", service="s")] * 2)
                       for i in range(records)], since)


def test_take_hands_out_whole_deliveries_up_to_the_bound_at_least_one() -> None:
    inbox = Inbox()
    for name, count, since in (("a", 150, 10.0), ("b", 100, 11.0), ("c", 30, 12.0), ("d", 500, 13.0)):
        inbox.add(_held(name, count, since))
    assert inbox.records == 780
    first = inbox.take(300)
    assert [h.message for h in first] == ["a", "b", "c"]  # 280: d would exceed 300
    assert [h.message for h in inbox.take(300)] == ["d"]  # larger than the bound alone: still taken
    assert inbox.take(300) == []
    assert len(inbox) == 4 and inbox.held_records() == 780  # being written still counts as held
    assert first[0].events == 300 and len(records_of(first)) == 280


def test_lag_is_the_age_of_the_oldest_record_held_waiting_or_being_written() -> None:
    inbox = Inbox()
    assert inbox.lag(100.0) == 0.0
    inbox.add(_held("a", 1, 40.0))
    inbox.add(_held("b", 1, 70.0))
    batch = inbox.take(1)
    assert inbox.lag(100.0) == 60.0  # a is being written (or failing to be): still unwritten
    inbox.done(batch)
    assert inbox.lag(100.0) == 30.0
    inbox.done(inbox.take(10))
    assert inbox.lag(100.0) == 0.0 and len(inbox) == 0


def test_backoff_doubles_to_a_cap() -> None:
    assert [backoff(n) for n in range(8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
