"""The SMTP ingress in-process against the real RabbitMQ and Redis, driven by smtplib and raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import smtplib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trustme
from aio_pika import DeliveryMode
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from mailmoat_ingress.service import IngressServer
from mailmoat_ingress.smtp import IngressSMTP
from mailmoat_platform.bus import Bus, decode
from mailmoat_platform.models import Envelope
from mailmoat_platform.settings import Settings
from tests.support.infra import RABBITMQ_PORT, free_port
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

POLICY = """
organization:
  hostname: gw.example.net
  internal_networks: [127.0.0.3/32]
accepted_domains:
  - {domain: example.com}
  - {domain: dbeb.example.com, dbeb: true}
directory: [known@dbeb.example.com]
limits:
  max_message_size: 200000
  max_header_size: 2048
  max_received_headers: 5
  max_sessions: 50
pipeline:
  route_at_ingress: false  # these tests read what ingress hands to the next stage
"""


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(settings: Settings, *, wait_bus: bool = True) -> AsyncIterator[IngressServer]:
    server = IngressServer(settings, grace=2.0)
    await server.start()
    try:
        if wait_bus:
            await _until(lambda: server.runtime.bus.connected, 15)
        yield server
    finally:
        await server.stop(grace=2.0)


@pytest.fixture
async def probe(amqp_url: str) -> AsyncIterator[Bus]:
    """A second connection to the test vhost that reads mailmoat.routing (purged first)."""
    bus = Bus(amqp_url)
    await bus.connect()
    await bus.declare_stage("routing")
    assert bus.channel is not None
    await (await bus.channel.get_queue("mailmoat.routing")).purge()
    yield bus
    await bus.close()


async def take_message(bus: Bus, timeout: float = 5.0) -> AbstractIncomingMessage:
    assert bus.channel is not None
    queue = await bus.channel.get_queue("mailmoat.routing")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    raise AssertionError("nothing published to mailmoat.routing")


async def take(bus: Bus, timeout: float = 5.0) -> tuple[Envelope, bytes]:
    return decode((await take_message(bus, timeout)).body)


async def depth(bus: Bus) -> int:
    return await bus.queue_depth("mailmoat.routing")


@pytest.fixture
def make_settings(amqp_url: str, redis_url: str, write_policy) -> Callable[..., Settings]:
    def make(policy: str = POLICY, **overrides: object) -> Settings:
        settings = Settings(
            records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(write_policy(policy)),
            smtp_port=0,
            log_format="text", publish_timeout=3.0,
        )
        settings.metrics_ports = {}
        for key, value in overrides.items():
            setattr(settings, key, value)
        return settings

    return make


def received_prefix(data: bytes) -> tuple[bytes, bytes]:
    """Split the gateway's Received header (first field, with folds) from the rest."""
    end = 0
    while True:
        end = data.index(b"\r\n", end) + 2
        if data[end : end + 1] not in (b" ", b"\t"):
            return data[:end], data[end:]


def smtp_client(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=10)


class Raw:
    """A line-oriented raw SMTP client for what smtplib refuses to send."""

    def __init__(self, port: int, source: str = "127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.buffer = b""

    def reply(self) -> str:
        """One complete (possibly multi-line) reply."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed after {lines!r} {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] == b" ":
                return "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


# --- acceptance ---------------------------------------------------------------------------------


async def test_accepted_message_is_published_byte_exact(make_settings, probe, redis_url) -> None:
    sent = (
        b"X-Mailmoat-Antispam-Report: SCL:-1\r\n\tforged\r\n"
        b"From: Alice <alice@sender.org>\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
        b"Message-ID: <m-1@sender.org>\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.org;\r\n b=AAAA\r\n"
        b"\r\n"
        b".leading dot line\r\n"
        b"caf\xc3\xa9 8bit  trailing spaces  \r\n"
        b"X-Mailmoat-In-Body: kept\r\n"
    )
    expected = sent.split(b"From:", 1)[1]
    expected = b"From:" + expected

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    accepted_before = sample("mailmoat_ingress_messages_total", {"result": "accepted"})
    timed_before = sample("mailmoat_ingress_accept_seconds_count")
    queued_before = sample("mailmoat_smtp_replies_total", {"code": "250"})
    async with running(make_settings()) as server:

        def send() -> tuple[int, bytes]:
            with smtp_client(server.port) as client:
                code, ehlo = client.ehlo("mx.sender.org")
                assert code == 250
                for keyword in (b"PIPELINING", b"8BITMIME", b"SMTPUTF8", b"ENHANCEDSTATUSCODES", b"SIZE 200000"):
                    assert keyword in ehlo
                assert b"STARTTLS" not in ehlo
                assert client.mail("alice@sender.org", ["BODY=8BITMIME"])[0] == 250
                assert client.rcpt("bob@example.com") == (250, b"2.1.5 Recipient ok")
                assert client.rcpt("carol@example.com")[0] == 250
                return client.data(sent)

        code, text = await asyncio.to_thread(send)
        assert code == 250
        message = await take_message(probe)
        envelope, data = decode(message.body)
        assert message.delivery_mode == DeliveryMode.PERSISTENT
        assert (message.headers or {}).get("x-mailmoat-id") == envelope.id
        traceparent = str((message.headers or {}).get("traceparent"))
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", traceparent)
        assert text == f"2.6.0 {envelope.id} Queued mail for delivery".encode()
        received, rest = received_prefix(data)
        assert rest == expected
        assert received.startswith(b"Received: from mx.sender.org (unknown [127.0.0.1])\r\n\tby gw.example.net ")
        assert f"with ESMTP id {envelope.id}".encode() in received
        assert envelope.mail_from == "alice@sender.org"
        assert envelope.rcpt_to == ["bob@example.com", "carol@example.com"]
        assert envelope.client_ip == "127.0.0.1" and envelope.client_port > 0
        assert envelope.helo == "mx.sender.org"
        assert envelope.body_type == "8BITMIME"
        assert envelope.message_id_header == "<m-1@sender.org>"
        assert envelope.direction == "inbound"
        assert envelope.itinerary == ["routing", "egress"]
        assert envelope.size == len(data)
        assert envelope.tls is None
        assert await depth(probe) == 0  # one message, one publish, whatever the recipient count
        assert sample("mailmoat_ingress_messages_total", {"result": "accepted"}) == accepted_before + 1
        assert sample("mailmoat_ingress_accept_seconds_count") == timed_before + 1
        # EHLO, MAIL, two RCPT, end of DATA
        assert sample("mailmoat_smtp_replies_total", {"code": "250"}) == queued_before + 5
        await _until(lambda: not server.ctx.sessions)
        assert sample("mailmoat_smtp_sessions") == 0

        events = []

        async def traced() -> bool:
            events[:] = await server.runtime.trace.events(envelope.id)
            return bool(events)

        for _ in range(100):
            if await traced():
                break
            await asyncio.sleep(0.05)
        assert [e.event for e in events] == ["RECEIVE"]
        assert await server.runtime.trace.find("<m-1@sender.org>") == [envelope.id]
        assert await server.runtime.trace.find("bob@example.com") == [envelope.id]


async def test_null_sender_and_smtputf8(make_settings, probe) -> None:
    async with running(make_settings()) as server:

        def send() -> None:
            with smtp_client(server.port) as client:
                client.ehlo("mx")
                client.sendmail("<>", ["bob@example.com"], b"Subject: bounce\r\n\r\nx\r\n")
                client.sendmail("jos\u00e9@sender.org", ["b\u00f6b@example.com"], b"Subject: u\r\n\r\ny\r\n",
                                mail_options=["SMTPUTF8"])

        await asyncio.to_thread(send)
        first, _ = await take(probe)
        assert first.mail_from == "" and not first.smtputf8
        second, data = await take(probe)
        assert second.smtputf8 and second.rcpt_to == ["b\u00f6b@example.com"]
        assert b" with UTF8SMTP id " in data


# --- relay, DBEB, limits --------------------------------------------------------------------------


async def test_relay_denied_from_outside_allowed_from_internal(make_settings, probe, redis_url) -> None:
    async with running(make_settings()) as server:

        def attempt(source: str) -> tuple[int, bytes]:
            with smtp_client(server.port, source) as client:
                client.ehlo("client")
                client.mail("someone@example.com")
                reply = client.rcpt("victim@elsewhere.org")
                if reply[0] == 250:
                    assert client.data(b"Subject: out\r\n\r\nx\r\n")[0] == 250
                return reply

        before = REGISTRY.get_sample_value("mailmoat_smtp_replies_total", {"code": "550"}) or 0
        assert await asyncio.to_thread(attempt, "127.0.0.2") == (550, b"5.7.1 Relaying denied")
        assert REGISTRY.get_sample_value("mailmoat_smtp_replies_total", {"code": "550"}) == before + 1
        assert await depth(probe) == 0
        assert (await asyncio.to_thread(attempt, "127.0.0.3"))[0] == 250
        envelope, _ = await take(probe)
        assert envelope.direction == "outbound" and envelope.client_ip == "127.0.0.3"

        ids: list[str] = []
        for _ in range(100):
            ids = await server.runtime.trace.find("victim@elsewhere.org")
            if len(ids) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(ids) == 2
        first = await server.runtime.trace.events(ids[0])
        assert [(e.event, e.detail) for e in first] == [("REJECT", "550 5.7.1 Relaying denied")]
        assert [e.event for e in await server.runtime.trace.events(ids[1])] == ["RECEIVE"]
        assert ids[1] == envelope.id


async def test_directory_based_edge_blocking(make_settings, probe) -> None:
    async with running(make_settings()) as server:

        def attempt() -> list[tuple[int, bytes]]:
            with smtp_client(server.port, "127.0.0.3") as client:
                client.ehlo("client")
                client.mail("a@sender.org")
                return [client.rcpt("known@dbeb.example.com"), client.rcpt("unknown@dbeb.example.com")]

        known, unknown = await asyncio.to_thread(attempt)
        assert known[0] == 250
        assert unknown == (550, b"5.4.1 Recipient address rejected: Access denied")


async def test_size_limits(make_settings, probe) -> None:
    async with running(make_settings()) as server:

        def attempt() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            with smtp_client(server.port) as client:
                client.ehlo("client")
                declared = client.mail("a@sender.org", ["SIZE=200001"])
                client.rset()
                client.mail("a@sender.org")
                client.rcpt("bob@example.com")
                body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 210
                return declared, client.data(body)

        declared, data = await asyncio.to_thread(attempt)
        assert declared == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert data == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert await depth(probe) == 0


async def test_recipient_limit_452_on_501st(make_settings, probe) -> None:
    async with running(make_settings()) as server:

        def attempt() -> tuple[list[int], tuple[int, bytes], int]:
            with smtp_client(server.port) as client:
                client.ehlo("client")
                client.mail("a@sender.org")
                codes = [client.rcpt(f"u{i}@example.com")[0] for i in range(500)]
                over = client.rcpt("u500@example.com")
                return codes, over, client.data(b"Subject: many\r\n\r\nx\r\n")[0]

        codes, over, data = await asyncio.to_thread(attempt)
        assert set(codes) == {250}
        assert over == (452, b"4.5.3 Too many recipients")
        assert data == 250
        envelope, _ = await take(probe)
        assert len(envelope.rcpt_to) == 500


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (b"X-Pad: " + b"h" * 900 + b"\r\nX-Pad2: " + b"h" * 900 + b"\r\nX-Pad3: " + b"h" * 400 + b"\r\n\r\nx\r\n",
         (552, b"5.3.4 Message header size exceeds limit")),
        (b"Received: from a\r\n" * 6 + b"Subject: loop\r\n\r\nx\r\n",
         (554, b"5.4.14 Hop count exceeded - possible mail loop")),
        (b"Subject: long\r\n\r\n" + b"l" * 5000 + b"\r\n", (554, b"5.6.0 Message line too long")),
        (b"Subject: longer\r\n\r\n" + b"l" * 150_000 + b"\r\nend\r\n", (554, b"5.6.0 Message line too long")),
    ],
    ids=["header-size", "hop-count", "line-length", "line-beyond-reader-buffer"],
)
async def test_content_limits(make_settings, probe, body: bytes, reply: tuple[int, bytes]) -> None:
    async with running(make_settings()) as server:

        def attempt() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            with smtp_client(server.port) as client:
                client.ehlo("client")
                client.mail("a@sender.org")
                client.rcpt("bob@example.com")
                refused = client.data(body)
                return refused, client.noop()

        refused, after = await asyncio.to_thread(attempt)
        assert refused == reply
        assert after[0] == 250  # the session goes on
        assert await depth(probe) == 0


def _tiny_parts(count: int) -> bytes:
    return (b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\n\r\nx\r\n" * count + b"--b--\r\n")


def _status_blocks(count: int) -> bytes:
    return (b"Subject: report\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\n" + b"X: y\r\n\r\n" * count + b"--b--\r\n")


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (_tiny_parts(999), False),  # 1000 entities with the message itself: the default limit
        (_tiny_parts(1000), True),
        (_tiny_parts(15_000), True),  # more than the stages' parser reads
        (_status_blocks(2_000), True),  # no delimiter lines: one entity per block of fields
        (b"Subject: table\r\n\r\n" + b"-------- | --------\r\n" * 3_000, False),  # counted by the parser
    ],
    ids=["limit", "over-limit", "over-parser", "status-blocks", "dash-lines"],
)
async def test_mime_part_limit(make_settings, probe, body: bytes, refused: bool) -> None:
    """More MIME entities than limits.max_mime_parts: refused at the end of DATA, nothing enqueued."""
    async with running(make_settings()) as server:

        def attempt() -> tuple[int, bytes]:
            with smtp_client(server.port) as client:
                client.ehlo("client")
                client.mail("a@sender.org")
                client.rcpt("bob@example.com")
                return client.data(body)

        reply = await asyncio.to_thread(attempt)
        if refused:
            assert reply == (554, b"5.6.0 Message has more than 1000 MIME parts")
            assert await depth(probe) == 0
        else:
            assert reply[0] == 250, reply
            _, data = await take(probe)
            assert data.endswith(body)


# --- smuggling, pipelining, TLS -------------------------------------------------------------------


@pytest.mark.parametrize(
    "separator", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"],
    ids=["lf-dot-lf", "crlf-dot-lf", "lf-dot-crlf", "cr-dot-crlf", "crlf-dot-cr"],
)
async def test_bare_lf_smuggling_is_refused_whole(make_settings, probe, separator: bytes) -> None:
    payload = (
        b"From: a@sender.org\r\nSubject: hello\r\n\r\nhi" + separator +
        b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
        b"From: admin@example.com\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    async with running(make_settings()) as server:

        def attempt() -> list[str]:
            raw = Raw(server.port)
            replies = [raw.reply()]
            raw.send(b"EHLO client\r\n")
            replies.append(raw.reply())
            raw.send(b"MAIL FROM:<a@sender.org>\r\n")
            replies.append(raw.reply())
            raw.send(b"RCPT TO:<bob@example.com>\r\n")
            replies.append(raw.reply())
            raw.send(b"DATA\r\n")
            replies.append(raw.reply())
            raw.send(payload)
            replies.append(raw.reply())
            raw.send(b"QUIT\r\n")
            replies.append(raw.reply())
            raw.close()
            return replies

        replies = await asyncio.to_thread(attempt)
        assert replies[4].startswith("354")
        assert replies[5] == "550 5.5.2 Message contains bare CR or LF (RFC 5321 2.3.8)"
        assert replies[6].startswith("221")
        await asyncio.sleep(0.3)
        assert await depth(probe) == 0


async def test_pipelined_client(make_settings, probe) -> None:
    async with running(make_settings()) as server:

        def attempt() -> list[str]:
            raw = Raw(server.port)
            raw.reply()
            raw.send(b"EHLO client\r\n")
            assert "PIPELINING" in raw.reply()
            raw.send(
                b"MAIL FROM:<a@sender.org>\r\nRCPT TO:<bob@example.com>\r\n"
                b"RCPT TO:<x@elsewhere.org>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n"
            )
            replies = [raw.reply() for _ in range(5)]
            raw.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@sender.org>\r\nRSET\r\nQUIT\r\n")
            replies += [raw.reply() for _ in range(4)]
            assert raw.closed()
            raw.close()
            return replies

        replies = await asyncio.to_thread(attempt)
        assert [r[:9] for r in replies] == [
            "250 2.1.0", "250 2.1.5", "550 5.7.1", "250 2.1.5", "354 End d",
            "250 2.6.0", "250 2.1.0", "250 2.0.0", "221 2.0.0",
        ]
        envelope, data = await take(probe)
        assert envelope.rcpt_to == ["bob@example.com", "carol@example.com"]
        assert data.endswith(b"\r\nSubject: pipelined\r\n\r\nbody\r\n")


async def test_starttls(make_settings, probe, tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with running(make_settings(tls_cert=str(pem), tls_key=str(pem))) as server:

        def attempt() -> tuple[bytes, bytes]:
            with smtp_client(server.port) as client:
                before = client.ehlo("tls.client")[1]
                client.starttls(context=client_context)
                after = client.ehlo("tls.client")[1]
                client.sendmail("a@sender.org", ["bob@example.com"], b"Subject: tls\r\n\r\nsecret\r\n")
                return before, after

        before, after = await asyncio.to_thread(attempt)
        assert b"STARTTLS" in before and b"STARTTLS" not in after
        envelope, data = await take(probe)
        assert envelope.tls is not None and (envelope.tls.version or "").startswith("TLSv1.")
        assert envelope.tls.cipher
        assert envelope.helo == "tls.client"
        received, rest = received_prefix(data)
        assert b"\r\n\t(using TLSv1." in received and f"with ESMTPS id {envelope.id}".encode() in received
        assert rest == b"Subject: tls\r\n\r\nsecret\r\n"


# --- failures and protection ----------------------------------------------------------------------


async def test_451_when_broker_unreachable(make_settings, probe) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    async with running(make_settings(amqp_url=dead, publish_timeout=2.0), wait_bus=False) as server:
        assert not server.runtime.ready()

        def attempt() -> tuple[int, bytes]:
            with smtp_client(server.port) as client:
                client.ehlo("client")
                client.mail("a@sender.org")
                client.rcpt("bob@example.com")
                return client.data(b"Subject: x\r\n\r\ny\r\n")

        assert await asyncio.to_thread(attempt) == (451, b"4.3.0 Temporary internal error, try again later")
    await asyncio.sleep(0.2)
    assert await depth(probe) == 0


def _send_one(port: int, subject: str) -> tuple[int, bytes]:
    with smtp_client(port) as client:
        client.ehlo("client")
        client.mail("a@sender.org")
        client.rcpt("bob@example.com")
        return client.data(f"Subject: {subject}\r\n\r\ny\r\n".encode())


async def test_451_when_the_broker_connection_is_cut_then_recovers(make_settings, probe, amqp_url: str) -> None:
    with TcpProxy(RABBITMQ_PORT) as proxy:
        proxied = amqp_url.replace(f":{RABBITMQ_PORT}/", f":{proxy.port}/")
        async with running(make_settings(amqp_url=proxied, publish_timeout=2.0)) as server:
            assert (await asyncio.to_thread(_send_one, server.port, "before"))[0] == 250
            proxy.cut()
            await _until(lambda: not server.runtime.bus.connected, 10)
            assert not server.runtime.ready()
            started = time.monotonic()
            reply = await asyncio.to_thread(_send_one, server.port, "during")
            assert reply == (451, b"4.3.0 Temporary internal error, try again later")
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.3)
            assert await depth(probe) == 1
            proxy.restore()
            await _until(lambda: server.runtime.bus.connected and server.runtime.ready(), 30)
            code, text = await asyncio.to_thread(_send_one, server.port, "after")
            assert code == 250, text
            subjects = [(await take(probe))[1].split(b"Subject: ")[1][:6] for _ in range(2)]
            assert subjects == [b"before", b"after\r"]


async def test_451_when_the_broker_hangs(make_settings, probe, amqp_url: str) -> None:
    with TcpProxy(RABBITMQ_PORT) as proxy:
        proxied = amqp_url.replace(f":{RABBITMQ_PORT}/", f":{proxy.port}/")
        async with running(make_settings(amqp_url=proxied, publish_timeout=1.0)) as server:
            assert (await asyncio.to_thread(_send_one, server.port, "before"))[0] == 250
            proxy.delay(20)  # the connection stays up, nothing comes back: the confirm never arrives in time
            started = time.monotonic()
            reply = await asyncio.to_thread(_send_one, server.port, "hung")
            assert reply == (451, b"4.3.0 Temporary internal error, try again later")
            assert time.monotonic() - started < 4
            proxy.cut()


async def test_mail_flows_while_the_trace_store_hangs(make_settings, probe, redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        proxy.delay(30)  # Redis accepts the connection and never answers in time
        proxied = redis_url.replace(f":{port}/", f":{proxy.port}/")
        async with running(make_settings(redis_url=proxied)) as server:

            def attempt() -> tuple[tuple[int, bytes], tuple[int, bytes], float]:
                started = time.monotonic()
                with smtp_client(server.port) as client:
                    client.ehlo("client")
                    client.mail("a@sender.org")
                    refused = client.rcpt("x@elsewhere.org")
                    client.rcpt("bob@example.com")
                    accepted = client.data(b"Subject: x\r\n\r\ny\r\n")
                return refused, accepted, time.monotonic() - started

            refused, accepted, elapsed = await asyncio.to_thread(attempt)
            assert refused[0] == 550 and accepted[0] == 250
            assert elapsed < 2.0
            assert len(server.ctx.background) >= 2  # the trace writes are still waiting, off the reply path
            envelope, _ = await take(probe)
            assert accepted[1] == f"2.6.0 {envelope.id} Queued mail for delivery".encode()
            proxy.cut()


async def test_stop_right_after_a_tls_session_quits(make_settings, probe, tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    server = IngressServer(make_settings(tls_cert=str(pem), tls_key=str(pem)), grace=2.0)
    await server.start()

    def session() -> None:
        client = smtp_client(server.port)
        client.ehlo("client")
        client.starttls(context=context)
        client.ehlo("client")
        client.quit()

    await asyncio.to_thread(session)
    await asyncio.wait_for(server.stop(grace=2.0), 10)  # a TLS transport closing under the 421 must not break stop
    assert not server.listening and not server.ctx.sessions


async def test_internal_error_is_451_without_details(make_settings, probe) -> None:
    async with running(make_settings()) as server:
        good_policy = server.ctx.policy

        def attempt() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            with smtp_client(server.port) as client:
                client.ehlo("client")
                client.mail("a@sender.org")

                def broken():
                    raise RuntimeError("secret internal detail")

                server.ctx.policy = broken
                try:
                    failed = client.rcpt("bob@example.com")
                finally:
                    server.ctx.policy = good_policy
                return failed, client.rcpt("bob@example.com")

        failed, recovered = await asyncio.to_thread(attempt)
        assert failed == (451, b"4.3.0 Temporary internal error, try again later")
        assert recovered[0] == 250


async def test_session_cap(make_settings, probe) -> None:
    policy = POLICY.replace("max_sessions: 50", "max_sessions: 2")
    async with running(make_settings(policy)) as server:

        def attempt() -> tuple[str, str]:
            first, second = Raw(server.port), Raw(server.port)
            assert first.reply().startswith("220 gw.example.net")
            assert second.reply().startswith("220")
            third = Raw(server.port)
            refused = third.reply()
            assert third.closed()
            third.close()
            first.send(b"QUIT\r\n")
            first.reply()
            first.close()
            deadline = time.monotonic() + 5
            while len(server.ctx.sessions) > 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            fourth = Raw(server.port)
            greeting = fourth.reply()
            fourth.close()
            second.close()
            return refused, greeting

        refused, greeting = await asyncio.to_thread(attempt)
        assert refused == "421 4.3.2 Too many connections, try again later"
        assert greeting.startswith("220 ")


async def test_command_budget(make_settings, probe) -> None:
    policy = POLICY.replace("max_sessions: 50", "max_sessions: 50\n  max_commands: 10")
    async with running(make_settings(policy)) as server:

        def attempt() -> list[str]:
            raw = Raw(server.port)
            raw.reply()
            replies = []
            for _ in range(11):
                raw.send(b"NOOP\r\n")
                replies.append(raw.reply())
            assert raw.closed()
            raw.close()
            return replies

        replies = await asyncio.to_thread(attempt)
        assert replies[:10] == ["250 2.0.0 Ok"] * 10
        assert replies[10] == "421 4.7.0 Too many commands"


async def test_policy_hot_reload(make_settings, probe) -> None:
    settings = make_settings()
    async with running(settings) as server:

        def rcpt() -> int:
            with smtp_client(server.port) as client:
                client.ehlo("client")
                client.mail("a@sender.org")
                return client.rcpt("new@new.example.org")[0]

        assert await asyncio.to_thread(rcpt) == 550
        extra = "  - {domain: example.com}\n  - {domain: new.example.org}"
        new_policy = POLICY.replace("  - {domain: example.com}", extra)
        await asyncio.to_thread(Path(settings.policy_path).write_text, new_policy)
        deadline = time.monotonic() + 6
        code = 550
        while code != 250 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            code = await asyncio.to_thread(rcpt)
        assert code == 250


async def test_graceful_stop_finishes_the_open_transaction(make_settings, probe) -> None:
    server = IngressServer(make_settings(), grace=5.0)
    await server.start()
    await _until(lambda: server.runtime.bus.connected, 15)
    raw = await asyncio.to_thread(Raw, server.port)
    idle = await asyncio.to_thread(Raw, server.port)

    def begin() -> None:
        raw.reply()
        idle.reply()
        raw.send(b"EHLO client\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<a@sender.org>\r\n")
        assert raw.reply().startswith("250")

    await asyncio.to_thread(begin)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.2)

    def finish() -> list[str]:
        replies = [idle.reply()]
        raw.send(b"RCPT TO:<bob@example.com>\r\nDATA\r\n")
        replies += [raw.reply(), raw.reply()]
        raw.send(b"Subject: last\r\n\r\nx\r\n.\r\n")
        replies += [raw.reply(), raw.reply()]
        return replies

    replies = await asyncio.to_thread(finish)
    await asyncio.wait_for(stopping, 10)
    raw.close()
    idle.close()
    assert replies[0].startswith("421 4.3.2")
    assert replies[1].startswith("250") and replies[2].startswith("354")
    assert replies[3].startswith("250 2.6.0") and replies[4].startswith("421 4.3.2")
    envelope, _ = await take(probe)
    assert envelope.rcpt_to == ["bob@example.com"]
    assert not server.listening



async def test_an_ended_session_is_freed_at_once_not_left_to_the_garbage_collector(make_settings, probe) -> None:
    """A session in a reference cycle lives (with its message) until the cyclic collector runs:
    ended sessions must be freed by reference counting alone."""

    def live_sessions() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is IngressSMTP)

    async with running(make_settings()) as server:

        def send(n: int) -> None:
            with smtp_client(server.port) as client:
                client.ehlo("mx.sender.org")
                assert client.mail("alice@sender.org")[0] == 250
                assert client.rcpt("bob@example.com")[0] == 250
                assert client.data(f"Subject: {n}\r\n\r\nbody\r\n".encode())[0] == 250

        gc.collect()
        gc.disable()
        try:
            for n in range(5):
                await asyncio.to_thread(send, n)
            await _until(lambda: not server.ctx.sessions)
            await asyncio.sleep(0.1)
            assert live_sessions() == 0
        finally:
            gc.enable()
