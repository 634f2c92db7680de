"""``organization``, ``accepted_domains`` and ``routes``: who the gateway is and which mail is its own."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from mailmoat_platform.models import TlsMode
from mailmoat_policy.base import StrictModel


class Organization(StrictModel):
    name: str = "mailmoat"
    hostname: str = "mailmoat.localdomain"
    """Name the gateway gives itself in banners, Received headers and DSNs."""
    internal_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)
    """The organisation's own mail servers: the only clients allowed to relay to other domains."""

    @field_validator("internal_networks", mode="before")
    @classmethod
    def _networks(cls, value: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(str(v), strict=False) for v in value or []]


class AcceptedDomain(StrictModel):
    domain: str
    type: Literal["authoritative", "internal_relay"] = "authoritative"
    dbeb: bool = False
    """Directory-based edge blocking: refuse recipients not in the directory (authoritative only)."""
    route: str | None = None
    """Name of the hybrid route (smart hosts) that takes this domain's mail; None → MX."""

    @field_validator("domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower().rstrip(".")


class RouteConfig(StrictModel):
    hosts: list[str] = Field(min_length=1)
    tls: TlsMode = "opportunistic"
    tls_name: str | None = None
