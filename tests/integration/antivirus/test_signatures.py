"""clamd's VERSION through the client, and clamd's health as a metric, against a real clamd."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from mailmoat_antivirus.clamd import ClamdClient, ClamdUnavailable
from mailmoat_antivirus.signatures import SignatureAge, export_health, signature_date
from tests.support.clamd import ClamdServer

pytestmark = pytest.mark.integration


async def test_version_names_the_engine_and_its_database(clamd: ClamdServer) -> None:
    client = ClamdClient(f"127.0.0.1:{clamd.port}")
    reply = await client.version()
    assert reply.startswith(b"ClamAV ")
    age = SignatureAge("test-version")
    age.seen(reply)  # this clamd's database is two hashes, no dated .cvd: a date only when it says one
    assert (age.date is None) == (signature_date(reply) is None)


async def test_health_follows_the_last_exchange(clamd: ClamdServer) -> None:
    client = ClamdClient(f"127.0.0.1:{clamd.port}", connect_timeout=1)
    export_health("test-health", lambda: client.available)

    def up() -> float | None:
        return REGISTRY.get_sample_value("mailmoat_dependency_up", {"service": "test-health", "dependency": "clamd"})

    assert up() == 0.0  # not asked yet
    assert await client.ping()
    assert up() == 1.0
    clamd.stop()
    try:
        with pytest.raises(ClamdUnavailable):
            await client.version()
        assert up() == 0.0
    finally:
        clamd.start()
