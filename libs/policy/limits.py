"""``limits``, ``delivery``, ``dns`` and ``trace``: sizes and counts, retries, the resolver, retention."""

from __future__ import annotations

from pydantic import Field, field_validator

from mailmoat_mail.mimeparts import MAX_PARTS as PARSED_PARTS
from mailmoat_policy.base import StrictModel

MAX_LINE_OCTETS = 998
"""Longest line of a message, in octets without CRLF (RFC 5322 2.1.1; RFC 5321 4.5.3.1.6: 1000 with
the CRLF, not counting a dot doubled for transparency)."""


class Limits(StrictModel):
    max_message_size: int = Field(36_700_160, ge=1024)
    max_recipients: int = Field(500, ge=1)
    max_header_size: int = Field(262_144, ge=1024)
    max_line_length: int = Field(MAX_LINE_OCTETS, ge=78)
    """Longest content line accepted, in octets without CRLF; at most 998 (RFC 5322 2.1.1, RFC 5321
    4.5.3.1.6): what ingress accepts, every next hop must take (docs/decisions/006-line-length.md)."""
    max_mime_parts: int = Field(1_000, ge=1, le=PARSED_PARTS)
    """Most MIME entities in a message (every part, container and attached message counted); at most as
    many as the filter stages' parser reads (``mimeparts.MAX_PARTS``), so every stage sees every part."""
    max_commands: int = Field(1_000, ge=10)
    max_received_headers: int = Field(20, ge=1)
    max_sessions: int = Field(200, ge=1)
    """Concurrent SMTP sessions per ingress process; the next one gets 421."""

    @field_validator("max_line_length")
    @classmethod
    def _deliverable_lines(cls, value: int) -> int:
        if value > MAX_LINE_OCTETS:
            raise ValueError(
                f"at most {MAX_LINE_OCTETS} octets (RFC 5322 2.1.1): next hops refuse longer lines, and a "
                "message accepted with them would bounce later (docs/decisions/006-line-length.md)")
        return value


class Delivery(StrictModel):
    retry_delays: list[int] = Field(default_factory=lambda: [60, 300, 900, 1800, 3600], min_length=1)
    """Seconds between delivery attempts; the last repeats until the message expires."""
    expire_after: int = Field(172_800, ge=1)
    """Seconds after the first attempt at which a deferred message fails with 4.4.7."""
    connect_timeout: float = Field(30, gt=0)
    command_timeout: float = Field(120, gt=0)


class Dns(StrictModel):
    nameservers: list[str] = Field(default_factory=list)
    """Resolver addresses; empty uses the system's resolv.conf."""
    port: int = Field(53, ge=1, le=65535)
    timeout: float = Field(5, gt=0)


class Trace(StrictModel):
    retention_days: int = Field(90, ge=1)
