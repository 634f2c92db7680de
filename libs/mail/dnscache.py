"""The stages' DNS client: dnspython's asyncio resolver, bounded in time, cached per process.

Every look-up answers a ``DnsAnswer`` (never an exception): NXDOMAIN and empty answers are facts and
are cached (positive answers for their TTL up to ``max_ttl``, negative ones for ``negative_ttl``
seconds, or every answer for ``fixed_ttl`` when that is set); a timeout, SERVFAIL or unreachable
server is ``temperror`` and is not cached. Concurrent look-ups of the same name and type share one query.
Records come back as text: A/AAAA addresses, MX exchanges (by preference), PTR names (without the
trailing dot), TXT records with their character-strings joined (as SPF, DKIM and DMARC read them).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from mailmoat_mail.dns import ResolverConfig, make_resolver

Status = Literal["ok", "nxdomain", "nodata", "temperror"]


@dataclass(frozen=True)
class DnsAnswer:
    status: Status
    records: tuple[str, ...] = ()
    error: str = ""

    @property
    def void(self) -> bool:
        """NXDOMAIN or no record of the type (RFC 7208 4.6.4 "void lookup")."""
        return self.status in ("nxdomain", "nodata") or (self.status == "ok" and not self.records)


class Resolver(Protocol):
    """What authentication needs from DNS (the real resolver, or a table in tests)."""

    async def query(self, name: str, rdtype: str) -> DnsAnswer: ...


class AnswerCache:
    """Answers by (name, type) until their TTL runs out, at most ``size`` entries (oldest dropped)."""

    def __init__(self, size: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.clock = clock
        self._items: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = OrderedDict()

    def get(self, name: str, rdtype: str) -> DnsAnswer | None:
        key = (name, rdtype)
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self.clock():
            del self._items[key]
            return None
        return item[1]

    def put(self, name: str, rdtype: str, answer: DnsAnswer, ttl: float) -> None:
        if ttl <= 0 or answer.status == "temperror":
            return
        key = (name, rdtype)
        self._items[key] = (self.clock() + ttl, answer)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class CachedResolver:
    """dnspython's asyncio resolver with a per-query time bound, an answer cache and shared in-flight queries."""

    def __init__(self, config: ResolverConfig, *, cache: AnswerCache | None = None,
                 negative_ttl: float = 60.0, max_ttl: float = 3600.0, fixed_ttl: float | None = None):
        self.config = config
        self.cache = cache or AnswerCache()
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.fixed_ttl = fixed_ttl
        self.queries = 0
        self._resolver = make_resolver(config)
        self._inflight: dict[tuple[str, str], asyncio.Future[DnsAnswer]] = {}

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        name = name.lower().rstrip(".")
        rdtype = rdtype.upper()
        cached = self.cache.get(name, rdtype)
        if cached is not None:
            return cached
        key = (name, rdtype)
        task = self._inflight.get(key)
        if task is None:
            # A task of its own: a caller cancelled (its time ran out) does not cancel the others' answer.
            task = asyncio.ensure_future(self._ask_and_keep(name, rdtype))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _ask_and_keep(self, name: str, rdtype: str) -> DnsAnswer:
        answer, ttl = await self._ask(name, rdtype)
        self.cache.put(name, rdtype, answer, ttl if self.fixed_ttl is None else self.fixed_ttl)
        return answer

    async def _ask(self, name: str, rdtype: str) -> tuple[DnsAnswer, float]:
        self.queries += 1
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            return DnsAnswer("nxdomain", error=f"invalid name: {type(exc).__name__}"), 0.0
        try:
            answer = await asyncio.wait_for(
                self._resolver.resolve(qname, rdtype, search=False), timeout=self.config.timeout + 1.0
            )
        except dns.resolver.NXDOMAIN:
            return DnsAnswer("nxdomain"), self.negative_ttl
        except dns.resolver.NoAnswer:
            return DnsAnswer("nodata"), self.negative_ttl
        except dns.resolver.NoNameservers:
            return DnsAnswer("temperror", error="SERVFAIL"), 0.0
        except (dns.exception.Timeout, TimeoutError):
            return DnsAnswer("temperror", error="timeout"), 0.0
        except dns.exception.DNSException as exc:
            return DnsAnswer("temperror", error=type(exc).__name__), 0.0
        except OSError as exc:
            return DnsAnswer("temperror", error=f"{type(exc).__name__}: {exc.strerror or exc}"), 0.0
        ttl = min(float(answer.rrset.ttl) if answer.rrset is not None else 0.0, self.max_ttl)
        return DnsAnswer("ok", _records(answer, rdtype)), ttl


def _records(answer: dns.resolver.Answer, rdtype: str) -> tuple[str, ...]:
    if rdtype in ("A", "AAAA"):
        return tuple(r.address for r in answer)
    if rdtype == "MX":
        ordered = sorted(answer, key=lambda r: r.preference)
        return tuple(r.exchange.to_text(omit_final_dot=True).lower() for r in ordered)
    if rdtype == "PTR":
        return tuple(r.target.to_text(omit_final_dot=True) for r in answer)
    if rdtype == "TXT":
        return tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)
    return tuple(r.to_text() for r in answer)


__all__ = ["AnswerCache", "CachedResolver", "DnsAnswer", "Resolver"]
