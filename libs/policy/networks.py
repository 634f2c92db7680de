"""IP addresses and networks as the policy lists them: parsing, and sets with fast membership."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Iterable


@functools.lru_cache(maxsize=4096)


def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client IP as an address (an IPv4-mapped IPv6 address becomes IPv4); None when not an IP.
    Cached: the same few clients connect again and again, and every check asks."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class IpSet:
    """A set of IPv4/IPv6 networks with O(log n) membership: merged integer ranges, searched by bisect.

    Any number of entries and any prefix length; overlapping and adjacent networks are merged.
    """

    def __init__(self, ranges: Iterable[tuple[int, int, int]] = ()):
        """From ``(version, first, last)`` integer ranges (see ``parse_range``)."""
        by_version: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for version, first, last in ranges:
            by_version[version].append((first, last))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, items in by_version.items():
            items.sort()
            starts: list[int] = []
            ends: list[int] = []
            for first, last in items:
                if ends and first <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], last)
                else:
                    starts.append(first)
                    ends.append(last)
            self._starts[version] = starts
            self._ends[version] = ends

    @classmethod
    def of(cls, networks: Iterable[str]) -> IpSet:
        return cls(parse_range(n) for n in networks)

    def __len__(self) -> int:
        """Number of disjoint ranges after merging."""
        return len(self._starts[4]) + len(self._starts[6])

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, str):
            address = client_address(ip)
        elif isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            address = ip
        else:
            return False
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        value = int(address)
        starts = self._starts[address.version]
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= self._ends[address.version][index]


_OCTET = re.compile(r"\A(?:0|[1-9][0-9]{0,2})\Z")


def parse_range(text: str) -> tuple[int, int, int]:
    """``(version, first, last)`` of an address or CIDR network (host bits ignored); ValueError if neither.

    Dotted-quad IPv4 takes a fast path (block lists can hold very many entries).
    """
    addr, slash, plen = text.strip().partition("/")
    parts = addr.split(".")
    if len(parts) == 4 and all(_OCTET.match(p) for p in parts):
        octets = [int(p) for p in parts]
        prefix = int(plen) if plen.isdigit() and plen.isascii() and len(plen) <= 2 else (-1 if slash else 32)
        if max(octets) <= 255 and 0 <= prefix <= 32:
            value = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
            host = (1 << (32 - prefix)) - 1
            return 4, value & ~host, (value & ~host) | host
        raise ValueError(text)
    net = ipaddress.ip_network(text.strip(), strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


def parse_networks(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("must be a list of IP addresses or CIDR networks")
    out: list[str] = []
    for index, item in enumerate(value):
        text = str(item).strip()
        try:
            parse_range(text)
        except ValueError:
            raise ValueError(f"entry {index}: {item!r} is not an IPv4 or IPv6 address or CIDR network") from None
        out.append(text)
    return out
