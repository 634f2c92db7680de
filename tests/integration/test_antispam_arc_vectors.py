"""dkimpy's own ARC test vectors (dkim/tests/test_arc.py and data/, dkimpy 1.1.8) through the stage's
ARC verification, with the sealer's key served by a DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat_antispam.auth import AuthResolver
from mailmoat_antispam.auth.dkimverify import verify_arc
from mailmoat_mail.dns import ResolverConfig
from tests.support.dkimkeys import txt_zone
from tests.support.dnsserver import DnsServer

DATA = Path(__file__).resolve().parents[1] / "data" / "dkim"
MESSAGE = (DATA / "arc-test.message").read_bytes()
KEY_RECORD = (DATA / "test.txt").read_text().strip()


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(txt_zone("test._domainkey.example.com", KEY_RECORD)) as server:
        yield server


def _resolver(dns: DnsServer) -> AuthResolver:
    return AuthResolver(ResolverConfig(("127.0.0.1",), dns.port, 1.0))


async def test_dkimpy_arc_seal_verifies(dns: DnsServer) -> None:
    """test_signs_and_verifies: the seal dkimpy produces for test.message (t=12345) validates."""
    result = await verify_arc((DATA / "arc-pass.seal").read_bytes() + MESSAGE, _resolver(dns))
    assert (result.result, result.instances, result.sealers) == ("pass", 1, ("example.com",))


async def test_dkimpy_arc_seal_with_h_tag_fails(dns: DnsServer) -> None:
    """test_fails_h_in_as: RFC 8617 4.1.3, an ARC-Seal may not carry h=."""
    result = await verify_arc((DATA / "arc-h-in-as.seal").read_bytes() + MESSAGE, _resolver(dns))
    assert result.result == "fail"


async def test_dkimpy_arc_seal_fails_when_the_message_changed(dns: DnsServer) -> None:
    changed = MESSAGE.replace(b"Subject:", b"Subject: [changed]", 1)
    assert changed != MESSAGE
    result = await verify_arc((DATA / "arc-pass.seal").read_bytes() + changed, _resolver(dns))
    assert result.result == "fail"
