"""PROXY protocol v1/v2 (HAProxy's proxy-protocol.txt) in front of the SMTP session.

A peer in ``connection_filter.proxy_protocol.trusted_networks`` (the load balancers) must open with a
PROXY header; the source address it carries becomes the session's peer, so the block list, rate
limits, relay check, ``Received:`` header and trace all see the real client. As the specification
requires, the receiver does not guess: a trusted peer that sends no valid header within ``timeout``
is dropped without a reply (the balancer's health checks should use ``LOCAL``/``UNKNOWN``, which keep
the balancer's own address).

Any other peer is greeted at once; if its first line is a PROXY header (v1 ``PROXY …``, or the v2
signature) the session answers ``421 4.7.0`` and closes, so an untrusted client cannot claim an
address. Header parsing is aiosmtpd's ``get_proxy``; what to do with its result is ``client_from``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address

from aiosmtpd.proxy_protocol import AF, PROTO, V2_CMD, V2_SIGNATURE, ProxyData, get_proxy
from pydantic import ValidationError

from mailmoat_policy import ProxyProtocol

TRUSTED_ENV = "MAILMOAT_PROXY_TRUSTED_NETWORKS"
"""Load balancers the deployment trusts besides the policy's ``trusted_networks`` (the Kubernetes
component deploy/k8s/components/proxy-protocol sets it): networks separated by commas or spaces."""

V2_TAIL = V2_SIGNATURE[2:]
"""The v2 signature after its first CRLF: what follows an empty first line from a v2 sender."""


def client_from(data: ProxyData, peer: tuple[str, int]) -> tuple[str, int] | None:
    """The client address a header stands for; the peer itself for ``LOCAL``/``UNKNOWN``; None to drop.

    Only TCP over IPv4/IPv6 is proxied; a header for UDP or a malformed one drops the connection.
    """
    if not data.valid:
        return None
    if data.version == 2 and data.command == V2_CMD.LOCAL:
        return peer
    if data.family == AF.UNSPEC:
        return peer  # v1 UNKNOWN, v2 PROXY with AF_UNSPEC: the receiver uses the real endpoints
    if data.family not in (AF.INET, AF.INET6) or data.protocol != PROTO.STREAM:
        return None
    if not isinstance(data.src_addr, IPv4Address | IPv6Address) or data.src_port is None:
        return None
    return str(data.src_addr), int(data.src_port)


async def read_header(reader: asyncio.StreamReader, timeout: float) -> ProxyData:
    """Read one header (v1 or v2) within ``timeout``; an invalid ProxyData on timeout, EOF or garbage."""
    try:
        return await asyncio.wait_for(get_proxy(reader), timeout)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError) as exc:
        return ProxyData(version=None).with_error(f"PROXY header not received: {type(exc).__name__}", False)


def is_header_line(line: bytes, buffered: bytes) -> bool:
    """Whether a first command line (with what is buffered after it) opens a PROXY v1 or v2 header."""
    if line.startswith(b"PROXY "):
        return True
    return line == b"\r\n" and buffered.startswith(V2_TAIL[: len(buffered)]) and len(buffered) >= 4


class GuardedReader(asyncio.StreamReader):
    """The session's reader: its first line after the greeting is checked for a PROXY header.

    A v2 signature is handed on as the command line ``PROXY`` so that the session's ``PROXY``
    command (which refuses it) runs; a v1 header already is such a line.
    """

    guard = False

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        line = await super().readuntil(separator)
        if self.guard:
            self.guard = False
            buffered = bytes(self._buffer[: len(V2_TAIL)])  # type: ignore[attr-defined]
            if line == b"\r\n" and is_header_line(line, buffered):
                return b"PROXY v2\r\n"
        return line


def deployment_trusted(environ: Mapping[str, str]) -> ProxyProtocol | None:
    """The load balancers ``MAILMOAT_PROXY_TRUSTED_NETWORKS`` names (None when it is unset); set but
    naming no network, or naming one that is not an address or CIDR network: ``ValueError``, so
    that ingress does not start half configured."""
    value = environ.get(TRUSTED_ENV)
    if value is None:
        return None
    networks = [n for n in re.split(r"[\s,]+", value) if n]
    if not networks:
        raise ValueError(f"{TRUSTED_ENV} is set but names no network: list the load balancers' addresses")
    try:
        return ProxyProtocol(trusted_networks=networks)
    except ValidationError as exc:
        raise ValueError(f"{TRUSTED_ENV}: {exc.errors()[0]['msg']}") from None
