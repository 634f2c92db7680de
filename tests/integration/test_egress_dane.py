"""DANE (RFC 7672) for MX deliveries through the egress service, with real parts: a zone signed at
test time (ldnsutils) and an unsigned one, served and validated by unbound with the test trust anchor
(so AD bits are real), and SMTP sinks on 127.0.0.1/.2/.3 presenting a self-signed certificate the
TLSA records pin, another self-signed one, and a certificate of a CA the TLSA records name."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailmoat_egress import tlsrpt
from mailmoat_egress.dane import tlsa_for
from mailmoat_egress.mtasts import parse_policy
from mailmoat_egress.stspolicies import CACHE_PREFIX
from mailmoat_platform.models import Envelope, Route, utcnow
from tests.integration.test_egress_mtasts import _port_on_three_addresses
from tests.integration.test_egress_service import DATA, Harness, _events, _harness
from tests.support import dnssec
from tests.support.sink import SmtpSink

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not dnssec.AVAILABLE, reason="unbound and ldnsutils not installed (scripts/setup.sh --test)"),
]


def _self_signed(directory: Path, stem: str) -> tuple[x509.Certificate, str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{stem}.invalid")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, str(cert_file), str(key_file)


def _context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


class World:
    """The sinks, their certificates and the validating resolver for one module."""

    def __init__(self, directory: Path):
        self.port = _port_on_three_addresses()
        self.pinned, pinned_crt, pinned_key = _self_signed(directory, "pinned")
        _, other_crt, other_key = _self_signed(directory, "other")
        self.ca = trustme.CA()
        leaf = self.ca.issue_cert("mx3.dane.test")
        chain_file, ta_key = directory / "ta.crt", directory / "ta.key"
        chain_file.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems) + self.ca.cert_pem.bytes())
        leaf.private_key_pem.write_to_path(str(ta_key))
        self.sinks = {
            "pinned": SmtpSink(self.port, _context(pinned_crt, pinned_key), host="127.0.0.1"),
            "other": SmtpSink(self.port, _context(other_crt, other_key), host="127.0.0.2"),
            "ca": SmtpSink(self.port, _context(str(chain_file), str(ta_key)), host="127.0.0.3"),
        }
        root = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        ee = tlsa_for(self.pinned, 3, 1, 1).text()
        ta = tlsa_for(root, 2, 0, 1).text()
        p = self.port
        signed = f"""
@ IN SOA ns.dane.test. admin.dane.test. 1 3600 600 86400 300
@ IN NS ns
ns IN A 127.0.0.1
match IN MX 10 mx1
_mta-sts.match IN TXT "v=STSv1; id=1"
mismatch IN MX 10 mx2
ta IN MX 10 mx3
bogus IN MX 10 mx4
notlsa IN MX 10 mx5
bogusmx IN MX 10 mx1
mx1 IN A 127.0.0.1
mx2 IN A 127.0.0.2
mx3 IN A 127.0.0.3
mx4 IN A 127.0.0.1
mx5 IN A 127.0.0.2
_{p}._tcp.mx1 IN TLSA {ee}
_{p}._tcp.mx2 IN TLSA {ee}
_{p}._tcp.mx3 IN TLSA {ta}
_{p}._tcp.mx4 IN TLSA {ee}
"""
        unsigned = f"""
@ IN SOA ns.plain.test. admin.plain.test. 1 3600 600 86400 300
@ IN NS ns
ns IN A 127.0.0.1
insecure IN MX 10 mx
mx IN A 127.0.0.2
_{p}._tcp.mx IN TLSA {ee}
"""
        forged = tlsa_for(self.pinned, 3, 1, 2).text()

        def tamper(origin: str, text: str) -> str:
            """mx4's TLSA record and bogusmx's MX record changed after signing: their signatures no
            longer verify (bogus)."""
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if line.startswith(f"_{p}._tcp.mx4.dane.test.") and "\tTLSA\t" in line:
                    lines[i] = line.rsplit("\t", 1)[0] + "\t" + forged
                if line.startswith("bogusmx.dane.test.") and "\tMX\t" in line:
                    lines[i] = line.rsplit("\t", 1)[0] + "\t20 mx1.dane.test."
            return "\n".join(lines) + "\n"

        self.resolver = dnssec.ValidatingResolver(directory / "unbound", {"dane.test": (signed, True),
                                                                          "plain.test": (unsigned, False)}, tamper)

    def __enter__(self) -> World:
        self.resolver.start()
        for sink in self.sinks.values():
            sink.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for sink in self.sinks.values():
            sink.stop()
        self.resolver.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with World(tmp_path_factory.mktemp("dane")) as w:
        yield w


@pytest.fixture
async def harness(amqp_url, redis_url, write_policy, world) -> AsyncIterator[Harness]:
    for sink in world.sinks.values():
        sink.clear()
    policy = write_policy(f"""
    organization: {{hostname: gw.test}}
    outbound:
      mx_port: {world.port}
      mx_loopback: true
      dane: {{mode: opportunistic, resolver: "127.0.0.1:{world.resolver.port}"}}
    delivery: {{retry_delays: [60], expire_after: 600, connect_timeout: 5, command_timeout: 10}}
    dns: {{nameservers: ["127.0.0.1"], port: {world.resolver.port}, timeout: 2}}
    """)
    async for h in _harness(amqp_url, redis_url, policy):
        yield h


def _mx(domain: str) -> Envelope:
    return Envelope(mail_from="s@out.org", rcpt_to=[f"a@{domain}"], itinerary=["routing", "egress"],
                    route=Route(name=f"mx:{domain}", kind="mx", domain=domain, tls="opportunistic"),
                    message_id_header="<d1@out.org>")


async def _counts(h: Harness, domain: str) -> dict[str, int]:
    return await tlsrpt.counts(h.runtime.redis, domain, utcnow())


async def _deferred(h: Harness, envelope: Envelope) -> str:
    await _events(h, envelope.id, "DEFER")
    [defer] = await h.runtime.trace.events(envelope.id)
    return defer.detail


async def test_a_pinned_self_signed_certificate_delivers_and_dane_outranks_mta_sts(harness, world) -> None:
    h = harness
    # An MTA-STS enforce policy (cached for the published id) that names no MX of the domain: applied,
    # it would defer; DANE takes precedence.
    policy = parse_policy("version: STSv1\r\nmode: enforce\r\nmx: elsewhere.example\r\nmax_age: 86400\r\n")
    await h.runtime.redis.set(CACHE_PREFIX + "match.dane.test", json.dumps({"id": "1", "policy": policy.to_json()}))
    await h.runtime.redis.delete(tlsrpt.counter_key("match.dane.test", utcnow()))
    envelope = _mx("match.dane.test")
    await h.send(envelope)
    [got] = await asyncio.to_thread(world.sinks["pinned"].wait_for, 1, 15)
    assert got.tls and got.data == DATA
    assert "DELIVER" in await _events(h, envelope.id, "DELIVER")
    assert await _counts(h, "match.dane.test") == {"successful": 1}
    applied = await tlsrpt.applied_policy(h.runtime.redis, "match.dane.test", utcnow())
    assert applied == tlsrpt.AppliedPolicy("tlsa", (tlsa_for(world.pinned, 3, 1, 1).text(),), ("mx1.dane.test",))


async def test_a_certificate_the_tlsa_records_do_not_pin_defers(harness, world) -> None:
    h = harness
    await h.runtime.redis.delete(tlsrpt.counter_key("mismatch.dane.test", utcnow()))
    envelope = _mx("mismatch.dane.test")
    await h.send(envelope)
    detail = await _deferred(h, envelope)
    assert detail.startswith("421 4.7.5") and "DANE" in detail, detail
    assert await _counts(h, "mismatch.dane.test") == {"tlsa-invalid": 1}
    await asyncio.sleep(0.3)
    assert world.sinks["other"].messages == [], "neither in clear text nor over unauthenticated TLS"


async def test_a_bogus_tlsa_answer_defers_without_connecting(harness, world) -> None:
    h = harness
    envelope = _mx("bogus.dane.test")
    await h.send(envelope)
    detail = await _deferred(h, envelope)
    assert "4.7.5" in detail and "TLSA look-up failed" in detail, detail
    await asyncio.sleep(0.3)
    assert world.sinks["pinned"].messages == [], "the certificate would have matched the signed data"


async def test_a_bogus_mx_answer_defers(harness, world) -> None:
    h = harness
    await h.runtime.redis.delete(tlsrpt.counter_key("bogusmx.dane.test", utcnow()))
    envelope = _mx("bogusmx.dane.test")
    await h.send(envelope)
    detail = await _deferred(h, envelope)
    assert detail.startswith("451 4.7.5") and "MX look-up failed" in detail, detail
    assert await _counts(h, "bogusmx.dane.test") == {"dnssec-invalid": 1}
    await asyncio.sleep(0.3)
    assert world.sinks["pinned"].messages == []


async def test_dane_ta_delivers_to_a_certificate_of_the_named_ca(harness, world) -> None:
    h = harness
    await h.send(_mx("ta.dane.test"))
    [got] = await asyncio.to_thread(world.sinks["ca"].wait_for, 1, 15)
    assert got.tls


async def test_tlsa_records_that_do_not_validate_are_ignored(harness, world) -> None:
    """plain.test is unsigned: its TLSA record (pinning another certificate) comes without the AD bit."""
    h = harness
    await h.send(_mx("insecure.plain.test"))
    [got] = await asyncio.to_thread(world.sinks["other"].wait_for, 1, 15)
    assert got.tls


async def test_a_signed_domain_without_tlsa_is_delivered_as_before(harness, world) -> None:
    h = harness
    await h.send(_mx("notlsa.dane.test"))
    await asyncio.to_thread(world.sinks["other"].wait_for, 1, 15)


async def test_dane_off_delivers_where_tlsa_would_defer(amqp_url, redis_url, write_policy, world) -> None:
    world.sinks["other"].clear()
    policy = write_policy(f"""
    organization: {{hostname: gw.test}}
    outbound:
      mx_port: {world.port}
      mx_loopback: true
      dane: {{mode: "off", resolver: "127.0.0.1:{world.resolver.port}"}}
    dns: {{nameservers: ["127.0.0.1"], port: {world.resolver.port}, timeout: 2}}
    """)
    async for h in _harness(amqp_url, redis_url, policy):
        await h.send(_mx("mismatch.dane.test"))
        await asyncio.to_thread(world.sinks["other"].wait_for, 1, 15)
