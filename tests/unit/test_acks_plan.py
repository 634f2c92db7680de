"""Which acks may be folded into one multiple-ack (pure)."""

from __future__ import annotations

from mailmoat_platform.acks import plan


def test_a_run_of_finished_deliveries_is_one_multiple_ack() -> None:
    settled: set[int] = set()
    assert plan(0, settled, [2, 1, 3]) == (3, [], 3)
    assert settled == set()


def test_a_gap_keeps_single_acks_until_it_closes() -> None:
    settled: set[int] = set()
    assert plan(0, settled, [1, 3, 4]) == (None, [1, 3, 4], 1)  # 2 is still being handled
    assert settled == {3, 4}
    assert plan(1, settled, [2]) == (None, [2], 4)  # one ack only: nothing else to fold
    assert settled == set()
    assert plan(4, settled, [5, 6, 8]) == (6, [8], 6)


def test_nacked_deliveries_count_as_settled() -> None:
    settled = {1}  # nacked (requeued) by this process: no longer the broker's to ack
    assert plan(0, settled, [2, 3]) == (3, [], 3)


def test_deliveries_settled_elsewhere_only_cost_the_folding() -> None:
    settled: set[int] = set()
    assert plan(0, settled, [5, 6]) == (None, [5, 6], 0)  # 1-4 unknown: never covered by a multiple-ack
