"""The quarantine's size by reason on real Redis: counted on hold, uncounted once on delete and on
expiry (pruned), never twice for a message held again or deleted twice."""

from __future__ import annotations

import time

import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope
from mailmoat_policy import Quarantine
from mailmoat_records.quarantine import INDEX, KEY, QuarantineStore

pytestmark = pytest.mark.integration

SETTINGS = Quarantine.model_validate({"retention": {"default_days": 20, "spam_days": 3}})


def envelope() -> Envelope:
    return Envelope(mail_from="s@sender.test", rcpt_to=["a@example.com"], itinerary=["routing", "egress"])


@pytest.fixture
async def store(redis_url: str):
    client = redisclient.from_url(redis_url)
    yield QuarantineStore(client)
    await client.aclose()


async def hold(store: QuarantineStore, reason: str, size: int, env: Envelope | None = None) -> Envelope:
    env = env or envelope()
    await store.put(env, b"x" * size, reason=reason, result=None, detail="", settings=SETTINGS)
    return env


async def test_counts_follow_hold_delete_and_expiry(store: QuarantineStore) -> None:
    assert await store.totals() == {}
    first = await hold(store, "spam", 100)
    await hold(store, "spam", 50)
    malware = await hold(store, "malware", 7)
    await hold(store, "spam", 100, first)  # held already: not counted again
    assert await store.totals() == {"spam": (2, 150), "malware": (1, 7)}
    assert await store.delete(first.id)
    assert not await store.delete(first.id)
    assert await store.totals() == {"spam": (1, 50), "malware": (1, 7)}
    # The malware hold's retention ends (its key expires, the index entry is due): pruned, uncounted.
    await store.client.delete(KEY + malware.id)
    await store.client.zadd(INDEX, {malware.id: time.time() - 1})
    assert await store.totals() == {"spam": (1, 50), "malware": (0, 0)}
    # An id held again after its earlier hold expired unpruned is counted once, with its new reason.
    await store.client.delete(KEY + malware.id)
    await hold(store, "rule", 9, malware)
    assert await store.totals() == {"spam": (1, 50), "malware": (0, 0), "rule": (1, 9)}


async def test_prune_in_batches(store: QuarantineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailmoat_records.quarantine.PRUNE_BATCH", 2)
    held = [await hold(store, "bulk", 10) for _ in range(5)]
    await store.client.zadd(INDEX, {env.id: time.time() - 1 for env in held})
    assert await store.prune() == 5
    assert await store.totals() == {"bulk": (0, 0)}
