"""The stage's checks with their I/O: URI block lists over the loopback DNS server (listing, silence,
timeouts), Rspamd and spamd fakes folded into the score, the annotated bytes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from aiohttp import web

from mailmoat_antispam.check import Checker
from mailmoat_antispam.service import annotate
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from tests.support.dnsserver import DnsServer

pytestmark = pytest.mark.integration

ZONE = """
evil.test.uribl.test. 60 IN A 127.0.0.2
9.2.0.192.uribl.test. 60 IN A 127.0.0.4
error.test.uribl.test. 60 IN A 127.255.255.254
"""
MSG = (b"From: Ann <ann@sender.test>\r\nTo: bob@example.com\r\nSubject: links\r\n"
       b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <u1@sender.test>\r\n\r\n"
       b"see http://www.shop.evil.test/buy and http://192.0.2.9/x and http://fine.test/ http://error.test/\r\n")


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE, timeout_names={"fine.test.slow.test"}) as server:
        yield server


def envelope() -> Envelope:
    return Envelope(client_ip="192.0.2.1", helo="h.test", mail_from="ann@sender.test", rcpt_to=["bob@example.com"])


async def test_uribl_listing_scores_and_silent_zone_is_skipped(dns: DnsServer) -> None:
    policy = parse_policy(f"""
dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 1}}
antispam:
  uribl_timeout: 0.5
  uribl: [{{zone: uribl.test, score: 4}}, {{zone: slow.test, score: 9}}]
""")
    outcome = await Checker().check(envelope(), MSG, policy, authenticate_sender=False)
    detail = outcome.verdict.detail
    assert "URIBL_uribl.test" in detail["rules"] and "URIBL_slow.test" not in detail["rules"]
    assert ("uribl.test", "A") not in dns.queries
    assert ("evil.test.uribl.test.", "A") in dns.queries or ("evil.test.uribl.test", "A") in dns.queries
    assert any("slow.test: no answer for fine.test" in n for n in detail["notes"])
    assert detail["score"] >= 4


async def test_engines_are_folded_in_and_their_absence_does_not_block(dns: DnsServer) -> None:
    async def check(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps({"score": 3.0, "required_score": 15}))

    app = web.Application()
    app.router.add_post("/checkv2", check)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rspamd_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def spamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 6.0 / 5.0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(spamd, "127.0.0.1", 0)
    spamd_port = server.sockets[0].getsockname()[1]
    base = f"dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 1}}\n"
    try:
        policy = parse_policy(base + f"antispam: {{engines: {{rspamd_url: 'http://127.0.0.1:{rspamd_port}', "
                                     f"spamd: '127.0.0.1:{spamd_port}', weight: 0.5, timeout: 2}}}}")
        outcome = await Checker().check(envelope(), MSG, policy, authenticate_sender=False)
        assert {"RSPAMD", "SPAMD"} <= set(outcome.verdict.detail["rules"])
        assert outcome.verdict.detail["score"] == 4.5
    finally:
        server.close()
        await runner.cleanup()
    outcome = await Checker().check(envelope(), MSG, policy, authenticate_sender=False)  # both gone now
    assert outcome.verdict.result == "clean" and len(outcome.verdict.detail["notes"]) == 2


async def test_annotate_prepends_and_strips_only_spoofed_authres(dns: DnsServer) -> None:
    policy = parse_policy(f"organization: {{hostname: gw.test}}\ndns: {{nameservers: [127.0.0.1], port: {dns.port}, "
                          "timeout: 0.5}\n")
    spoofed = b"Authentication-Results: gw.test; spf=pass smtp.mailfrom=sender.test\r\n" + MSG
    outcome = await Checker().check(envelope(), spoofed, policy)
    out = annotate(outcome, envelope(), spoofed, policy)
    assert out.endswith(MSG) and out.count(b"Authentication-Results: gw.test") == 1
    assert out.startswith(b"X-Mailmoat-Antispam-Report: ") and b"\r\nX-Mailmoat-SCL: " in out
