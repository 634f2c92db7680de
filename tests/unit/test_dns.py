"""DNS look-ups against a local DNS server: MX order, implicit and null MX, TXT, PTR, failures classified."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mailmoat_mail.dns import (
    DnsTemporary,
    MxHost,
    NoSuchDomain,
    NullMx,
    ResolverConfig,
    config_from,
    lookup,
    resolve_addresses,
    resolve_mx,
    resolve_ptr,
    resolve_txt,
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
long.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 " "-all"
11.0.0.127.in-addr.arpa. 60 IN PTR mx1.multi.test.
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. 60 IN PTR localhost.
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



async def test_server_from_dict_and_added_records() -> None:
    records = {"dict.test": {"MX": ["5 mx.dict.test."]}, "mx.dict.test.": {"A": ["127.0.0.77"]}}
    with DnsServer(records=records) as srv:
        config = ResolverConfig(("127.0.0.1",), srv.port, 1.0)
        assert await resolve_mx("dict.test", config) == [MxHost(5, "mx.dict.test")]
        assert await resolve_addresses("mx.dict.test", config) == ["127.0.0.77"]
        srv.add_zone("late.test. 60 IN A 127.0.0.78")
        assert await resolve_addresses("late.test", config) == ["127.0.0.78"]
        assert ("late.test.", "A") in srv.queries


async def test_stopped_server_is_a_temporary_failure() -> None:
    srv = DnsServer("x.test. 60 IN A 127.0.0.1").start()
    config = ResolverConfig(("127.0.0.1",), srv.port, 0.3)
    assert await resolve_addresses("x.test", config) == ["127.0.0.1"]
    srv.stop()
    with pytest.raises(DnsTemporary):
        await resolve_addresses("x.test", config)


async def test_txt_strings_joined(config: ResolverConfig) -> None:
    assert await resolve_txt("long.test", config) == ["v=spf1 ip4:192.0.2.0/24 -all"]
    assert await resolve_txt("implicit.test", config) == []
    with pytest.raises(NoSuchDomain):
        await resolve_txt("missing.test", config)
    with pytest.raises(DnsTemporary):
        await resolve_txt("broken.test", config)


async def test_ptr(config: ResolverConfig) -> None:
    assert await resolve_ptr("127.0.0.11", config) == ["mx1.multi.test"]
    assert await resolve_ptr("::1", config) == ["localhost"]
    assert await resolve_ptr("127.0.0.99", config) == []


async def test_generic_lookup(config: ResolverConfig) -> None:
    assert sorted(await lookup("multi.test", "MX", config)) == [
        "10 mx1.multi.test.", "20 mx2.multi.test.", "30 mx3.multi.test.",
    ]
    assert await lookup("implicit.test", "AAAA", config) == []


def test_config_from_policy() -> None:
    from mailmoat_policy import Policy

    policy = Policy.model_validate({"dns": {"nameservers": ["127.0.0.1"], "port": 5353, "timeout": 2}})
    assert config_from(policy.dns) == ResolverConfig(("127.0.0.1",), 5353, 2.0)
