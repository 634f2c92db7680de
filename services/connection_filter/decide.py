"""Connection filter decisions (pure): IP lists, DNS block list answers, PTR/FCrDNS and HELO facts.

The service plans the DNS look-ups with ``plan_checks``, runs them, and hands the answers back to
``dnsbl_result``, ``ptr_facts``, ``helo_facts`` and ``conclude``; nothing here does I/O. A look-up
that failed for a temporary reason is a ``temperror`` fact, never a reason to reject.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from mailmoat_connection_filter.verdict import ConnectionVerdict
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import ConnectionFilter, DnsblZone, client_address

STAGE = "connection_filter"
HEADER = b"X-Mailmoat-Connection-Report"
FOLD_AT = 78
MAX_PTR_NAMES = 3
"""PTR names confirmed forward at most (a client may publish many)."""

LookupStatus = Literal["ok", "nxdomain", "nodata", "temperror"]
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_ZONE_ERRORS = ipaddress.IPv4Network("127.255.255.0/24")
"""Return codes block lists use for errors (query refused, via a public resolver, rate limited)."""
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/=+\[\]-]")


@dataclass(frozen=True)
class Lookup:
    """The outcome of one DNS query: answers as text, or why there are none."""

    status: LookupStatus
    answers: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Plan:
    """What to look up for one message."""

    client_ip: str
    """Normalised client address (``""`` when the envelope has none usable)."""
    allowed: bool = False
    blocked: bool = False
    dnsbl: tuple[tuple[DnsblZone, str], ...] = ()
    """Each zone to ask, with the query name."""
    ptr_query: str | None = None
    helo: bool = False
    skipped: str | None = None
    """Why the DNS block lists are not asked (allow-listed, outbound, no client IP)."""


@dataclass(frozen=True)
class DnsblResult:
    zone: str
    result: Literal["listed", "clean", "temperror", "error"]
    codes: tuple[str, ...] = ()
    meanings: tuple[str, ...] = ()
    weight: float = 0.0
    action: str = "annotate"
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"zone": self.zone, "result": self.result, "action": self.action}
        if self.result == "listed":
            out.update(codes=list(self.codes), meanings=list(self.meanings), weight=self.weight)
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class PtrFacts:
    result: Literal["pass", "fail", "none", "temperror"]
    """``pass``: a PTR name resolves back to the client IP (forward-confirmed); ``fail``: none does;
    ``none``: no PTR record; ``temperror``: a look-up failed temporarily."""
    names: tuple[str, ...] = ()
    confirmed: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "names": list(self.names), "confirmed": self.confirmed}


@dataclass(frozen=True)
class HeloFacts:
    name: str | None
    syntax: Literal["missing", "fqdn", "non-fqdn", "literal", "bare-ip", "invalid"]
    literal: Literal["match", "mismatch"] | None = None
    """For an address literal (or a bare IP): whether it is the client's address."""
    matches_ptr: bool | None = None
    """For a host name: whether it is one of the client's PTR names (None when unknown)."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "syntax": self.syntax, "literal": self.literal, "matches_ptr": self.matches_ptr}


# --- planning ---------------------------------------------------------------------------------------


def dnsbl_query(ip: str, zone: str) -> str:
    """The DNS block list query name: reversed octets (IPv4) or nibbles (IPv6) under the zone."""
    address = client_address(ip)
    if address is None:
        raise ValueError(f"not an IP address: {ip!r}")
    if address.version == 4:
        reversed_ip = ".".join(reversed(str(address).split(".")))
    else:
        reversed_ip = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{reversed_ip}.{zone}"


def plan_checks(envelope: Envelope, cf: ConnectionFilter) -> Plan:
    """The look-ups a message needs: none for a message without a client IP; no block lists for an
    allow-listed client or one of the organisation's own servers (outbound mail)."""
    address = client_address(envelope.client_ip or "")
    if address is None:
        return Plan(client_ip="", helo=cf.helo, skipped="no client ip")
    ip = str(address)
    allowed = cf.allowed(ip)
    blocked = cf.blocked(ip)
    skipped: str | None = None
    if allowed:
        skipped = "allow-listed"
    elif envelope.direction == "outbound":
        skipped = "outbound"
    zones = () if skipped else tuple((zone, dnsbl_query(ip, zone.zone)) for zone in cf.dnsbl)
    return Plan(
        client_ip=ip,
        allowed=allowed,
        blocked=blocked,
        dnsbl=zones,
        ptr_query=address.reverse_pointer if cf.ptr else None,
        helo=cf.helo,
        skipped=skipped,
    )


# --- facts from answers -----------------------------------------------------------------------------


def dnsbl_result(zone: DnsblZone, lookup: Lookup) -> DnsblResult:
    """Classify a block list answer: 127.0.0.0/8 codes are listings (the zone's ``codes`` give their
    meaning); 127.255.255.0/24 and anything outside 127/8 are the zone's errors, not listings."""
    if lookup.status in ("nxdomain", "nodata"):
        return DnsblResult(zone.zone, "clean", action=zone.action)
    if lookup.status == "temperror":
        return DnsblResult(zone.zone, "temperror", action=zone.action, error=lookup.error)
    listed: list[str] = []
    for answer in lookup.answers:
        try:
            code = ipaddress.IPv4Address(answer)
        except ValueError:
            continue
        if code in _LOOPBACK and code not in _ZONE_ERRORS:
            listed.append(str(code))
    if not listed:
        return DnsblResult(zone.zone, "error", action=zone.action,
                           error="answer is not a listing: " + ",".join(lookup.answers))
    codes = tuple(sorted(set(listed), key=ipaddress.IPv4Address))
    meanings = tuple(zone.codes.get(code, "listed") for code in codes)
    return DnsblResult(zone.zone, "listed", codes, meanings, zone.weight, zone.action)


def ptr_names(lookup: Lookup | None) -> tuple[str, ...]:
    """PTR names from an answer, lower case without the final dot, at most ``MAX_PTR_NAMES``."""
    if lookup is None or lookup.status != "ok":
        return ()
    names = []
    for answer in lookup.answers:
        name = answer.lower().rstrip(".")
        if name and name not in names:
            names.append(name)
    return tuple(names[:MAX_PTR_NAMES])


def ptr_facts(client_ip: str, ptr: Lookup, forward: dict[str, list[Lookup]]) -> PtrFacts:
    """PTR and forward-confirmed reverse DNS: some PTR name must have the client IP among its addresses.

    ``forward`` maps each PTR name to its A and AAAA look-ups.
    """
    if ptr.status == "temperror":
        return PtrFacts("temperror")
    names = ptr_names(ptr)
    if not names:
        return PtrFacts("none")
    client = client_address(client_ip)
    temporary = False
    for name in names:
        for lookup in forward.get(name, []):
            if lookup.status == "temperror":
                temporary = True
            for answer in lookup.answers:
                if client is not None and client_address(answer) == client:
                    return PtrFacts("pass", names, name)
    return PtrFacts("temperror" if temporary else "fail", names)


def helo_facts(helo: str | None, client_ip: str, names: tuple[str, ...] = ()) -> HeloFacts:
    """HELO/EHLO checks: syntax (RFC 5321 4.1.1.1 / 4.1.3), an address literal against the client IP,
    a host name against the client's PTR names."""
    if not helo or not helo.strip():
        return HeloFacts(None, "missing")
    name = helo.strip()
    client = client_address(client_ip)
    if name.startswith("[") and name.endswith("]"):
        inner = name[1:-1]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
        elif ":" in inner:
            return HeloFacts(name, "invalid")
        literal = client_address(inner) if inner else None
        if literal is None or "%" in inner:
            return HeloFacts(name, "invalid")
        return HeloFacts(name, "literal", "match" if literal == client else "mismatch")
    bare = client_address(name) if all(c in "0123456789abcdefABCDEF.:" for c in name) else None
    if bare is not None:
        return HeloFacts(name, "bare-ip", "match" if bare == client else "mismatch")
    host = name.rstrip(".")
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return HeloFacts(name, "invalid")
    matches = (host.lower() in names) if names else None
    return HeloFacts(name, "fqdn" if len(labels) > 1 else "non-fqdn", matches_ptr=matches)


# --- the verdict and the report header --------------------------------------------------------------


@dataclass
class Report:
    """Everything the stage learnt about the connection a message came from."""

    plan: Plan
    dnsbl: list[DnsblResult] = field(default_factory=list)
    ptr: PtrFacts | None = None
    helo: HeloFacts | None = None

    @property
    def ipv(self) -> str:
        """EOP-style IP verdict: ``CAL`` allow list, ``BLK`` block list, ``DNSBL`` listed, ``NLI`` none."""
        if self.plan.allowed:
            return "CAL"
        if self.plan.blocked:
            return "BLK"
        if self.listed:
            return "DNSBL"
        return "NLI"

    @property
    def listed(self) -> list[DnsblResult]:
        return [r for r in self.dnsbl if r.result == "listed"]

    @property
    def temperrors(self) -> list[str]:
        out = [f"dnsbl:{r.zone}" for r in self.dnsbl if r.result == "temperror"]
        if self.ptr is not None and self.ptr.result == "temperror":
            out.append("ptr")
        return out

    @property
    def result(self) -> str:
        """``allow``, ``reject`` (block list, or a listing in a zone whose action is reject),
        ``listed`` (annotated only) or ``pass``."""
        if self.plan.allowed:
            return "allow"
        if self.plan.blocked or any(r.action == "reject" for r in self.listed):
            return "reject"
        if self.listed:
            return "listed"
        return "pass"

    def verdict(self) -> Verdict:
        """The verdict; its detail is a ``ConnectionVerdict``."""
        detail: dict[str, Any] = {"client_ip": self.plan.client_ip, "ipv": self.ipv}
        if self.plan.allowed:
            detail["scl"] = -1
        if self.result == "reject":
            detail["reason"] = "ip_block" if self.plan.blocked else "dnsbl"
        if self.plan.skipped:
            detail["dnsbl_skipped"] = self.plan.skipped
        detail["dnsbl"] = [r.as_dict() for r in self.dnsbl]
        detail["dnsbl_score"] = sum(r.weight for r in self.listed)
        if self.ptr is not None:
            detail["ptr"] = self.ptr.as_dict()
        if self.helo is not None:
            detail["helo"] = self.helo.as_dict()
        detail["temperror"] = self.temperrors
        return Verdict(stage=STAGE, result=self.result, detail=ConnectionVerdict.wire(**detail))

    def tokens(self) -> list[str]:
        out = [f"CIP:{_safe(self.plan.client_ip) or 'none'}", f"IPV:{self.ipv}"]
        if self.plan.allowed:
            out.append("SCL:-1")
        out.append(f"ACT:{self.result}")
        for r in self.dnsbl:
            if r.result == "listed":
                pairs = ",".join(f"{c}/{_safe(m)}" for c, m in zip(r.codes, r.meanings, strict=True))
                out.append(f"DNSBL:{_safe(r.zone)}={pairs}")
            else:
                out.append(f"DNSBL:{_safe(r.zone)}={r.result}")
        if self.dnsbl:
            out.append(f"DNSBLSCORE:{sum(r.weight for r in self.listed):g}")
        if self.ptr is not None:
            out.append(f"PTR:{_safe(self.ptr.names[0]) if self.ptr.names else 'none'}")
            out.append(f"FCRDNS:{self.ptr.result}")
        if self.helo is not None:
            out.append(f"H:{_safe(self.helo.name or '') or 'none'}")
            out.append(f"HELO:{self.helo.syntax}")
            if self.helo.literal is not None:
                out.append(f"HELOLIT:{self.helo.literal}")
            if self.helo.matches_ptr is not None:
                out.append(f"HELOPTR:{'match' if self.helo.matches_ptr else 'mismatch'}")
        if self.temperrors:
            out.append("TEMPERROR:" + ",".join(_safe(t) for t in self.temperrors))
        return out

    def header(self) -> bytes:
        return fold_header(HEADER, self.tokens())


def conclude(plan: Plan, dnsbl: list[DnsblResult], ptr: PtrFacts | None, helo: HeloFacts | None) -> Report:
    return Report(plan, list(dnsbl), ptr, helo)


def _safe(value: str, limit: int = 100) -> str:
    """A value fit for the report header: printable ASCII without separators, bounded."""
    return _UNSAFE.sub("?", value.replace(" ", "_"))[:limit]


def fold_header(name: bytes, tokens: list[str], width: int = FOLD_AT) -> bytes:
    """``Name: t1;t2;...`` with CRLF, folded (CRLF + tab) before a token that would pass ``width``."""
    lines: list[str] = []
    line = name.decode("ascii") + ":"
    for index, token in enumerate(tokens):
        piece = token + (";" if index < len(tokens) - 1 else "")
        if len(line) + 1 + len(piece) > width and line.strip() != name.decode("ascii") + ":":
            lines.append(line)
            line = "\t" + piece
        else:
            line += " " + piece if line.endswith(":") else piece
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
