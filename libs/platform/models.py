"""pydantic models of what travels between services: the envelope, verdicts, routes, trace events."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

TlsMode = Literal["none", "opportunistic", "required", "verify-ca", "verify"]
"""Egress TLS policy of a route: no STARTTLS; STARTTLS when offered; STARTTLS or defer;
STARTTLS with a certificate chaining to a trusted CA; that plus the host name matching."""

TRACE_EVENTS = (
    "RECEIVE", "REJECT", "AGENTINFO", "ROUTE", "EXPAND", "RULE", "QUARANTINE", "RELEASE",
    "DELIVER", "DEFER", "FAIL", "DSN", "DEADLETTER", "SCAN", "MALWARE", "SPAM", "DELETE", "REDIRECT",
)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id() -> str:
    """A sortable, unique queue id (ULID-like: 48-bit milliseconds + 80 random bits, base32)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def utcnow() -> datetime:
    return datetime.now(UTC)


class TlsInfo(BaseModel):
    """TLS facts of the inbound SMTP session."""

    version: str | None = None
    cipher: str | None = None
    peer_cert_subject: str | None = None


class Route(BaseModel):
    """Where one copy of a message goes: a smart host list or the recipients' MX."""

    name: str
    kind: Literal["smarthost", "mx"]
    hosts: list[str] = Field(default_factory=list)
    """For smart hosts: ``host`` or ``host:port`` in preference order."""
    domain: str | None = None
    """For MX routes: the recipient domain whose MX records are looked up at delivery."""
    tls: TlsMode = "opportunistic"
    tls_name: str | None = None
    """Name the server certificate must carry under ``verify`` (default: the host connected to)."""


class Verdict(BaseModel):
    """What one stage concluded about a message."""

    stage: str
    result: str
    """Short outcome word, e.g. ``pass``, ``clean``, ``spam``, ``malware``, ``routed``."""
    detail: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=utcnow)


class Envelope(BaseModel):
    """SMTP envelope and everything stages learn about a message; travels beside the raw bytes."""

    id: str = Field(default_factory=new_message_id)
    """Queue id; shared by every copy a message is split into."""
    kind: Literal["message", "dsn"] = "message"
    parent_id: str | None = None
    """For a DSN: the id of the message it reports on."""
    received_at: datetime = Field(default_factory=utcnow)
    client_ip: str = ""
    client_port: int = 0
    client_hostname: str | None = None
    helo: str | None = None
    tls: TlsInfo | None = None
    mail_from: str = ""
    """Envelope sender; ``""`` is the null sender."""
    rcpt_to: list[str] = Field(default_factory=list)
    size: int = 0
    smtputf8: bool = False
    """The client asked for SMTPUTF8; egress must pass it on."""
    body_type: str | None = None
    """MAIL FROM BODY= parameter (``8BITMIME``/``7BIT``) as the client gave it."""
    message_id_header: str | None = None
    inbound_connector: str | None = None
    direction: Literal["inbound", "outbound"] = "inbound"
    itinerary: list[str] = Field(default_factory=list)
    """Stages the message visits after ingress, in order (configuration, not code)."""
    verdicts: dict[str, Verdict] = Field(default_factory=dict)
    route: Route | None = None
    """Set by routing on each per-route copy."""
    attempts: int = 0
    """Delivery attempts made by egress so far."""
    first_attempt_at: datetime | None = None
    last_error: str | None = None
    released_from: str | None = None
    """Set when a quarantined message is released: the quarantine id. Routing then skips the action
    of the verdict that held it (EOP's ``SFV:SKQ``) and routes it to its recipients."""

    def next_stage(self, current: str) -> str | None:
        """The stage after ``current`` in the itinerary, or None when it is the last."""
        try:
            index = self.itinerary.index(current)
        except ValueError:
            return None
        return self.itinerary[index + 1] if index + 1 < len(self.itinerary) else None

    def add_verdict(self, verdict: Verdict) -> None:
        self.verdicts[verdict.stage] = verdict


class TraceEvent(BaseModel):
    """One decision about a message, in EOP's message-trace vocabulary."""

    event: str
    message_id: str
    service: str
    at: datetime = Field(default_factory=utcnow)
    recipients: list[str] = Field(default_factory=list)
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
