"""Route → hosts: smart hosts as listed; MX looked up through a local DNS server, failures classified."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat_egress.delivery import Target
from mailmoat_egress.targets import MX_ADDRESS_LIMIT, NoRoute, targets_for
from mailmoat_platform.models import Route
from mailmoat_policy import Policy
from tests.support.dnsserver import DnsServer

ZONE = """
two.test. 60 IN MX 20 mx2.two.test.
two.test. 60 IN MX 10 mx1.two.test.
mx1.two.test. 60 IN A 127.0.0.11
mx1.two.test. 60 IN A 127.0.0.12
mx2.two.test. 60 IN A 127.0.0.13
half.test. 60 IN MX 10 gone.half.test.
half.test. 60 IN MX 20 slowmx.half.test.
half.test. 60 IN MX 30 ok.half.test.
ok.half.test. 60 IN A 127.0.0.30
dangling.test. 60 IN MX 10 gone.dangling.test.
stuck.test. 60 IN MX 10 slowmx.stuck.test.
implicit.test. 60 IN A 127.0.0.40
nomail.test. 60 IN MX 0 .
self.test. 60 IN MX 10 mx.self.test.
mx.self.test. 60 IN A 127.0.0.1
mixed.test. 60 IN MX 10 lo.mixed.test.
mixed.test. 60 IN MX 20 out.mixed.test.
lo.mixed.test. 60 IN A 127.0.0.1
lo.mixed.test. 60 IN AAAA ::1
out.mixed.test. 60 IN A 192.0.2.5
zero.test. 60 IN A 0.0.0.0
mapped.test. 60 IN MX 10 mx.mapped.test.
mx.mapped.test. 60 IN AAAA ::ffff:7f00:2
"""


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    records = {"many.test": {"MX": [f"{n} mx{n}.many.test." for n in range(8)]}}
    records.update({f"mx{n}.many.test": {"A": [f"127.0.1.{n}"]} for n in range(8)})
    with DnsServer(ZONE, records, servfail_names={"broken.test", "slowmx.half.test", "slowmx.stuck.test"}) as srv:
        yield srv


@pytest.fixture
def policy(server: DnsServer) -> Policy:
    return Policy.model_validate({"dns": {"nameservers": ["127.0.0.1"], "port": server.port, "timeout": 1},
                                  "outbound": {"mx_port": 2526, "mx_loopback": True}})


def _mx(domain: str) -> Route:
    return Route(name=f"mx:{domain}", kind="mx", domain=domain)


async def test_smarthosts_in_order(policy: Policy) -> None:
    route = Route(name="onprem", kind="smarthost", hosts=["a.example:2525", "b.example", "[::1]:26"])
    assert await targets_for(route, policy) == [
        Target("a.example", 2525, "a.example"), Target("b.example", 25, "b.example"), Target("::1", 26, "::1"),
    ]


async def test_mx_by_preference_with_every_address(policy: Policy) -> None:
    assert await targets_for(_mx("two.test"), policy) == [
        Target("127.0.0.11", 2526, "mx1.two.test"), Target("127.0.0.12", 2526, "mx1.two.test"),
        Target("127.0.0.13", 2526, "mx2.two.test"),
    ]


async def test_mx_hosts_that_fail_are_skipped(policy: Policy) -> None:
    assert await targets_for(_mx("half.test"), policy) == [Target("127.0.0.30", 2526, "ok.half.test")]


async def test_implicit_mx(policy: Policy) -> None:
    assert await targets_for(_mx("implicit.test"), policy) == [Target("127.0.0.40", 2526, "implicit.test")]


async def test_address_limit(policy: Policy) -> None:
    targets = await targets_for(_mx("many.test"), policy)
    assert [t.name for t in targets] == [f"mx{n}.many.test" for n in range(MX_ADDRESS_LIMIT)]


@pytest.mark.parametrize(("domain", "code", "status"), [
    ("missing.test", 550, "5.1.2"),
    ("nomail.test", 556, "5.1.10"),
    ("dangling.test", 550, "5.4.4"),
    ("broken.test", 451, "4.4.3"),
    ("stuck.test", 451, "4.4.3"),
])
async def test_failures(policy: Policy, domain: str, code: int, status: str) -> None:
    with pytest.raises(NoRoute) as info:
        await targets_for(_mx(domain), policy)
    assert info.value.code == code and info.value.message.startswith(status + " ")
    assert info.value.permanent is (code >= 500)


async def test_route_without_hosts(policy: Policy) -> None:
    with pytest.raises(NoRoute) as info:
        await targets_for(Route(name="empty", kind="smarthost"), policy)
    assert info.value.permanent
    with pytest.raises(NoRoute):
        await targets_for(Route(name="mx:", kind="mx"), policy)


@pytest.mark.parametrize("domain", ["self.test", "zero.test", "mapped.test"])
async def test_an_mx_on_this_machine_loops_back(policy: Policy, domain: str) -> None:
    """As Postfix: a domain whose mail servers are this machine's loopback or unspecified addresses is not
    delivered to ourselves (a loop, or a local service reached from outside); 5.4.6, bounced."""
    strict = policy.model_copy(update={"outbound": policy.outbound.model_copy(update={"mx_loopback": False})})
    with pytest.raises(NoRoute) as info:
        await targets_for(_mx(domain), strict)
    assert info.value.code == 550 and info.value.message.startswith(f"5.4.6 mail for {domain} loops back to myself")
    assert info.value.permanent
    assert await targets_for(_mx(domain), policy)  # allowed by mx_loopback: true


async def test_other_mx_hosts_are_still_tried_when_one_is_this_machine(policy: Policy) -> None:
    strict = policy.model_copy(update={"outbound": policy.outbound.model_copy(update={"mx_loopback": False})})
    assert await targets_for(_mx("mixed.test"), strict) == [Target("192.0.2.5", 2526, "out.mixed.test")]
