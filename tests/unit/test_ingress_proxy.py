"""PROXY protocol headers: v1 and v2 (TCP4, TCP6, LOCAL), malformed input, and the untrusted-peer guard."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from mailmoat_ingress.proxy import V2_TAIL, GuardedReader, client_from, is_header_line, read_header

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PEER = ("10.0.0.5", 40000)


def v2(command: int, fam_proto: int, body: bytes) -> bytes:
    return V2_SIG + bytes([0x20 | command, fam_proto]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlv: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlv
    return v2(0x1, 0x11, body)


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return v2(0x1, 0x21, body + struct.pack("!HH", sport, dport))


def parse(raw: bytes, eof: bool = True, timeout: float = 1.0) -> tuple[tuple[str, int] | None, bytes]:
    """The client address for ``raw`` and what the reader has left afterwards (the SMTP stream)."""

    async def run() -> tuple[tuple[str, int] | None, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        if eof:
            reader.feed_eof()
        data = await read_header(reader, timeout)
        rest = bytes(reader._buffer)  # type: ignore[attr-defined]
        return client_from(data, PEER), rest

    return asyncio.run(run())


def test_v1_tcp4_and_tcp6_give_the_source_and_leave_the_smtp_stream() -> None:
    assert parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\r\nEHLO x\r\n") == (("192.0.2.7", 51000), b"EHLO x\r\n")
    assert parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 25\r\n")[0] == ("2001:db8::7", 51000)


def test_v1_unknown_keeps_the_peer() -> None:
    assert parse(b"PROXY UNKNOWN\r\n")[0] == PEER
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")[0] == PEER


@pytest.mark.parametrize("raw", [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 51000\r\n",          # a port missing
    b"PROXY TCP4 192.0.2.999 198.51.100.1 1 25\r\n",         # not an address
    b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",         # family mismatch
    b"PROXY TCP6 192.0.2.7 198.51.100.1 1 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",       # port out of range
    b"PROXY TCP4 192.0.2.7 198.51.100.1 01 25\r\n",          # leading zero
    b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",           # not TCP
    b"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",          # double space
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25 extra\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",             # LF only
    b"PROXY " + b"A" * 120 + b"\r\n",                        # longer than 107 octets
    b"PROXYTCP4 192.0.2.7 198.51.100.1 1 25\r\n",
    b"EHLO client.example\r\n",                               # no header at all
    b"PRO",                                                   # connection closed mid-header
])
def test_v1_malformed_is_dropped(raw: bytes) -> None:
    assert parse(raw)[0] is None


def test_v2_tcp4_tcp6_with_tlvs() -> None:
    tlv = bytes([0x04]) + struct.pack("!H", 3) + b"abc"  # PP2_TYPE_NOOP
    assert parse(v2_tcp4("203.0.113.9", "10.0.0.1", 40001, 25, tlv) + b"EHLO x\r\n") == (
        ("203.0.113.9", 40001), b"EHLO x\r\n")
    assert parse(v2_tcp6("2001:db8::9", "2001:db8::1", 40002, 25))[0] == ("2001:db8::9", 40002)


def test_v2_local_keeps_the_peer() -> None:
    assert parse(v2(0x0, 0x00, b"") + b"QUIT\r\n") == (PEER, b"QUIT\r\n")


@pytest.mark.parametrize("raw", [
    v2(0x1, 0x12, socket.inet_aton("192.0.2.1") * 2 + struct.pack("!HH", 1, 2)),  # UDP over IPv4
    v2(0x1, 0x31, b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),             # unix socket
    v2(0x1, 0x11, socket.inet_aton("192.0.2.1")),                                   # truncated address
    v2(0x2, 0x11, b""),                                                              # unknown command
    b"\r\n\r\n\x00\r\nQUIX\n" + bytes([0x21, 0x11, 0, 12]) + bytes(12),             # wrong signature
    bytes([0x30]).join([V2_SIG, bytes([0x11, 0, 0])]),                              # version 3
    V2_SIG + bytes([0x21, 0x11, 0, 12]) + bytes(5),                                 # body cut short
])
def test_v2_malformed_is_dropped(raw: bytes) -> None:
    assert parse(raw)[0] is None


def test_a_trusted_peer_that_sends_nothing_times_out() -> None:
    assert parse(b"", eof=False, timeout=0.05)[0] is None


def test_header_line_detection() -> None:
    assert is_header_line(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", b"")
    assert is_header_line(b"\r\n", V2_TAIL + b"\x21\x11")
    assert not is_header_line(b"\r\n", b"")
    assert not is_header_line(b"\r\n", b"EHLO x\r\n")
    assert not is_header_line(b"EHLO proxy.example\r\n", b"")


def test_the_guarded_reader_turns_a_v2_header_into_the_proxy_command_once() -> None:
    async def run() -> list[bytes]:
        reader = GuardedReader()
        reader.feed_data(v2_tcp4("192.0.2.1", "192.0.2.2", 1, 25))
        reader.guard = True
        first = await reader.readuntil()
        plain = GuardedReader()
        plain.feed_data(b"\r\nEHLO x\r\n")
        plain.guard = True
        return [first, await plain.readuntil(), await plain.readuntil()]

    assert asyncio.run(run()) == [b"PROXY v2\r\n", b"\r\n", b"EHLO x\r\n"]


def test_networks_the_deployment_trusts() -> None:
    from mailmoat_ingress.proxy import TRUSTED_ENV, deployment_trusted

    assert deployment_trusted({}) is None
    trusted = deployment_trusted({TRUSTED_ENV: "10.0.0.0/16, 192.168.1.7 2001:db8::/32"})
    assert trusted is not None
    assert trusted.trusted("10.0.200.1") and trusted.trusted("192.168.1.7") and trusted.trusted("2001:db8::5")
    assert not trusted.trusted("10.1.0.1") and not trusted.trusted("192.168.1.8")
    for bad in ("", " , ", "10.0.0.0/33", "lb.example.com"):
        with pytest.raises(ValueError, match=TRUSTED_ENV):
            deployment_trusted({TRUSTED_ENV: bad})
