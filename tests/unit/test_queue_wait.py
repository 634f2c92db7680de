"""How long a delivery waited in its queue, read from the publish time the bus stamps on it."""

from __future__ import annotations

from mailmoat_common.headers import PUBLISHED, queue_wait


def test_wait_since_publish() -> None:
    assert queue_wait({PUBLISHED: 1_000_000}, False, 1_002.5) == 2.5


def test_clock_behind_the_publisher_counts_zero() -> None:
    assert queue_wait({PUBLISHED: 1_000_000}, None, 999.0) == 0.0


def test_not_queue_wait() -> None:
    assert queue_wait({PUBLISHED: 1_000_000}, True, 1_002.0) is None  # a redelivery
    assert queue_wait({PUBLISHED: 1_000_000, "x-death": [{}]}, False, 1_002.0) is None  # from a delay queue
    assert queue_wait({}, False, 1_002.0) is None
    assert queue_wait(None, False, 1_002.0) is None
    for value in ("1000000", b"1", 1.5e6, True, -5, 0, None, [1]):
        assert queue_wait({PUBLISHED: value}, False, 1_002.0) is None, value
