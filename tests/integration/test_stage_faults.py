"""A filter stage that fails on a message passes it on with an error verdict, on the real broker and
Redis: never a retry into ``mailmoat.dead`` (issue 13). The fault is injected where a bug would be:
the stage's own analysis raises."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from mailmoat_antispam import service as antispam
from mailmoat_antispam.check import Checker
from mailmoat_antivirus import service as antivirus
from mailmoat_connection_filter import service as connection_filter
from mailmoat_platform.bus import Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_platform.stagefault import STAGE_ERRORS
from mailmoat_policy import parse_policy
from mailmoat_routing.actions import disposition
from tests.support.dnsserver import DnsServer

pytestmark = pytest.mark.integration

DATA = b"From: s@sender.test\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


class Bug(Exception):
    pass


def explode(*args: object, **kwargs: object) -> None:
    raise Bug("injected fault \u00e4\r\nsecond line")


class FailingChecker(Checker):
    async def check(self, *args: object, **kwargs: object):  # type: ignore[override]
        explode()


class FailingResolver:
    async def query(self, *args: object, **kwargs: object):
        explode()


async def run_stage(stage: str, make: Callable[[Runtime], object], amqp_url: str, redis_url: str, policy: str,
                    data: bytes = DATA, mail_from: str = "s@sender.test") -> tuple[Envelope, bytes, Bus]:
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=policy)
    settings.metrics_ports = {}
    runtime = Runtime(stage, settings)
    await runtime.start()
    probe = Bus(amqp_url)
    await probe.connect()
    try:
        await probe.declare_stage("routing")
        await runtime.consume_stage(stage, make(runtime))  # type: ignore[arg-type]
        envelope = Envelope(mail_from=mail_from, rcpt_to=["a@example.com"], client_ip="127.0.0.2",
                            helo="mail.sender.test", itinerary=[stage, "routing"])
        await probe.publish(Publish(stage_queue(stage), envelope, data))
        assert probe.channel is not None
        queue = await probe.channel.get_queue(stage_queue("routing"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = await queue.get(fail=False, no_ack=True)
            if message is not None:
                out, data = decode(message.body)
                assert await probe.queue_depth("mailmoat.dead") == 0
                return out, data, probe
            await asyncio.sleep(0.05)
        raise AssertionError("nothing reached the routing queue")
    finally:
        await probe.close()
        await runtime.shutdown(grace=1)


def error_events(redis_url: str, message_id: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [e for e in (json.loads(raw) for raw in client.lrange(f"mailmoat:trace:{message_id}", 0, -1))
                if e["event"] == "ERROR"]
    finally:
        client.close()


@pytest.fixture
async def policy(write_policy) -> AsyncIterator[str]:
    yield str(write_policy("dns: {nameservers: [127.0.0.1], port: 9, timeout: 0.2}\n"))


async def test_antivirus_fault_is_unscannable_and_quarantined_by_default(amqp_url, redis_url, policy, monkeypatch
                                                                         ) -> None:
    monkeypatch.setattr(antivirus, "analyse", explode)
    before = STAGE_ERRORS.labels("antivirus", "Bug")._value.get()
    envelope, data, _ = await run_stage("antivirus", lambda rt: antivirus.make_handler(rt, antivirus.Engine()),
                                        amqp_url, redis_url, policy)
    verdict = envelope.verdicts["antivirus"]
    assert verdict.result == "unscannable" and verdict.detail["action"] == "quarantine"
    assert verdict.detail["error_type"] == "Bug"
    assert verdict.detail["error_message"] == "injected fault \u00e4 second line"
    report = b"X-Mailmoat-Malware-Report: result=unscannable; unscannable=1; action=quarantine; error=Bug\r\n"
    assert data == report + DATA
    (event,) = error_events(redis_url, envelope.id)
    assert event["service"] == "antivirus" and "Bug: injected fault" in event["detail"]
    assert STAGE_ERRORS.labels("antivirus", "Bug")._value.get() == before + 1


async def test_antispam_fault_is_an_error_verdict(amqp_url, redis_url, policy) -> None:
    envelope, data, _ = await run_stage("antispam", lambda rt: antispam.make_handler(rt, FailingChecker()),
                                        amqp_url, redis_url, policy)
    verdict = envelope.verdicts["antispam"]
    assert verdict.result == "error" and verdict.detail["error"].startswith("Bug: injected fault")
    assert "scl" not in verdict.detail and verdict.detail["dmarc"]["result"] == "temperror"  # no DNS on port 9
    report = b"X-Mailmoat-Antispam-Report: CIP:127.0.0.2;SFV:ERR;ERR:Bug;DMARC:temperror\r\nAuthentication-Results: "
    assert data.startswith(report) and data.endswith(b"\r\n" + DATA) and b" spf=temperror " in data
    assert error_events(redis_url, envelope.id)[0]["data"]["result"] == "error"
    routing = parse_policy("dns: {nameservers: [127.0.0.1], port: 9, timeout: 0.2}\n")
    assert disposition(envelope, routing).action == "deliver"  # antispam.actions.error


async def test_antispam_fault_still_refuses_a_spoof_of_a_reject_domain(amqp_url, redis_url, write_policy) -> None:
    """The stage failed on the message, yet its sender authentication ran: DMARC p=reject applies (5.7.509)."""
    zone = 'bank.test. 60 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"\n_dmarc.bank.test. 60 IN TXT "v=DMARC1; p=reject"\n'
    spoof = b"From: <ceo@bank.test>\r\nTo: a@example.com\r\nSubject: invoice\r\n\r\npay now\r\n"
    with DnsServer(zone) as dns:
        text = f"dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 1}}\n"
        envelope, data, _ = await run_stage("antispam", lambda rt: antispam.make_handler(rt, FailingChecker()),
                                            amqp_url, redis_url, str(write_policy(text)), spoof, "x@evil.test")
    verdict = envelope.verdicts["antispam"]
    assert verdict.result == "error" and verdict.detail["categories"] == ["spoof"]
    assert verdict.detail["dmarc"] == {"result": "fail", "policy": "reject", "published": "reject",
                                       "domain": "bank.test", "override": ""}
    assert b"SFV:ERR;ERR:Bug;SCL:5;" in data.replace(b"\r\n\t", b"") and b"dmarc=fail" in data
    (event,) = error_events(redis_url, envelope.id)
    assert event["data"]["authentication"]["dmarc"]["result"] == "fail"
    action = disposition(envelope, parse_policy(text))
    assert (action.action, action.cause, action.status) == ("reject", "dmarc_reject", "5.7.509")


async def test_connection_filter_fault_is_an_error_verdict(amqp_url, redis_url, policy) -> None:
    envelope, data, _ = await run_stage(
        "connection_filter", lambda rt: connection_filter.make_handler(rt, FailingResolver()),  # type: ignore[arg-type]
        amqp_url, redis_url, policy)
    assert envelope.verdicts["connection_filter"].result == "error"
    assert data == b"X-Mailmoat-Connection-Report: ACT:error;ERR:Bug\r\n" + DATA
    assert len(error_events(redis_url, envelope.id)) == 1
