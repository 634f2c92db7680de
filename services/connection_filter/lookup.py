"""DNS look-ups of the connection filter, through the stages' shared cached resolver
(``mailmoat_mail.dnscache``): bounded in time, cached per process for the policy's ``cache_ttl``.

Every failure becomes a ``Lookup`` (never an exception): NXDOMAIN and empty answers are facts and are
cached; a timeout, SERVFAIL or unreachable server is ``temperror`` and is not cached.
"""

from __future__ import annotations

from mailmoat_connection_filter.decide import Lookup
from mailmoat_mail.dns import ResolverConfig
from mailmoat_mail.dnscache import AnswerCache, CachedResolver


class Resolver:
    """Queries with one resolver per configuration and cache time, over one shared answer cache."""

    def __init__(self, cache: AnswerCache | None = None):
        self.cache = cache or AnswerCache()
        self._resolvers: dict[tuple[ResolverConfig, float], CachedResolver] = {}

    def _resolver(self, config: ResolverConfig, ttl: float) -> CachedResolver:
        key = (config, ttl)
        resolver = self._resolvers.get(key)
        if resolver is None:
            resolver = CachedResolver(config, cache=self.cache, fixed_ttl=ttl)
            self._resolvers = {key: resolver}
        return resolver

    async def query(self, name: str, rdtype: str, config: ResolverConfig, ttl: float) -> Lookup:
        answer = await self._resolver(config, ttl).query(name, rdtype)
        return Lookup(answer.status, answer.records, answer.error)
