"""Ingress limits end to end: rate limits shared by two ingress processes through Redis, PROXY protocol
from trusted and untrusted peers (raw bytes over sockets), greylisting deferring then accepting."""

from __future__ import annotations

import re
import smtplib
import socket
import struct
import textwrap
import time
from urllib.parse import urlsplit

import pytest
import redis

from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.infra import REDIS_TEST_URL
from tests.support.sink import SmtpSink
from tests.support.smtpwire import command, reply
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

MESSAGE = b"From: s@sender.test\r\nTo: alice@example.com\r\nSubject: limits\r\n\r\nbody\r\n"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def policy(extra: str) -> str:
    return textwrap.dedent(POLICY) + textwrap.dedent(extra)


def connect(source: str, port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
    if first:
        sock.sendall(first)
    return sock


def send_message(sock: socket.socket, rcpt: str = "alice@example.com") -> str:
    """EHLO … DATA on a greeted connection; the final reply (or the first refusal)."""
    for line in (b"EHLO client.test", b"MAIL FROM:<s@sender.test>", f"RCPT TO:<{rcpt}>".encode(), b"DATA"):
        answer = command(sock, line)
        if answer[:1] not in ("2", "3"):
            return answer
    return command(sock, MESSAGE + b".")


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def trace_events(ip: str, event: str, timeout: float = 15) -> list[dict]:
    return records.wait_until(lambda: records.events_by("ip", ip), lambda evs: any(e["event"] == event for e in evs),
                              f"{event} of {ip}", timeout)


def v2_tcp(src: str, sport: int) -> bytes:
    if ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        fam = 0x21
    else:
        body = socket.inet_aton(src) + socket.inet_aton("198.51.100.1")
        fam = 0x11
    body += struct.pack("!HH", sport, 25)
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


RATE_LIMITS = """
connection_filter:
  rate_limits:
    connections: 2
    messages_per_minute: 3
"""


def test_rate_limits_are_shared_by_two_ingress_processes(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(policy(RATE_LIMITS), ingress_workers=2)
    held = [connect("127.0.0.31", gateway.smtp_port) for _ in range(24)]
    greetings = [reply(sock) for sock in held]
    accepted = [sock for sock, text in zip(held, greetings, strict=True) if text.startswith("220 ")]
    refused = [text for text in greetings if not text.startswith("220 ")]
    assert len(accepted) == 2
    assert set(refused) == {"421 4.7.0 Too many connections from [127.0.0.31], try again later"}
    per_worker = [gateway.metrics("ingress", worker) for worker in (0, 1)]
    greeted = [metric(text, "mailmoat_smtp_replies_total", code="220") for text in per_worker]
    limited = [metric(text, "mailmoat_ingress_rate_limited_total", limit="connections") for text in per_worker]
    assert sum(greeted) == 2 and sum(limited) == 22
    # a process that refused while holding fewer than the limit itself knew of the other's connections
    assert any(n > 0 and g < 2 for g, n in zip(greeted, limited, strict=True)), (greeted, limited)
    for sock in held:
        sock.close()

    # closing gives the slots back (the release is asynchronous)
    deadline = time.monotonic() + 15
    while True:
        with connect("127.0.0.31", gateway.smtp_port) as one, connect("127.0.0.31", gateway.smtp_port) as two:
            if reply(one).startswith("220 ") and reply(two).startswith("220 "):
                break
        assert time.monotonic() < deadline, "connection slots not released"
        time.sleep(0.2)

    # messages per minute, counted across both processes
    results = []
    for _ in range(5):
        with connect("127.0.0.32", gateway.smtp_port) as sock:
            assert reply(sock).startswith("220 ")
            results.append(send_message(sock)[:9])
            command(sock, b"QUIT")
    assert results == ["250 2.6.0"] * 3 + ["450 4.7.1"] * 2
    assert len(sink.wait_for(3, timeout=30)) == 3
    events = trace_events("127.0.0.32", "REJECT")
    assert any("450 4.7.1 Too many messages from [127.0.0.32]" in e["detail"] for e in events)


PROXY = """
connection_filter:
  ip_block: [192.0.2.66]
  rate_limits:
    connections: 1
  proxy_protocol:
    trusted_networks: [127.0.0.20/32]
    timeout: 1
"""


def test_proxy_protocol_from_trusted_and_untrusted_peers(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(policy(PROXY))
    port = gateway.smtp_port

    # v1 from the trusted balancer: the real client is in the Received header and the trace
    with connect("127.0.0.20", port, b"PROXY TCP4 192.0.2.77 198.51.100.1 40000 25\r\n") as sock:
        assert reply(sock).startswith("220 gw.mailmoat.test")
        # every check sees the real client: the connection limit of 1 counts 192.0.2.77, not the balancer
        with connect("127.0.0.20", port, b"PROXY TCP4 192.0.2.77 198.51.100.1 40001 25\r\n") as second:
            assert reply(second) == "421 4.7.0 Too many connections from [192.0.2.77], try again later"
        with connect("127.0.0.20", port, b"PROXY TCP4 192.0.2.78 198.51.100.1 40002 25\r\n") as other:
            assert reply(other).startswith("220 ")
        assert send_message(sock).startswith("250 2.6.0")
    (got,) = sink.wait_for(1, timeout=30)
    received = got.data.split(b"\r\n\t")[0]
    assert received == b"Received: from client.test (unknown [192.0.2.77])", got.data[:300]
    events = trace_events("192.0.2.77", "RECEIVE")
    assert any(e["event"] == "RECEIVE" and e["detail"].startswith("from 192.0.2.77 ") for e in events)

    # v2 over IPv6 from the trusted balancer
    with connect("127.0.0.20", port, v2_tcp("2001:db8::77", 40003)) as sock:
        assert reply(sock).startswith("220 ")
        assert send_message(sock).startswith("250 2.6.0")
    got = sink.wait_for(2, timeout=30)[-1]
    assert got.data.split(b"\r\n\t")[0] == b"Received: from client.test (unknown [2001:db8::77])"
    trace_events("2001:db8::77", "RECEIVE")

    # so does the relay check: a proxied internal server may relay, the balancer's own address may not
    with connect("127.0.0.20", port, b"PROXY TCP4 127.0.0.10 198.51.100.1 40007 25\r\n") as sock:
        assert reply(sock).startswith("220 ")
        assert command(sock, b"EHLO onprem.test").startswith("250")
        assert command(sock, b"MAIL FROM:<s@example.com>").startswith("250")
        assert command(sock, b"RCPT TO:<someone@elsewhere.test>").startswith("250 2.1.5")
    with connect("127.0.0.20", port, b"PROXY TCP4 192.0.2.79 198.51.100.1 40008 25\r\n") as sock:
        assert reply(sock).startswith("220 ")
        assert command(sock, b"EHLO outside.test").startswith("250")
        assert command(sock, b"MAIL FROM:<s@sender.test>").startswith("250")
        assert command(sock, b"RCPT TO:<someone@elsewhere.test>") == "550 5.7.1 Relaying denied"

    # the block list sees the proxied address
    with connect("127.0.0.20", port, v2_tcp("192.0.2.66", 40004)) as sock:
        assert reply(sock) == ("550 5.7.513 Service unavailable, client host [192.0.2.66] blocked using the "
                               "IP block list")

    # a trusted balancer that sends no header (or garbage) is dropped without a greeting
    with connect("127.0.0.20", port) as sock:
        assert reply(sock) == ""
    with connect("127.0.0.20", port, b"EHLO not-a-header\r\n") as sock:
        assert reply(sock) == ""

    # an untrusted peer sending a header, v1 or v2, is refused with 421 (after the greeting it got first)
    for source, header in (("127.0.0.21", b"PROXY TCP4 192.0.2.99 198.51.100.1 40005 25\r\n"),
                           ("127.0.0.22", v2_tcp("192.0.2.99", 40006))):
        with connect(source, port, header) as sock:
            assert reply(sock).startswith("220 ")
            assert reply(sock) == "421 4.7.0 PROXY header not accepted from this address"
            assert reply(sock) == ""
        events = trace_events(source, "REJECT")
        assert any("PROXY header not accepted" in e["detail"] for e in events)
    text = gateway.metrics("ingress")
    assert metric(text, "mailmoat_ingress_proxy_total", result="refused") == 2
    assert metric(text, "mailmoat_ingress_proxy_total", result="dropped") == 2
    assert len(sink.messages) == 2


GREYLIST = """
connection_filter:
  greylisting:
    enabled: true
    delay: 1
"""


def test_greylisting_defers_the_first_attempt_then_accepts_the_retry(gateway_factory, sink: SmtpSink) -> None:
    gateway = gateway_factory(policy(GREYLIST))

    def attempt(source: str = "127.0.0.41", rcpt: str = "alice@example.com") -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, source_address=(source, 0), timeout=30) as client:
            try:
                client.sendmail("s@sender.test", [rcpt], MESSAGE)
            except smtplib.SMTPRecipientsRefused as exc:
                return exc.recipients
        return {}

    deferred = {"alice@example.com": (451, b"4.7.1 Greylisted, please try again later")}
    assert attempt() == deferred
    assert attempt("127.0.0.42") == deferred  # the same /24, before the delay
    time.sleep(1.2)
    assert attempt("127.0.0.42") == {}  # a retry from the same /24 after the delay
    assert attempt() == {}  # remembered: no delay any more
    assert attempt("127.0.0.10") == {}  # internal: exempt
    assert attempt(rcpt="bob@example.com") == {"bob@example.com": deferred["alice@example.com"]}
    assert len(sink.wait_for(3, timeout=30)) == 3
    text = gateway.metrics("ingress")
    assert metric(text, "mailmoat_ingress_greylist_total", result="deferred") == 3
    assert metric(text, "mailmoat_ingress_greylist_total", result="passed") == 1
    assert metric(text, "mailmoat_ingress_greylist_total", result="known") == 1


DEAD = """
connection_filter:
  rate_limits:
    connections: 1
    connection_ttl: 10
"""


def test_connection_slots_of_a_killed_ingress_expire(gateway_factory) -> None:
    gateway = gateway_factory(policy(DEAD))
    held = connect("127.0.0.33", gateway.smtp_port)
    assert reply(held).startswith("220 ")
    gateway.kill("ingress")  # SIGKILL: the slot is never given back
    held.close()
    gateway.start_service("ingress")
    with connect("127.0.0.33", gateway.smtp_port) as sock:
        assert reply(sock) == "421 4.7.0 Too many connections from [127.0.0.33], try again later"
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        assert client.zcard("mailmoat:rl:conn:127.0.0.33/32") == 1  # the dead process's slot, not refreshed
        deadline = time.monotonic() + 30
        while client.zcard("mailmoat:rl:conn:127.0.0.33/32") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        client.close()
    with connect("127.0.0.33", gateway.smtp_port) as sock:
        assert reply(sock).startswith("220 ")


LEFT = """
connection_filter:
  rate_limits:
    connections: 2
    connection_ttl: 600
"""


def test_a_client_that_leaves_during_the_connection_check_gives_its_slot_back(gateway_factory, redis_url) -> None:
    """aiosmtpd cancels a session's handler when its client goes; a connection check cancelled after its
    script was sent left the slot counted in Redis until it expired (here: 10 minutes), so a client that
    hung up early enough, often enough, locked itself out. Redis is slowed through a proxy so that the
    clients here leave while their checks are on the way."""
    url = urlsplit(redis_url)
    key = "mailmoat:rl:conn:127.0.0.34/32"
    client = redis.Redis.from_url(redis_url)
    with TcpProxy(url.port or 6379, url.hostname or "127.0.0.1") as proxy:
        try:
            gateway = gateway_factory(policy(LEFT), redis=url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl())
            with connect("127.0.0.34", gateway.smtp_port) as first:  # the script loaded, the connection open
                assert reply(first).startswith("220 ") and client.zcard(key) == 1
            wait_until(lambda: client.zcard(key) == 0)
            proxy.delay(0.2)  # a check now takes 0.4 s
            for _ in range(3):
                with connect("127.0.0.34", gateway.smtp_port):
                    time.sleep(0.1)  # the check is on its way; the client leaves before its answer
            time.sleep(1.5)  # every script has run in Redis
            proxy.delay(0)
            wait_until(lambda: client.zcard(key) == 0)
            assert client.zcard(key) == 0, "slots of clients that left are still counted"
            with connect("127.0.0.34", gateway.smtp_port) as one, connect("127.0.0.34", gateway.smtp_port) as two:
                assert reply(one).startswith("220 ") and reply(two).startswith("220 ")
        finally:
            client.close()


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
