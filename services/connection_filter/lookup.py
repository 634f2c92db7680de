"""DNS look-ups of the connection filter: dnspython's asyncio resolver, bounded in time, cached per process.

Every failure becomes a ``Lookup`` (never an exception): NXDOMAIN and empty answers are facts and are
cached; a timeout, SERVFAIL or unreachable server is ``temperror`` and is not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

from mailmoat_common.dns import ResolverConfig, make_resolver
from mailmoat_connection_filter.decide import Lookup


class LookupCache:
    """Results by (name, type) for ``ttl`` seconds, at most ``size`` entries (oldest dropped first)."""

    def __init__(self, size: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.clock = clock
        self._items: OrderedDict[tuple[str, str], tuple[float, Lookup]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, name: str, rdtype: str) -> Lookup | None:
        key = (name.lower(), rdtype)
        item = self._items.get(key)
        if item is None or item[0] <= self.clock():
            if item is not None:
                del self._items[key]
            self.misses += 1
            return None
        self.hits += 1
        return item[1]

    def put(self, name: str, rdtype: str, lookup: Lookup, ttl: float) -> None:
        if ttl <= 0 or lookup.status == "temperror":
            return
        key = (name.lower(), rdtype)
        self._items[key] = (self.clock() + ttl, lookup)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class Resolver:
    """Queries with one resolver per configuration and a shared cache."""

    def __init__(self, cache: LookupCache | None = None):
        self.cache = cache or LookupCache()
        self._resolvers: dict[ResolverConfig, dns.asyncresolver.Resolver] = {}

    def _resolver(self, config: ResolverConfig) -> dns.asyncresolver.Resolver:
        resolver = self._resolvers.get(config)
        if resolver is None:
            resolver = make_resolver(config)
            self._resolvers = {config: resolver}
        return resolver

    async def query(self, name: str, rdtype: str, config: ResolverConfig, ttl: float) -> Lookup:
        cached = self.cache.get(name, rdtype)
        if cached is not None:
            return cached
        lookup = await self._ask(name, rdtype, config)
        self.cache.put(name, rdtype, lookup, ttl)
        return lookup

    async def _ask(self, name: str, rdtype: str, config: ResolverConfig) -> Lookup:
        resolver = self._resolver(config)
        try:
            answer = await asyncio.wait_for(
                resolver.resolve(name, rdtype, search=False), timeout=config.timeout + 1.0
            )
        except dns.resolver.NXDOMAIN:
            return Lookup("nxdomain")
        except dns.resolver.NoAnswer:
            return Lookup("nodata")
        except dns.resolver.NoNameservers:
            return Lookup("temperror", error="SERVFAIL")
        except (dns.exception.Timeout, TimeoutError):
            return Lookup("temperror", error="timeout")
        except dns.exception.DNSException as exc:
            return Lookup("temperror", error=type(exc).__name__)
        except OSError as exc:
            return Lookup("temperror", error=f"{type(exc).__name__}: {exc.strerror or exc}")
        return Lookup("ok", tuple(_text(r, rdtype) for r in answer))


def _text(rdata: object, rdtype: str) -> str:
    if rdtype == "PTR":
        return str(rdata.target)  # type: ignore[attr-defined]
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)  # type: ignore[attr-defined]
    return str(rdata)
