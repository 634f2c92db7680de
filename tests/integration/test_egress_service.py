"""The egress service on the real broker and Redis, delivering into SMTP sinks on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from prometheus_client import REGISTRY

from mailmoat_egress.delivery import SessionPool
from mailmoat_egress.service import SERVICE, Egress, dedupe_key
from mailmoat_platform.bus import DEAD_QUEUE, Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope, Route
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from tests.support.dnsserver import DnsServer
from tests.support.gateway import Gateway
from tests.support.infra import free_port
from tests.support.sink import Received, SmtpSink

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nTo: a@example.com\r\nSubject: egress\r\nMessage-ID: <e1@out.org>\r\n\r\nbody\r\n.\r\n..\r\n"


@dataclass
class Harness:
    runtime: Runtime
    egress: Egress
    probe: Bus

    async def send(self, envelope: Envelope, data: bytes = DATA) -> None:
        await self.probe.publish(Publish(stage_queue("egress"), envelope, data))

    async def get(self, queue: str, parent: str, timeout: float = 15.0) -> tuple[Envelope, bytes]:
        """The next frame on ``queue`` whose parent (or id) is ``parent`` (others are dropped)."""
        assert self.probe.channel is not None
        q = await self.probe.channel.get_queue(queue)
        for _ in range(int(timeout / 0.05)):
            message = await q.get(fail=False, no_ack=True)
            if message is not None:
                envelope, data = decode(message.body)
                if parent in (envelope.parent_id, envelope.id):
                    return envelope, data
                continue
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing on {queue} within {timeout}s")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    zone = """
    mail.test. 60 IN MX 10 mx1.mail.test.
    mx1.mail.test. 60 IN A 127.0.0.1
    nomail.test. 60 IN MX 0 .
    """
    with DnsServer(zone, servfail_names={"broken.test"}) as server:
        yield server


def _policy_text(sink_port: int, dns_port: int, expire: int = 600) -> str:
    return f"""
    organization: {{hostname: gw.test}}
    outbound: {{mx_port: {sink_port}, mx_loopback: true}}
    delivery: {{retry_delays: [1, 2], expire_after: {expire}, connect_timeout: 5, command_timeout: 10}}
    dns: {{nameservers: ["127.0.0.1"], port: {dns_port}, timeout: 2}}
    """


async def _purge(probe: Bus) -> None:
    """Empty the queues this module uses (its vhost is shared by its tests)."""
    assert probe.channel is not None
    names = [await probe.declare_stage("egress"), await probe.declare_stage("routing"), DEAD_QUEUE]
    names += [await probe.declare_retry("egress", delay) for delay in (1, 2)]
    for name in names:
        await (await probe.channel.get_queue(name)).purge()


async def _harness(amqp_url: str, redis_url: str, policy: Path, cafile: str | None = None
                   ) -> AsyncIterator[Harness]:
    settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(policy))
    settings.metrics_ports = {}
    runtime = Runtime(SERVICE, settings)
    await runtime.start()
    probe = Bus(amqp_url)
    await probe.connect()
    await _purge(probe)
    egress = Egress(runtime, SessionPool(local_hostname="gw.test", cafile=cafile))
    await runtime.consume_stage(SERVICE, egress.handle)
    try:
        yield Harness(runtime, egress, probe)
    finally:
        await probe.close()
        await runtime.shutdown(grace=5)
        await egress.close()


@pytest.fixture
async def harness(amqp_url, redis_url, write_policy: Callable[[str], Path], sink, dns_server):
    async for h in _harness(amqp_url, redis_url, write_policy(_policy_text(sink.port, dns_server.port))):
        yield h


def _envelope(hosts: list[str], rcpt: list[str] | None = None, **kw) -> Envelope:
    return Envelope(
        mail_from="s@out.org", rcpt_to=rcpt or ["a@example.com"], itinerary=["routing", "egress"],
        route=Route(name="route:onprem", kind="smarthost", hosts=hosts, tls="opportunistic"),
        message_id_header="<e1@out.org>", **kw,
    )


async def _wait_messages(sink: SmtpSink, count: int, timeout: float = 20.0) -> list[Received]:
    return await asyncio.to_thread(sink.wait_for, count, timeout)


async def _events(harness: Harness, message_id: str, wanted: str, timeout: float = 10.0) -> list[str]:
    for _ in range(int(timeout / 0.05)):
        events = [e.event for e in await harness.runtime.trace.events(message_id)]
        if wanted in events:
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {wanted} event for {message_id}")


async def test_delivered_byte_identical(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope([f"127.0.0.1:{sink.port}"])
    await harness.send(envelope)
    [got] = await _wait_messages(sink, 1)
    assert got.data == DATA
    assert got.mail_from == "s@out.org" and got.rcpt_tos == ["a@example.com"]
    events = await _events(harness, envelope.id, "DELIVER")
    assert events == ["DELIVER"]
    trace = await harness.runtime.trace.events(envelope.id)
    assert trace[0].detail.startswith("250") and trace[0].recipients == ["a@example.com"]
    assert trace[0].data == {"route": "route:onprem", "remote": "127.0.0.1", "tls": None}
    members = await harness.runtime.redis.smembers(dedupe_key(envelope))
    assert members == {b"a@example.com"}
    assert 0 < await harness.runtime.redis.ttl(dedupe_key(envelope)) <= 7 * 86400


async def test_451_then_250_delivered_once_after_retry(harness: Harness, sink: SmtpSink) -> None:
    sink.data_replies.append("451 4.3.0 try again later")
    envelope = _envelope([f"127.0.0.1:{sink.port}"])
    envelope.received_at = envelope.received_at - timedelta(hours=7)
    old_before = _deferred_older_than_6h()
    await harness.send(envelope)
    [got] = await _wait_messages(sink, 1, timeout=30)
    assert got.data == DATA
    events = await _events(harness, envelope.id, "DELIVER")
    assert events == ["DEFER", "DELIVER"]
    assert _deferred_older_than_6h() == old_before + 1
    await asyncio.sleep(1.5)
    assert len(sink.messages) == 1


def _deferred_older_than_6h() -> float:
    """Copies deferred when older than 6 hours, by the ``mailmoat_deferred_age_seconds`` histogram."""
    count = REGISTRY.get_sample_value("mailmoat_deferred_age_seconds_count") or 0.0
    young = REGISTRY.get_sample_value("mailmoat_deferred_age_seconds_bucket", {"le": "21600.0"}) or 0.0
    return count - young


async def test_550_bounces_with_dsn_to_sender(harness: Harness, sink: SmtpSink) -> None:
    sink.rcpt_replies["bad@example.com"] = "550 5.1.1 <bad@example.com>: no such user"
    envelope = _envelope([f"127.0.0.1:{sink.port}"], rcpt=["a@example.com", "bad@example.com"])
    await harness.send(envelope)
    dsn, data = await harness.get(stage_queue("routing"), envelope.id)
    assert dsn.kind == "dsn" and dsn.parent_id == envelope.id
    assert dsn.mail_from == "" and dsn.rcpt_to == ["s@out.org"]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    status = list(msg.iter_parts())[1].get_payload()[1]
    assert status["Final-Recipient"] == "rfc822; bad@example.com" and status["Status"] == "5.1.1"
    [got] = await _wait_messages(sink, 1)
    assert got.rcpt_tos == ["a@example.com"]
    events = await _events(harness, envelope.id, "DSN")
    assert sorted(events) == ["DELIVER", "DSN", "FAIL"]
    [own] = await harness.runtime.trace.events(dsn.id)
    assert own.event == "DSN" and own.data["parent_id"] == envelope.id
    assert await harness.runtime.trace.find("s@out.org") == [dsn.id]


async def test_same_frame_twice_delivered_once(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope([f"127.0.0.1:{sink.port}"])
    await harness.send(envelope)
    await harness.send(envelope)
    await _wait_messages(sink, 1)
    await asyncio.sleep(3)
    assert len(sink.messages) == 1
    # The sink has the message before egress has recorded it: the DELIVER event comes after.
    await _events(harness, envelope.id, "DELIVER")
    assert [e.event for e in await harness.runtime.trace.events(envelope.id)] == ["DELIVER"]


async def test_host_fallback(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope([f"127.0.0.1:{free_port()}", f"127.0.0.1:{sink.port}"])
    await harness.send(envelope)
    [got] = await _wait_messages(sink, 1)
    assert got.data == DATA


async def test_mx_route(harness: Harness, sink: SmtpSink, dns_server: DnsServer) -> None:
    envelope = _envelope([], rcpt=["x@mail.test"])
    envelope.route = Route(name="mx:mail.test", kind="mx", domain="mail.test", tls="opportunistic")
    await harness.send(envelope)
    [got] = await _wait_messages(sink, 1)
    assert got.rcpt_tos == ["x@mail.test"] and got.data == DATA
    assert ("mail.test.", "MX") in dns_server.queries
    await _events(harness, envelope.id, "DELIVER")  # written after the next hop's reply
    trace = await harness.runtime.trace.events(envelope.id)
    assert trace[0].data["remote"] == "mx1.mail.test"


async def test_null_mx_bounces(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope([], rcpt=["x@nomail.test"])
    envelope.route = Route(name="mx:nomail.test", kind="mx", domain="nomail.test")
    await harness.send(envelope)
    dsn, data = await harness.get(stage_queue("routing"), envelope.id)
    assert dsn.parent_id == envelope.id and b"Status: 5.1.10" in data
    assert sink.messages == []


async def test_servfail_defers(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope([], rcpt=["x@broken.test"])
    envelope.route = Route(name="mx:broken.test", kind="mx", domain="broken.test")
    await harness.send(envelope)
    events = await _events(harness, envelope.id, "DEFER")
    assert events[0] == "DEFER"


async def test_required_tls_without_starttls_expires_with_447(
    amqp_url, redis_url, write_policy, sink: SmtpSink, dns_server: DnsServer
) -> None:
    policy = write_policy(_policy_text(sink.port, dns_server.port, expire=2))
    async for harness in _harness(amqp_url, redis_url, policy):
        envelope = _envelope([f"127.0.0.1:{sink.port}"])
        assert envelope.route is not None
        envelope.route.tls = "required"
        await harness.send(envelope)
        dsn, data = await harness.get(stage_queue("routing"), envelope.id, timeout=30)
        assert dsn.parent_id == envelope.id
        assert b"Status: 4.4.7" in data and b"4.7.4" in data
        assert sink.messages == [], "never delivered in clear text"
        events = [e.event for e in await harness.runtime.trace.events(envelope.id)]
        assert events[0] == "DEFER" and events[-2:] == ["FAIL", "DSN"]


async def test_redis_down_is_transient(amqp_url, redis_url, write_policy, sink, dns_server) -> None:
    from mailmoat_platform.runtime import Transient

    async for harness in _harness(amqp_url, redis_url, write_policy(_policy_text(sink.port, dns_server.port))):
        from mailmoat_platform import redisclient

        real = harness.runtime.redis
        harness.runtime.redis = redisclient.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
        try:
            with pytest.raises(Transient):
                await harness.egress.handle(_envelope([f"127.0.0.1:{sink.port}"]), DATA)
        finally:
            await harness.runtime.redis.aclose()
            harness.runtime.redis = real
        assert sink.messages == []


async def test_recipients_already_delivered_are_skipped(harness: Harness, sink: SmtpSink) -> None:
    """A copy redelivered after a crash between sending and acking goes only to those still missing."""
    envelope = _envelope([f"127.0.0.1:{sink.port}"], rcpt=["a@example.com", "b@example.com"])
    await harness.runtime.redis.sadd(dedupe_key(envelope), "a@example.com")
    await harness.send(envelope)
    [got] = await _wait_messages(sink, 1)
    assert got.rcpt_tos == ["b@example.com"]
    # The recipients delivered are recorded after the next hop's reply, in the round trip before DELIVER's.
    await _events(harness, envelope.id, "DELIVER")
    assert await harness.runtime.redis.smembers(dedupe_key(envelope)) == {b"a@example.com", b"b@example.com"}
    await harness.send(envelope)
    await asyncio.sleep(2)
    assert len(sink.messages) == 1


async def test_envelope_without_route_is_dead_lettered(harness: Harness, sink: SmtpSink) -> None:
    envelope = _envelope([f"127.0.0.1:{sink.port}"])
    envelope.route = None
    await harness.send(envelope)
    dead, data = await harness.get(DEAD_QUEUE, envelope.id)
    assert dead.id == envelope.id and data == DATA
    assert await _events(harness, envelope.id, "DEADLETTER") == ["DEADLETTER"]
    assert sink.messages == []


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_path(test_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return str(path)


def _tls_sink(ca: trustme.CA, *names: str) -> SmtpSink:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return SmtpSink(tls_context=context)


async def test_verify_through_the_service(amqp_url, redis_url, write_policy, dns_server, test_ca, ca_path) -> None:
    """verify delivers to the host whose certificate names it; the wrong name is deferred, never sent."""
    with _tls_sink(test_ca, "localhost", "127.0.0.1") as good, _tls_sink(test_ca, "wrong.example") as wrong:
        policy = write_policy(_policy_text(good.port, dns_server.port))
        async for harness in _harness(amqp_url, redis_url, policy, cafile=ca_path):
            ok = _envelope([f"127.0.0.1:{good.port}"])
            bad = _envelope([f"127.0.0.1:{wrong.port}"])
            for envelope in (ok, bad):
                assert envelope.route is not None
                envelope.route.tls = "verify"
                await harness.send(envelope)
            [got] = await _wait_messages(good, 1)
            assert got.tls and got.data == DATA
            await _events(harness, ok.id, "DELIVER")  # written after the next hop's reply
            [deliver] = await harness.runtime.trace.events(ok.id)
            assert deliver.event == "DELIVER" and deliver.data["tls"] in ("TLSv1.2", "TLSv1.3")
            assert (await _events(harness, bad.id, "DEFER"))[0] == "DEFER"
            defer = (await harness.runtime.trace.events(bad.id))[0]
            assert "4.7.5" in defer.detail and defer.data["attempts"] == 1
            await asyncio.sleep(1.5)
            assert wrong.messages == [], "nothing delivered to the wrong name, in clear text or otherwise"


def test_service_process_delivers_with_ca_from_environment(
    amqp_url, redis_url, write_policy, tmp_path, test_ca, ca_path
) -> None:
    """``mailmoat run egress`` as a process: MAILMOAT_* settings, the CA file, metrics."""
    with _tls_sink(test_ca, "127.0.0.1") as sink, DnsServer("mx.proc.test. 60 IN A 127.0.0.1") as dns:
        policy = write_policy(_policy_text(sink.port, dns.port))
        with Gateway(tmp_path / "gw", amqp_url, redis_url, policy,
                     extra_env={"MAILMOAT_EGRESS_CA_FILE": ca_path}) as gateway:
            envelope = _envelope([f"127.0.0.1:{sink.port}"])
            assert envelope.route is not None
            envelope.route.tls = "verify"

            async def publish() -> None:
                bus = Bus(amqp_url)
                await bus.connect()
                try:
                    await _purge(bus)  # copies earlier tests left in this module's vhost
                    gateway.start(("egress",))
                    await bus.publish(Publish(stage_queue("egress"), envelope, DATA))
                finally:
                    await bus.close()

            asyncio.run(publish())
            [got] = sink.wait_for(1, 30)
            assert got.data == DATA and got.tls
            delivered = 'mailmoat_deliveries_total{destination="route:onprem",result="delivered"} 1.0'
            metrics = gateway.metrics_when("egress", lambda text: delivered in text)
            assert delivered in metrics
            assert "mailmoat_delivery_seconds_count 1.0" in metrics


async def test_delivery_lock_is_renewed_exclusive_and_released(harness: Harness, sink: SmtpSink) -> None:
    from mailmoat_egress.claims import Busy, Claims
    from mailmoat_egress.service import lock_key

    envelope = _envelope([f"127.0.0.1:{sink.port}"])
    claims = Claims(harness.runtime.scripts, lambda: harness.runtime.redis, ttl=1.0)
    key = lock_key(envelope)
    claim = await claims.take(envelope)
    await asyncio.sleep(2.5)  # well past the lock's own lifetime: renewed meanwhile
    assert 0 < await harness.runtime.redis.pttl(key) <= 1000
    with pytest.raises(Busy):
        await harness.egress.claims.take(envelope)
    await claims.release(claim)
    await claims.close()
    assert not await harness.runtime.redis.exists(key)
    assert sink.messages == []
    await harness.runtime.redis.set(key, "held-by-a-dead-consumer", px=300)
    await asyncio.sleep(0.5)
    assert await harness.egress.handle(envelope, DATA) == []
    assert len(sink.messages) == 1
