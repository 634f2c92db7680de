"""MTA-STS for MX deliveries through the egress service, with real parts: a local authoritative DNS
server (MX, TXT ``_mta-sts``, A), a local HTTPS server with a trustme CA serving the policies, and SMTP
sinks on 127.0.0.1/.2/.3 (one port, the policy's ``mx_port``) presenting chosen certificates."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme
from aiohttp import web

from mailmoat_egress import tlsrpt
from mailmoat_egress.stspolicies import CACHE_PREFIX, FetchFailed, fetch_policy
from mailmoat_egress.targets import resolver_config
from mailmoat_egress.tls import CA_FILE_ENV
from mailmoat_mail.dns import ResolverConfig
from mailmoat_platform.models import Envelope, Route, utcnow
from tests.integration.test_egress_service import DATA, Harness, _events, _harness
from tests.support.dnsserver import DnsServer
from tests.support.infra import free_port
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mx1.sts.test\r\nmx: *.pool.sts.test\r\nmax_age: 86400\r\n"
POLICIES = {
    "good.test": ENFORCE,
    "wrongmx.test": ENFORCE,
    "badcert.test": ENFORCE,
    "testing.test": ENFORCE.replace("enforce", "testing"),
}
ZONE = """
good.test. 60 IN MX 10 mx1.sts.test.
wrongmx.test. 60 IN MX 10 mx.other.test.
badcert.test. 60 IN MX 10 mx2.pool.sts.test.
testing.test. 60 IN MX 10 mx2.pool.sts.test.
nopolicy.test. 60 IN MX 10 mx2.pool.sts.test.
mx1.sts.test. 60 IN A 127.0.0.1
mx2.pool.sts.test. 60 IN A 127.0.0.2
mx.other.test. 60 IN A 127.0.0.3
""" + "".join(f"""
_mta-sts.{d}. 60 IN TXT "v=STSv1; id=1"
mta-sts.{d}. 60 IN A 127.0.0.1
""" for d in POLICIES)


def _port_on_three_addresses() -> int:
    for _ in range(100):
        port = free_port()
        try:
            for host in ("127.0.0.2", "127.0.0.3"):
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on 127.0.0.1-3")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_path(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _sink(ca: trustme.CA, host: str, port: int, name: str) -> SmtpSink:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return SmtpSink(port=port, host=host, tls_context=context)


@pytest.fixture
def sinks(ca: trustme.CA) -> Iterator[dict[str, SmtpSink]]:
    port = _port_on_three_addresses()
    with _sink(ca, "127.0.0.1", port, "mx1.sts.test") as good, \
            _sink(ca, "127.0.0.2", port, "wrong.example") as wrong_name, \
            _sink(ca, "127.0.0.3", port, "mx.other.test") as other:
        yield {"good": good, "wrong_name": wrong_name, "other": other}


class PolicyServer:
    """HTTPS on 127.0.0.1 serving ``/.well-known/mta-sts.txt`` by the Host header."""

    def __init__(self, ca: trustme.CA):
        self.ca = ca
        self.policies = dict(POLICIES)
        self.fetches: list[str] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        domain = request.host.split(":")[0].removeprefix("mta-sts.")
        self.fetches.append(domain)
        if domain not in self.policies:
            return web.Response(status=404)
        return web.Response(text=self.policies[domain], content_type="text/plain")

    async def __aenter__(self) -> PolicyServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(f"mta-sts.{d}" for d in POLICIES)).configure_cert(context)
        app = web.Application()
        app.router.add_get("/.well-known/mta-sts.txt", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=context).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def harness(amqp_url, redis_url, write_policy, sinks, ca, ca_path, monkeypatch
                  ) -> AsyncIterator[tuple[Harness, PolicyServer, DnsServer]]:
    monkeypatch.setenv(CA_FILE_ENV, ca_path)
    with DnsServer(ZONE) as dns:
        async with PolicyServer(ca) as https:
            policy = write_policy(f"""
            organization: {{hostname: gw.test}}
            outbound: {{mx_port: {sinks["good"].port}, mx_loopback: true, mta_sts_port: {https.port}}}
            delivery: {{retry_delays: [60], expire_after: 600, connect_timeout: 5, command_timeout: 10}}
            dns: {{nameservers: ["127.0.0.1"], port: {dns.port}, timeout: 2}}
            """)
            async for h in _harness(amqp_url, redis_url, policy, cafile=ca_path):
                await h.runtime.redis.delete(*[CACHE_PREFIX + d for d in POLICIES])
                yield h, https, dns


def _mx(domain: str) -> Envelope:
    return Envelope(mail_from="s@out.org", rcpt_to=[f"a@{domain}"], itinerary=["routing", "egress"],
                    route=Route(name=f"mx:{domain}", kind="mx", domain=domain, tls="opportunistic"),
                    message_id_header="<e1@out.org>")


async def _counts(h: Harness, domain: str) -> dict[str, int]:
    return await tlsrpt.counts(h.runtime.redis, domain, utcnow())


async def test_enforce_delivers_to_a_matching_mx_with_a_good_certificate(harness, sinks) -> None:
    h, https, _ = harness
    envelope = _mx("good.test")
    await h.send(envelope)
    [got] = await asyncio.to_thread(sinks["good"].wait_for, 1, 15)
    assert got.tls and got.data == DATA
    assert "DELIVER" in await _events(h, envelope.id, "DELIVER")
    assert await _counts(h, "good.test") == {"successful": 1}
    assert https.fetches == ["good.test"]
    # cached: the next delivery does not fetch again; a new TXT id would
    await h.send(_mx("good.test"))
    await asyncio.to_thread(sinks["good"].wait_for, 2, 15)
    assert https.fetches == ["good.test"]


async def test_enforce_defers_an_mx_outside_the_policy(harness, sinks) -> None:
    h, _, _ = harness
    envelope = _mx("wrongmx.test")
    await h.send(envelope)
    await _events(h, envelope.id, "DEFER")
    [defer] = await h.runtime.trace.events(envelope.id)
    assert defer.detail.startswith("451 4.7.5") and "MTA-STS" in defer.detail
    assert await _counts(h, "wrongmx.test") == {"validation-failure": 1}
    await asyncio.sleep(0.5)
    assert sinks["other"].messages == [], "never delivered to an MX the policy does not name"


async def test_enforce_defers_a_certificate_that_does_not_name_the_mx(harness, sinks) -> None:
    h, _, _ = harness
    envelope = _mx("badcert.test")
    await h.send(envelope)
    await _events(h, envelope.id, "DEFER")
    [defer] = await h.runtime.trace.events(envelope.id)
    assert "4.7.5" in defer.detail
    assert await _counts(h, "badcert.test") == {"certificate-host-mismatch": 1}
    await asyncio.sleep(0.5)
    assert sinks["wrong_name"].messages == [], "not delivered, in clear text or otherwise"


async def test_testing_mode_delivers_and_records_the_failure(harness, sinks) -> None:
    h, _, _ = harness
    envelope = _mx("testing.test")
    await h.send(envelope)
    [got] = await asyncio.to_thread(sinks["wrong_name"].wait_for, 1, 15)
    assert got.tls, "still over TLS, only unverified"
    # The sink has the message before egress has recorded the session: the DELIVER event comes after.
    await _events(h, envelope.id, "DELIVER")
    assert await _counts(h, "testing.test") == {"certificate-host-mismatch": 1}
    # What the daily report needs: the policy applied and the failure with its MX host.
    applied = await tlsrpt.applied_policy(h.runtime.redis, "testing.test", utcnow())
    assert applied == tlsrpt.AppliedPolicy(
        "sts", ("version: STSv1", "mode: testing", "mx: mx1.sts.test", "mx: *.pool.sts.test", "max_age: 86400"),
        ("mx1.sts.test", "*.pool.sts.test"))
    assert await tlsrpt.failures(h.runtime.redis, "testing.test", utcnow()) == {
        tlsrpt.FailureDetail("certificate-host-mismatch", "", "mx2.pool.sts.test"): 1}


async def test_without_a_policy_the_same_mx_is_used_as_before(harness, sinks) -> None:
    h, _, _ = harness
    envelope = _mx("nopolicy.test")
    await h.send(envelope)
    [got] = await asyncio.to_thread(sinks["wrong_name"].wait_for, 1, 15)
    assert got.tls
    await _events(h, envelope.id, "DELIVER")
    assert await _counts(h, "nopolicy.test") == {}


async def test_off_override_ignores_the_policy(amqp_url, redis_url, write_policy, sinks, ca, ca_path,
                                               monkeypatch) -> None:
    monkeypatch.setenv(CA_FILE_ENV, ca_path)
    with DnsServer(ZONE) as dns:
        policy = write_policy(f"""
        organization: {{hostname: gw.test}}
        outbound: {{mx_port: {sinks["good"].port}, mx_loopback: true, per_route: {{mx: {{mta_sts: "off"}}}}}}
        dns: {{nameservers: ["127.0.0.1"], port: {dns.port}, timeout: 2}}
        """)
        async for h in _harness(amqp_url, redis_url, policy, cafile=ca_path):
            await h.send(_mx("badcert.test"))
            await asyncio.to_thread(sinks["wrong_name"].wait_for, 1, 15)


async def test_a_new_txt_id_fetches_the_policy_again(harness) -> None:
    h, https, dns = harness
    policies = h.egress.mta_sts.policies
    config = resolver_config(h.runtime.policy.current)
    port = h.runtime.policy.current.outbound.mta_sts_port
    first = await policies.lookup("good.test", config, port)
    assert first.policy is not None and first.policy.mode == "enforce" and https.fetches == ["good.test"]
    await policies.lookup("good.test", config, port)
    assert https.fetches == ["good.test"], "the same id: the cached policy"
    assert 0 < await h.runtime.redis.ttl(CACHE_PREFIX + "good.test") <= 86400, "cached for max_age"
    https.policies["good.test"] = ENFORCE.replace("enforce", "testing")
    with dns.lock:
        dns.rrs = [rr for rr in dns.rrs if str(rr.rname) != "_mta-sts.good.test."]
    dns.add_zone('_mta-sts.good.test. 60 IN TXT "v=STSv1; id=2"')
    again = await policies.lookup("good.test", config, port)
    assert again.policy is not None and again.policy.mode == "testing" and len(https.fetches) == 2
    # the policy host gone: the cached policy stays in force (RFC 8461 5.1)
    del https.policies["good.test"]
    dns.add_zone('_mta-sts.good.test. 60 IN TXT "v=STSv1; id=3"')
    with dns.lock:
        dns.rrs = [rr for rr in dns.rrs if "id=2" not in str(rr.rdata)]
    kept = await policies.lookup("good.test", config, port)
    assert kept.policy == again.policy and kept.error == "sts-policy-fetch-error"


async def test_the_fetch_is_strict(ca: trustme.CA, ca_path: str) -> None:
    """No redirect followed, text/plain only, a certificate from an untrusted CA refused, a malformed
    policy refused: each with its RFC 8460 result type."""
    async def handle(request: web.Request) -> web.Response:
        domain = request.host.split(":")[0].removeprefix("mta-sts.")
        if domain == "redirect.test" and "followed" not in request.query:
            raise web.HTTPFound("/.well-known/mta-sts.txt?followed=1")
        if domain == "html.test":
            return web.Response(text=ENFORCE, content_type="text/html")
        if domain == "bad.test":
            return web.Response(text=ENFORCE.replace("STSv1", "STSv2"), content_type="text/plain")
        return web.Response(text=ENFORCE, content_type="text/plain")

    names = ("redirect.test", "html.test", "bad.test", "good.test")
    zone = "".join(f"mta-sts.{d}. 60 IN A 127.0.0.1\n" for d in names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(f"mta-sts.{d}" for d in names)).configure_cert(context)
    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        with DnsServer(zone) as dns:
            config = ResolverConfig(("127.0.0.1",), dns.port, 2.0)
            assert (await fetch_policy("good.test", config, port, ca_path)).mode == "enforce"
            expected = {"redirect.test": "sts-policy-fetch-error", "html.test": "sts-policy-invalid",
                        "bad.test": "sts-policy-invalid", "nothere.test": "sts-policy-fetch-error"}
            for domain, result in expected.items():
                with pytest.raises(FetchFailed) as failed:
                    await fetch_policy(domain, config, port, ca_path)
                assert failed.value.result == result, (domain, str(failed.value))
            with pytest.raises(FetchFailed) as untrusted:
                await fetch_policy("good.test", config, port, None)   # the system's CAs only
            assert untrusted.value.result == "sts-webpki-invalid"
    finally:
        await runner.cleanup()


async def test_an_unreadable_cache_entry_is_fetched_again(harness) -> None:
    h, https, _ = harness
    await h.runtime.redis.set(CACHE_PREFIX + "good.test", b"{not json")
    config = resolver_config(h.runtime.policy.current)
    found = await h.egress.mta_sts.policies.lookup("good.test", config, h.runtime.policy.current.outbound.mta_sts_port)
    assert found.policy is not None and found.policy.mode == "enforce" and https.fetches == ["good.test"]
