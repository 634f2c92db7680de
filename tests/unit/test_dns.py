"""MX resolution against a local DNS server: preference order, implicit MX, null MX, failures classified."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mailmoat_common.dns import (
    DnsTemporary,
    MxHost,
    NoSuchDomain,
    NullMx,
    ResolverConfig,
    resolve_addresses,
    resolve_mx,
)
from tests.support.dnsserver import DnsServer

ZONE = """
multi.test. 60 IN MX 20 mx2.multi.test.
multi.test. 60 IN MX 10 mx1.multi.test.
multi.test. 60 IN MX 30 mx3.multi.test.
mx1.multi.test. 60 IN A 127.0.0.11
mx2.multi.test. 60 IN A 127.0.0.12
mx2.multi.test. 60 IN AAAA ::1
implicit.test. 60 IN A 127.0.0.20
nomail.test. 60 IN MX 0 .
textonly.test. 60 IN TXT "v=spf1 -all"
"""


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    with DnsServer(ZONE, timeout_names={"slow.test"}, servfail_names={"broken.test"}) as srv:
        yield srv


@pytest.fixture
def config(server: DnsServer) -> ResolverConfig:
    return ResolverConfig(("127.0.0.1",), server.port, 1.0)


async def test_mx_sorted_by_preference(config: ResolverConfig) -> None:
    assert await resolve_mx("multi.test", config) == [
        MxHost(10, "mx1.multi.test"), MxHost(20, "mx2.multi.test"), MxHost(30, "mx3.multi.test"),
    ]


async def test_implicit_mx(config: ResolverConfig) -> None:
    assert await resolve_mx("implicit.test", config) == [MxHost(0, "implicit.test")]


async def test_no_mx_no_address_is_permanent(config: ResolverConfig) -> None:
    with pytest.raises(NoSuchDomain) as info:
        await resolve_mx("textonly.test", config)
    assert info.value.permanent and info.value.status == "5.1.2"


async def test_nxdomain_is_permanent(config: ResolverConfig) -> None:
    with pytest.raises(NoSuchDomain) as info:
        await resolve_mx("missing.test", config)
    assert info.value.permanent and info.value.status == "5.1.2"


async def test_null_mx(config: ResolverConfig) -> None:
    with pytest.raises(NullMx) as info:
        await resolve_mx("nomail.test", config)
    assert info.value.permanent and info.value.status == "5.1.10"


async def test_servfail_is_temporary(config: ResolverConfig) -> None:
    with pytest.raises(DnsTemporary) as info:
        await resolve_mx("broken.test", config)
    assert not info.value.permanent


async def test_timeout_is_temporary_and_bounded(server: DnsServer) -> None:
    started = time.monotonic()
    with pytest.raises(DnsTemporary):
        await resolve_mx("slow.test", ResolverConfig(("127.0.0.1",), server.port, 0.5))
    assert time.monotonic() - started < 3


async def test_addresses_v4_then_v6(config: ResolverConfig) -> None:
    assert await resolve_addresses("mx2.multi.test", config) == ["127.0.0.12", "::1"]
    assert await resolve_addresses("127.0.0.5", config) == ["127.0.0.5"]


async def test_unknown_host_address_nxdomain(config: ResolverConfig) -> None:
    with pytest.raises(NoSuchDomain):
        await resolve_addresses("mx3.multi.test", config)


def test_server_answers_tcp(server: DnsServer) -> None:
    import dns.message
    import dns.query

    query = dns.message.make_query("mx1.multi.test", "A")
    response = dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=2)
    assert [str(rr) for rrset in response.answer for rr in rrset] == ["127.0.0.11"]
