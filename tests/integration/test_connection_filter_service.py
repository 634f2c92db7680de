"""The connection filter stage on the real broker and Redis, asking a real (local) DNS server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from mailmoat_connection_filter.decide import HEADER
from mailmoat_connection_filter.service import SERVICE, make_handler
from mailmoat_platform.bus import Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from tests.support.dnsserver import DnsServer
from tests.support.traced import wait_traced

pytestmark = pytest.mark.integration

ZONE = """
2.0.0.127.bl.test. 60 IN A 127.0.0.2
2.0.0.127.bl.test. 60 IN TXT "listed"
2.0.0.127.strict.test. 60 IN A 127.0.0.4
2.0.0.127.in-addr.arpa. 60 IN PTR mail.sender.test.
mail.sender.test. 60 IN A 127.0.0.2
5.0.0.127.in-addr.arpa. 60 IN PTR liar.sender.test.
liar.sender.test. 60 IN A 127.0.0.99
"""

POLICY = """
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 0.5}}
connection_filter:
  ip_allow: [127.0.0.3/32]
  dnsbl:
    - {{zone: bl.test, weight: 4, codes: {{127.0.0.2: SBL}}}}
    - {{zone: strict.test, action: {strict_action}}}
    - {{zone: slow.test}}
    - {{zone: broken.test}}
"""

DATA = b"From: s@sender.test\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nbody \xc3\xbc\r\n.dot\r\n"


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE, timeout_names={"2.0.0.127.slow.test", "5.0.0.127.slow.test"},
                   servfail_names={"2.0.0.127.broken.test"}) as server:
        yield server


class Stage:
    def __init__(self, runtime: Runtime, probe: Bus):
        self.runtime = runtime
        self.probe = probe

    async def run(self, envelope: Envelope, data: bytes = DATA, timeout: float = 20) -> tuple[Envelope, bytes]:
        await self.probe.publish(Publish(stage_queue(SERVICE), envelope, data))
        assert self.probe.channel is not None
        queue = await self.probe.channel.get_queue(stage_queue("routing"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await queue.get(fail=False, no_ack=True)
            if message is not None:
                return decode(message.body)
            await asyncio.sleep(0.05)
        raise AssertionError("nothing reached the routing queue")


async def start_stage(amqp_url: str, redis_url: str, policy_path: str) -> Stage:
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=policy_path)
    settings.metrics_ports = {}
    runtime = Runtime(SERVICE, settings)
    await runtime.start()
    probe = Bus(amqp_url)
    await probe.connect()
    routing = await probe.declare_stage("routing")
    assert probe.channel is not None
    await (await probe.channel.get_queue(routing)).purge()
    await runtime.consume_stage(SERVICE, make_handler(runtime))
    return Stage(runtime, probe)


@pytest.fixture
async def stage(amqp_url, redis_url, write_policy, dns, request) -> AsyncIterator[Stage]:
    action = getattr(request, "param", "annotate")
    path = write_policy(POLICY.format(port=dns.port, strict_action=action))
    started = await start_stage(amqp_url, redis_url, str(path))
    yield started
    await started.probe.close()
    await started.runtime.shutdown()


def envelope(ip: str, helo: str | None = "mail.sender.test") -> Envelope:
    return Envelope(client_ip=ip, client_port=40000, helo=helo, mail_from="s@sender.test",
                    rcpt_to=["a@example.com"], itinerary=["connection_filter", "routing", "egress"])


def split(data: bytes) -> tuple[bytes, bytes]:
    """The prepended report header (with folded lines) and the bytes after it."""
    assert data.startswith(HEADER + b": ")
    end = 0
    while True:
        end = data.index(b"\r\n", end) + 2
        if data[end:end + 1] not in (b" ", b"\t"):
            return data[:end], data[end:]


async def test_allow_listed_client_is_marked_cal_without_block_list_queries(stage: Stage, dns: DnsServer) -> None:
    sent = envelope("127.0.0.3", helo="[127.0.0.3]")
    out, data = await stage.run(sent)
    verdict = out.verdicts["connection_filter"]
    assert verdict.result == "allow" and verdict.detail["ipv"] == "CAL" and verdict.detail["scl"] == -1
    assert verdict.detail["helo"]["literal"] == "match"
    header, rest = split(data)
    assert b"IPV:CAL;SCL:-1;ACT:allow" in header and rest == DATA
    assert out.id == sent.id and out.size == len(data)
    assert not [q for q, _ in dns.queries if q.startswith("3.0.0.127.") and "in-addr" not in q]


async def test_listed_client_is_annotated_with_ptr_and_helo_facts_and_traced(stage: Stage) -> None:
    sent = envelope("127.0.0.2")
    started = time.monotonic()
    out, data = await stage.run(sent)
    verdict = out.verdicts["connection_filter"]
    assert verdict.result == "listed" and verdict.detail["ipv"] == "DNSBL"
    zones = {z["zone"]: z for z in verdict.detail["dnsbl"]}
    assert zones["bl.test"] == {"zone": "bl.test", "result": "listed", "action": "annotate",
                                "codes": ["127.0.0.2"], "meanings": ["SBL"], "weight": 4.0}
    assert zones["strict.test"]["result"] == "listed" and verdict.detail["dnsbl_score"] == 5.0
    # a timeout and a SERVFAIL are noted, never fatal
    assert zones["slow.test"]["result"] == "temperror" and zones["broken.test"]["result"] == "temperror"
    assert verdict.detail["temperror"] == ["dnsbl:slow.test", "dnsbl:broken.test"]
    assert verdict.detail["ptr"] == {"result": "pass", "names": ["mail.sender.test"], "confirmed": "mail.sender.test"}
    assert verdict.detail["helo"]["syntax"] == "fqdn" and verdict.detail["helo"]["matches_ptr"] is True
    assert time.monotonic() - started < 10
    header, rest = split(data)
    assert rest == DATA
    unfolded = header.replace(b"\r\n\t", b"")
    assert b"DNSBL:bl.test=127.0.0.2/SBL" in unfolded and b"FCRDNS:pass" in unfolded
    assert b"TEMPERROR:dnsbl:slow.test,dnsbl:broken.test" in unfolded
    await wait_traced(stage.runtime.trace, sent.id, "AGENTINFO")  # stored beside the publish to routing
    events = await stage.runtime.trace.events(sent.id)
    assert [e.event for e in events] == ["AGENTINFO"] and events[0].service == "connection_filter"
    assert events[0].data["ipv"] == "DNSBL" and "listed" in events[0].detail


@pytest.mark.parametrize("stage", ["reject"], indirect=True)
async def test_reject_action_gives_a_reject_verdict_and_the_message_goes_on(stage: Stage) -> None:
    out, data = await stage.run(envelope("127.0.0.2"))
    verdict = out.verdicts["connection_filter"]
    assert verdict.result == "reject" and verdict.detail["reason"] == "dnsbl"
    assert split(data)[1] == DATA and b"ACT:reject" in data


async def test_dns_timeouts_do_not_lose_the_message(stage: Stage) -> None:
    out, data = await stage.run(envelope("127.0.0.5", helo="client"))
    verdict = out.verdicts["connection_filter"]
    zones = {z["zone"]: z["result"] for z in verdict.detail["dnsbl"]}
    assert zones == {"bl.test": "clean", "strict.test": "clean", "slow.test": "temperror", "broken.test": "clean"}
    assert verdict.result == "pass" and verdict.detail["ptr"]["result"] == "fail"
    assert verdict.detail["helo"]["syntax"] == "non-fqdn"
    assert split(data)[1] == DATA


async def test_answers_are_cached_per_process(stage: Stage, dns: DnsServer) -> None:
    before = len([q for q, _ in dns.queries if q == "2.0.0.127.bl.test."])
    await stage.run(envelope("127.0.0.2"))
    await stage.run(envelope("127.0.0.2"))
    after = len([q for q, _ in dns.queries if q == "2.0.0.127.bl.test."])
    assert after - before == 1
    slow = len([q for q, _ in dns.queries if q == "2.0.0.127.slow.test."])
    assert slow >= 2  # temporary failures are asked again, never cached
