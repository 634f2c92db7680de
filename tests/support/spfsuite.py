"""The RFC 7208 SPF test suite (tests/data/spf/rfc7208-tests.yml, openspf.org release 2014.04): loading
its scenarios and serving their zone data as a record table with the suite's DNS conventions.

Conventions (those of the suite's reference driver): ``SPF`` records are copied to ``TXT`` when a name
has no ``TXT`` record; ``TXT: NONE`` means no TXT record (and no copy); ``TIMEOUT`` as a name's entry
times out every query of it for which no earlier entry of that type was given, ``TIMEOUT`` as a value
times out that type; a name not in the table is NXDOMAIN, except names under ``error.`` which time
out; a CNAME is followed one level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord

from mailmoat_antispam.auth.resolver import DnsAnswer
from tests.support.dnsserver import DnsServer

SUITE = Path(__file__).resolve().parent.parent / "data" / "spf" / "rfc7208-tests.yml"


@dataclass(frozen=True)
class SpfCase:
    scenario: str
    name: str
    host: str
    mailfrom: str
    helo: str
    results: tuple[str, ...]
    explanation: str | None
    receiver: str | None
    zone: dict[str, list[Any]]

    @property
    def id(self) -> str:
        return f"{self.scenario}/{self.name}"


def _entries(records: list[Any]) -> list[Any]:
    """Zone entries as (type, value) pairs or the word TIMEOUT, with SPF copied to TXT as the suite asks."""
    out: list[Any] = []
    has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
    copies: list[tuple[str, Any]] = []
    for record in records:
        if not isinstance(record, dict):
            out.append(record)
            continue
        for rtype, value in record.items():
            if rtype in ("TXT", "SPF") and isinstance(value, str):
                value = [value]
            if rtype == "SPF" and not has_txt:
                copies.append(("TXT", value))
            if value != ["NONE"]:
                out.append((rtype, value))
    return out + copies


def load_cases(path: Path = SUITE) -> list[SpfCase]:
    cases: list[SpfCase] = []
    with path.open("rb") as handle:
        for document in yaml.safe_load_all(handle):
            if not document:
                continue
            zone = {name.lower(): _entries(records or []) for name, records in (document.get("zonedata") or {}).items()}
            for name, test in document["tests"].items():
                result = test["result"]
                results = tuple(result) if isinstance(result, list) else (result,)
                cases.append(SpfCase(
                    document["description"], name, test["host"], test.get("mailfrom", ""), test.get("helo", ""),
                    results, test.get("explanation"), test.get("receiver"), zone,
                ))
    return cases


class TableResolver:
    """Answers from a suite scenario's zone data (same interface as ``AuthResolver``)."""

    def __init__(self, zone: dict[str, list[Any]]):
        self.zone = zone
        self.queries: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.queries.append((name, rdtype))
        return self._lookup(name, rdtype, follow=True)

    def _lookup(self, name: str, rdtype: str, *, follow: bool) -> DnsAnswer:
        labels = [label for label in name.split(".") if label]
        if any(len(label) > 63 for label in labels):
            return DnsAnswer("temperror", error="label too long")
        key = ".".join(labels).lower()
        entries = self.zone.get(key)
        if entries is None:
            if key.startswith("error."):
                return DnsAnswer("temperror", error="timeout")
            return DnsAnswer("nxdomain")
        records: list[str] = []
        seen_type = False
        for entry in entries:
            if entry == "TIMEOUT":
                if not seen_type:
                    return DnsAnswer("temperror", error="timeout")
                break
            rtype, value = entry
            if rtype == rdtype:
                seen_type = True
                if value == "TIMEOUT":
                    return DnsAnswer("temperror", error="timeout")
                records.append(_text(rtype, value))
            elif rtype == "CNAME" and follow:
                target = self._lookup(str(value), rdtype, follow=False)
                if target.status == "temperror":
                    return target
                records.extend(target.records)
        return DnsAnswer("ok", tuple(records)) if records else DnsAnswer("nodata")


def _text(rtype: str, value: Any) -> str:
    if rtype in ("TXT", "SPF"):
        return "".join(value)
    if rtype == "MX":
        return str(value[1]).lower().rstrip(".")
    if rtype == "PTR":
        return str(value).rstrip(".")
    return str(value)


_RDATA = {"A": A, "AAAA": AAAA, "PTR": PTR, "CNAME": CNAME}


def _rr(name: str, rtype: str, value: Any) -> RR | None:
    if rtype == "TXT":
        strings = [chunk.encode("utf-8")[i:i + 255] for chunk in value for i in range(0, max(len(chunk), 1), 255)]
        # A TXT record of no strings (the suite's null-text case) is malformed on the wire (RFC 1035 3.3.14);
        # one empty string is the nearest well-formed record and means the same to SPF (not a record).
        strings = strings or [b""]
        return RR(name, QTYPE.TXT, rdata=TXT(strings), ttl=60)
    if rtype == "MX":
        return RR(name, QTYPE.MX, rdata=MX(str(value[1]), int(value[0])), ttl=60)
    if rtype in _RDATA:
        return RR(name, getattr(QTYPE, rtype), rdata=_RDATA[rtype](str(value)), ttl=60)
    return None  # type SPF (99): RFC 7208 no longer looks it up


class SuiteDnsServer(DnsServer):
    """A scenario's zone data served over UDP/TCP on loopback, with the suite's timeout conventions:
    a type listed before a name's ``TIMEOUT`` entry is answered, any other type gets no reply at all;
    names under ``error.`` get no reply; a CNAME is answered with its target's records (one level)."""

    def __init__(self, zone: dict[str, list[Any]]):
        super().__init__()
        self.zone = zone
        self.answered_types: dict[str, set[str] | None] = {}
        for name, entries in zone.items():
            seen: set[str] = set()
            for entry in entries:
                if entry == "TIMEOUT":
                    self.answered_types[name] = set(seen)
                    break
                rtype, value = entry
                if value == "TIMEOUT":
                    self.answered_types.setdefault(name, None)
                    continue
                seen.add(rtype)
                rr = _rr(name + ".", rtype, value)
                if rr is not None:
                    self.rrs.append(rr)

    def answer(self, data: bytes) -> bytes | None:
        request = DNSRecord.parse(data)
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
        if qname in self.answered_types:
            answered = self.answered_types[qname]
            if answered is None or qtype not in answered:
                return None
        if qname not in self.zone and qname.startswith("error."):
            return None
        reply = request.reply()
        known = [rr for rr in self.rrs if str(rr.rname).lower().rstrip(".") == qname]
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in known:
            kind = QTYPE[rr.rtype]
            if kind == qtype:
                reply.add_answer(rr)
            elif kind == "CNAME":
                reply.add_answer(rr)
                target = str(rr.rdata.label).lower().rstrip(".")
                reply.add_answer(*[t for t in self.rrs
                                   if str(t.rname).lower().rstrip(".") == target and QTYPE[t.rtype] == qtype])
        return reply.pack()


__all__ = ["SUITE", "SpfCase", "SuiteDnsServer", "TableResolver", "load_cases"]
