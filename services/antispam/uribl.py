"""URI block lists (SURBL/DBL style): which names to ask (pure) and what an answer means."""

from __future__ import annotations

import ipaddress

from mailmoat_antispam.content import url_host

_TWO_LEVEL = {"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go"}
"""Second-level labels under which registrations sit one level deeper (``example.co.uk``)."""


def registered_domain(host: str) -> str:
    """An approximation of the registered domain: the last two labels, three under ``co.uk``-like suffixes."""
    labels = host.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _TWO_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


_ADDRESS_CHARACTERS = frozenset("0123456789abcdef.:")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address(host)`` for a lower-case host name; a name with a character no address has
    (outside an IPv6 scope) is refused at once, without the two parse attempts and their exceptions."""
    if "%" not in host and not _ADDRESS_CHARACTERS.issuperset(host):
        raise ValueError(host)
    return ipaddress.ip_address(host)


def lookup_names(urls: list[str], limit: int) -> list[str]:
    """Distinct names to ask of a URI block list: each URL's registered domain (IPv4 hosts reversed,
    as URI block lists list them), at most ``limit``."""
    out: dict[str, None] = {}
    for url in urls:
        host = url_host(url)
        if not host:
            continue
        try:
            address = _address(host.strip("[]"))
        except ValueError:
            if "." in host:
                out.setdefault(registered_domain(host), None)
        else:
            if address.version == 4:
                out.setdefault(".".join(reversed(host.split("."))), None)
        if len(out) >= limit:
            break
    return list(out)


def listed(records: tuple[str, ...] | list[str]) -> bool:
    """A 127.0.0.0/8 answer other than the 127.255.255.x error codes is a listing."""
    for record in records:
        try:
            address = ipaddress.IPv4Address(record)
        except ValueError:
            continue
        if address in ipaddress.IPv4Network("127.0.0.0/8") and address not in ipaddress.IPv4Network(
                "127.255.255.0/24"):
            return True
    return False
