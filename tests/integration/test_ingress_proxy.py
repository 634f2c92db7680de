"""PROXY protocol in the in-process ingress: the proxied client survives STARTTLS (aiosmtpd starts a new
session on the TLS transport) and is what the envelope, the relay check and the Received header see."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from tests.integration.test_ingress_service import (  # noqa: F401  (fixtures)
    POLICY,
    make_settings,
    probe,
    received_prefix,
    running,
    take,
)
from tests.support.smtpwire import command, reply

pytestmark = pytest.mark.integration

TRUSTED = POLICY + """
connection_filter:
  proxy_protocol:
    trusted_networks: [127.0.0.1/32]
    timeout: 2
"""


async def test_the_proxied_client_survives_starttls(make_settings, probe, tmp_path: Path) -> None:  # noqa: F811
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with running(make_settings(TRUSTED, tls_cert=str(pem), tls_key=str(pem))) as server:

        def attempt() -> list[str]:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                raw.sendall(b"PROXY TCP4 192.0.2.55 198.51.100.1 41000 25\r\n")
                answers = [reply(raw), command(raw, b"EHLO tls.client"), command(raw, b"STARTTLS")]
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    for line in (b"EHLO tls.client", b"MAIL FROM:<a@sender.org>", b"RCPT TO:<x@elsewhere.org>",
                                 b"RCPT TO:<bob@example.com>", b"DATA", b"Subject: p\r\n\r\nbody\r\n.", b"QUIT"):
                        answers.append(command(tls, line))
            return [a[:9] for a in answers]

        answers = await asyncio.to_thread(attempt)
        assert answers == ["220 gw.ex", "250-gw.ex", "220 2.0.0", "250-gw.ex", "250 2.1.0", "550 5.7.1",
                           "250 2.1.5", "354 End d", "250 2.6.0", "221 2.0.0"]
        envelope, data = await take(probe)
        assert (envelope.client_ip, envelope.client_port) == ("192.0.2.55", 41000)
        assert envelope.tls is not None
        received, _ = received_prefix(data)
        assert received.startswith(b"Received: from tls.client (unknown [192.0.2.55])\r\n\t(using TLSv1.")


async def test_a_trusted_peer_without_a_header_is_dropped(make_settings, probe) -> None:  # noqa: F811
    async with running(make_settings(TRUSTED)) as server:

        def attempt() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                raw.sendall(b"EHLO no.header\r\n")
                return raw.recv(100)

        assert await asyncio.to_thread(attempt) == b""


async def test_networks_the_deployment_trusts_count_with_the_policys(make_settings, probe,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILMOAT_PROXY_TRUSTED_NETWORKS (the Kubernetes proxy-protocol component) trusts its load
    balancers as the policy's ``trusted_networks`` would; without it the same header is refused."""

    def attempt(port: int) -> list[str]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"PROXY TCP4 192.0.2.77 198.51.100.1 42000 25\r\n")
            answers = [reply(raw)]
            for line in (b"EHLO lb.client", b"MAIL FROM:<a@sender.org>", b"RCPT TO:<bob@example.com>", b"DATA",
                         b"Subject: p\r\n\r\nbody\r\n.", b"QUIT"):
                answers.append(command(raw, line))
        return [a[:9] for a in answers]

    def untrusted(port: int) -> list[str]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"PROXY TCP4 192.0.2.77 198.51.100.1 42000 25\r\n")
            return [reply(raw)[:9], reply(raw)[:9]]

    async with running(make_settings(POLICY)) as server:
        assert await asyncio.to_thread(untrusted, server.port) == ["220 gw.ex", "421 4.7.0"]
    monkeypatch.setenv("MAILMOAT_PROXY_TRUSTED_NETWORKS", "10.9.0.0/16, 127.0.0.0/8")
    async with running(make_settings(POLICY)) as server:
        answers = await asyncio.to_thread(attempt, server.port)
        assert answers == ["220 gw.ex", "250-gw.ex", "250 2.1.0", "250 2.1.5", "354 End d", "250 2.6.0", "221 2.0.0"]
        envelope, _ = await take(probe)
        assert (envelope.client_ip, envelope.client_port) == ("192.0.2.77", 42000)
