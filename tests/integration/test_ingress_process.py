"""Ingress as real worker processes (the CLI, uvloop) sharing one SMTP port, driven by swaks."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from mailmoat_platform.bus import Bus, decode
from mailmoat_platform.models import Envelope
from tests.support.gateway import Gateway

pytestmark = pytest.mark.integration

POLICY = """
organization:
  hostname: gw.example.net
accepted_domains:
  - {domain: example.com}
pipeline:
  route_at_ingress: false  # the workers' output is read from mailmoat.routing
"""

MESSAGE = (
    b"From: Sender <s@sender.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: swaks through two workers\r\n"
    b"Message-ID: <swaks-{n}@sender.org>\r\n"
    b"\r\n"
    b"body line\r\n"
    b"..dot-stuffed on the wire\r\n"
)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A server certificate+key PEM for 127.0.0.1 and the CA that issued it."""
    ca = trustme.CA()
    server = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


@pytest.fixture
def gateway(tmp_path: Path, amqp_url: str, redis_url: str, tls_files: tuple[Path, Path]) -> Iterator[Gateway]:
    server_pem, _ = tls_files
    gw = Gateway(
        tmp_path / "gw", amqp_url, redis_url, policy_text=POLICY, ingress_workers=2, log_format="text",
        extra_env={"MAILMOAT_TLS_CERT": str(server_pem), "MAILMOAT_TLS_KEY": str(server_pem)},
    )
    with gw:
        gw.start(("ingress",))
        yield gw


@pytest.fixture
async def probe(amqp_url: str) -> AsyncIterator[Bus]:
    bus = Bus(amqp_url)
    await bus.connect()
    await bus.declare_stage("routing")
    yield bus
    await bus.close()


async def drain(bus: Bus, expected: int, timeout: float = 10.0) -> list[tuple[Envelope, bytes]]:
    """Take every frame from mailmoat.routing until ``expected`` arrived (or the time is up)."""
    assert bus.channel is not None
    queue = await bus.channel.get_queue("mailmoat.routing")
    frames: list[tuple[Envelope, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(frames) < expected and time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
        else:
            frames.append(decode(message.body))
    return frames


def swaks(port: int, data: bytes, ca_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--helo", "swaks.sender.org",
         "--from", "s@sender.org", "--to", "bob@example.com",
         "--pipeline", "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
         "--no-data-fixup", "--data", "-"],
        input=data.decode() + ".", capture_output=True, text=True, timeout=30,
    )


def accepted(gw: Gateway, worker: int) -> float:
    match = re.search(r'^mailmoat_ingress_messages_total\{result="accepted"\} (\S+)$',
                      gw.metrics("ingress", worker), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_two_workers_share_the_port_swaks_pipeline_tls(gateway: Gateway, probe: Bus,
                                                           tls_files: tuple[Path, Path]) -> None:
    _, ca_file = tls_files
    sent: dict[str, bytes] = {}
    for n in range(40):  # until the kernel has handed connections to both workers
        data = MESSAGE.replace(b"{n}", str(n).encode())
        result = await asyncio.to_thread(swaks, gateway.smtp_port, data, ca_file)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "=== TLS started" in out and "<~  250 2.6.0 " in out, out
        assert out.index(" ~> DATA") < out.index("<~  250 2.1.0 Sender ok"), out  # pipelined
        sent[f"<swaks-{n}@sender.org>"] = data
        if n >= 3 and accepted(gateway, 0) and accepted(gateway, 1):
            break
    assert accepted(gateway, 0) > 0 and accepted(gateway, 1) > 0
    assert accepted(gateway, 0) + accepted(gateway, 1) == len(sent)

    frames = await drain(probe, len(sent))
    assert len(frames) == len(sent)
    for envelope, data in frames:
        original = sent[envelope.message_id_header or ""]
        received, _, rest = data.partition(b"\r\n\tby ")
        assert received.startswith(b"Received: from swaks.sender.org (unknown [127.0.0.1])\r\n\t(using TLSv1.")
        head, _, rest = rest.partition(b"\r\n")
        assert head.startswith(b"gw.example.net (mailmoat) with ESMTPS id " + envelope.id.encode())
        assert rest.startswith(b"\tfor <bob@example.com>; ")
        assert rest.split(b"\r\n", 1)[1] == original.replace(b"\r\n..", b"\r\n.")
        assert envelope.tls is not None and envelope.tls.cipher
        assert envelope.helo == "swaks.sender.org" and envelope.rcpt_to == ["bob@example.com"]


async def test_sigterm_stops_one_worker_the_other_serves_on(gateway: Gateway, probe: Bus,
                                                            tls_files: tuple[Path, Path]) -> None:
    _, ca_file = tls_files
    assert gateway.kill("ingress", 0, signal.SIGTERM, timeout=30) == 0
    assert gateway.ready("ingress", 1)
    for n in range(3):
        result = await asyncio.to_thread(swaks, gateway.smtp_port, MESSAGE.replace(b"{n}", b"%d" % n), ca_file)
        assert result.returncode == 0, result.stdout + result.stderr
    assert accepted(gateway, 1) == 3
    assert len(await drain(probe, 3)) == 3
