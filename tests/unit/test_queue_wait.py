"""How long a delivery waited in its queue, read from the publish time the bus stamps on it."""

from __future__ import annotations

from datetime import UTC, datetime

from mailmoat_mail.headers import PUBLISHED, queue_wait


def test_wait_since_publish() -> None:
    assert queue_wait({PUBLISHED: 1_000_000}, False, 1_002.5) == 2.5


def test_clock_behind_the_publisher_counts_zero() -> None:
    assert queue_wait({PUBLISHED: 1_000_000}, None, 999.0) == 0.0


def test_not_queue_wait() -> None:
    assert queue_wait({PUBLISHED: 1_000_000}, True, 1_002.0) is None  # a redelivery
    assert queue_wait({PUBLISHED: 1_000_000, "x-death": [{}]}, False, 1_002.0) is None  # unreadable x-death
    assert queue_wait({}, False, 1_002.0) is None
    assert queue_wait(None, False, 1_002.0) is None
    for value in ("1000000", b"1", 1.5e6, True, -5, 0, None, [1]):
        assert queue_wait({PUBLISHED: value}, False, 1_002.0) is None, value


def test_back_from_a_delay_queue_or_carrying_an_old_x_death() -> None:
    def death(at: float) -> list[dict[str, object]]:
        return [{"count": 1, "reason": "expired", "queue": "mailmoat.egress.retry.1s",
                 "time": datetime.fromtimestamp(at, UTC)}]

    # Published to the delay queue at 1000.4 s, dead-lettered back at 1001 s: the wait was the delay.
    assert queue_wait({PUBLISHED: 1_000_400, "x-death": death(1001)}, False, 1_001.2) is None
    # A copy republished at 1003.5 s with the x-death of an earlier return: its queue wait counts.
    assert queue_wait({PUBLISHED: 1_003_500, "x-death": death(1001)}, False, 1_004.0) == 0.5
    naive = [{"time": datetime(1970, 1, 1, 0, 16, 41)}]  # 1001 s, without a zone: read as UTC
    assert queue_wait({PUBLISHED: 1_000_400, "x-death": naive}, False, 1_001.2) is None
