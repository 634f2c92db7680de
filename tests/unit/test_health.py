"""Readiness bookkeeping (health.py): deliveries held and their age, dependencies, the stall bound."""

from __future__ import annotations

import asyncio

from mailmoat_platform.health import Dependency, Held, transaction_bound


def test_held_reports_the_oldest_delivery_without_an_outcome() -> None:
    now = [100.0]
    held = Held(clock=lambda: now[0])
    assert held.oldest_age() == 0 and not held.stalled(1)
    first = held.begin()
    now[0] = 103
    second = held.begin()
    now[0] = 105
    assert held.oldest_age() == 5 and held.stalled(4) and not held.stalled(5)
    held.end(first)
    assert held.oldest_age() == 2 and len(held) == 1
    held.end(second)
    held.end(second)  # ending twice is harmless
    assert held.oldest_age() == 0 and len(held) == 0


def test_dependency_follows_its_probe_and_reports_changes() -> None:
    answers: list[object] = [None, OSError("refused"), asyncio.sleep(5), None]
    changes: list[bool] = []

    async def probe() -> None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            await answer  # type: ignore[misc]

    async def run() -> list[bool]:
        dependency = Dependency("redis", probe, timeout=0.05, on_change=changes.append)
        assert not dependency.up  # down until the first answer
        return [await dependency.check() for _ in range(4)]

    assert asyncio.run(run()) == [True, False, False, True]
    assert changes == [True, False, True]


def test_transaction_bound() -> None:
    assert transaction_bound(30, 120) == 750
    assert transaction_bound(5, 10, commands=2) == 25
