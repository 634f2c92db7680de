"""The policy: one YAML file, validated at load, hot-reloaded; a bad edit keeps the last good policy."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailmoat_common.models import TlsMode

log = logging.getLogger(__name__)

FILTER_STAGES = ("connection_filter", "antivirus", "antispam")
"""Stages that may stand between ingress and routing, in the order the itinerary lists them."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Organization(_Strict):
    name: str = "mailmoat"
    hostname: str = "mailmoat.localdomain"
    """Name the gateway gives itself in banners, Received headers and DSNs."""
    internal_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)
    """The organisation's own mail servers: the only clients allowed to relay to other domains."""

    @field_validator("internal_networks", mode="before")
    @classmethod
    def _networks(cls, value: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(str(v), strict=False) for v in value or []]


class AcceptedDomain(_Strict):
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


class RouteConfig(_Strict):
    hosts: list[str] = Field(min_length=1)
    tls: TlsMode = "opportunistic"
    tls_name: str | None = None


class Outbound(_Strict):
    tls: TlsMode = "opportunistic"
    mx_port: int = Field(25, ge=1, le=65535)
    """Port used for hosts found by MX lookup (25 on the internet; tests use another)."""


class Limits(_Strict):
    max_message_size: int = Field(36_700_160, ge=1024)
    max_recipients: int = Field(500, ge=1)
    max_header_size: int = Field(262_144, ge=1024)
    max_line_length: int = Field(4_096, ge=1000)
    """Longest content line accepted, in octets without CRLF (RFC 5321 asks senders for 998)."""
    max_commands: int = Field(1_000, ge=10)
    max_received_headers: int = Field(20, ge=1)
    max_sessions: int = Field(200, ge=1)
    """Concurrent SMTP sessions per ingress process; the next one gets 421."""


class Delivery(_Strict):
    retry_delays: list[int] = Field(default_factory=lambda: [60, 300, 900, 1800, 3600], min_length=1)
    """Seconds between delivery attempts; the last repeats until the message expires."""
    expire_after: int = Field(172_800, ge=1)
    """Seconds after the first attempt at which a deferred message fails with 4.4.7."""
    connect_timeout: float = Field(30, gt=0)
    command_timeout: float = Field(120, gt=0)


class Dns(_Strict):
    nameservers: list[str] = Field(default_factory=list)
    """Resolver addresses; empty uses the system's resolv.conf."""
    port: int = Field(53, ge=1, le=65535)
    timeout: float = Field(5, gt=0)


class Trace(_Strict):
    retention_days: int = Field(90, ge=1)


class Pipeline(_Strict):
    filters: list[str] = Field(default_factory=list)
    """Filter stages between ingress and routing, in order."""

    @field_validator("filters")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in FILTER_STAGES:
                raise ValueError(f"unknown filter stage {name!r} (known: {', '.join(FILTER_STAGES)})")
        if len(set(value)) != len(value):
            raise ValueError("a filter stage is listed twice")
        return value

    def itinerary(self) -> list[str]:
        return [*self.filters, "routing", "egress"]


class Policy(_Strict):
    organization: Organization = Field(default_factory=Organization)
    accepted_domains: list[AcceptedDomain] = Field(default_factory=list)
    directory: list[str] = Field(default_factory=list)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    outbound: Outbound = Field(default_factory=Outbound)
    limits: Limits = Field(default_factory=Limits)
    delivery: Delivery = Field(default_factory=Delivery)
    dns: Dns = Field(default_factory=Dns)
    trace: Trace = Field(default_factory=Trace)
    pipeline: Pipeline = Field(default_factory=Pipeline)

    @field_validator("directory")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"directory entry {address!r} is not an address")
        return [a.strip().lower() for a in value]

    @model_validator(mode="after")
    def _routes_exist(self) -> Policy:
        for index, domain in enumerate(self.accepted_domains):
            if domain.route is not None and domain.route not in self.routes:
                raise ValueError(
                    f"accepted_domains.{index}.route: no route named {domain.route!r} under routes"
                )
        return self

    def accepted_domain(self, domain: str) -> AcceptedDomain | None:
        """The accepted-domain entry for ``domain`` (exact match, case-insensitive)."""
        domain = domain.lower().rstrip(".")
        for entry in self.accepted_domains:
            if entry.domain == domain:
                return entry
        return None

    def in_directory(self, address: str) -> bool:
        return address.lower() in self._directory_set()

    def _directory_set(self) -> frozenset[str]:
        cached = self.__dict__.get("_dirset")
        if cached is None:
            cached = frozenset(self.directory)
            self.__dict__["_dirset"] = cached
        return cached

    def is_internal(self, ip: str) -> bool:
        """Whether ``ip`` is one of the organisation's own servers."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self.organization.internal_networks)


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file, the field path and the reason."""


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"]) or "(top level)"
            lines.append(f"{source}: {path}: {error['msg']}")
        raise PolicyError("\n".join(lines)) from exc


def load_policy(path: str | os.PathLike[str]) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_policy(text, str(path))


class PolicyHolder:
    """The policy in force for a service, reloaded when the file changes.

    A new version that fails to load is refused (logged, counted) and the last good one stays.
    """

    def __init__(self, path: str | os.PathLike[str], on_change: Callable[[Policy], None] | None = None):
        self.path = Path(path)
        self.current = load_policy(self.path)
        self._stamp = self._read_stamp()
        self._on_change = on_change
        self.reloads = 0
        self.refused = 0
        self.last_error: str | None = None

    def _read_stamp(self) -> tuple[float, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size, st.st_ino)

    def check(self) -> bool:
        """Reload when the file changed; True when a new policy took effect."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            self.refused += 1
            self.last_error = str(exc)
            log.error("policy refused, keeping the last good one: %s", exc)
            return False
        self.current = policy
        self.reloads += 1
        self.last_error = None
        log.info("policy reloaded from %s", self.path)
        if self._on_change is not None:
            self._on_change(policy)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the file forever (run as a task)."""
        while True:
            await asyncio.sleep(interval)
            self.check()
