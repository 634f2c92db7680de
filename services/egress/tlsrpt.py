"""TLS reporting (RFC 8460), the counting half: per policy domain and UTC day, how many sessions
succeeded and how many failed with which result type, in Redis (``mailmoat:tlsrpt:<day>:<domain>``,
a hash of result type to count, kept 8 days) and in ``mailmoat_tls_rpt_total{result}``.
Building and mailing the daily aggregate report from these counters is not done yet.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

KEY_PREFIX = "mailmoat:tlsrpt:"
KEEP_SECONDS = 8 * 86400
SUCCESS = "successful"

TLS_RPT = Counter(
    "mailmoat_tls_rpt_total",
    "MX delivery sessions to domains with an MTA-STS policy, by RFC 8460 result "
    "(``successful`` or the failure's result type).",
    ["result"],
)


def counter_key(domain: str, day: datetime) -> str:
    return f"{KEY_PREFIX}{day:%Y-%m-%d}:{domain.lower()}"


async def record(redis: Any, domain: str, result: str, now: datetime) -> None:
    """Count one session (or policy fetch) ``result`` for ``domain``; a Redis failure is logged, not raised."""
    TLS_RPT.labels(result).inc()
    key = counter_key(domain, now)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, result, 1)
            pipe.expire(key, KEEP_SECONDS)
            await pipe.execute()
    except Exception as exc:  # reporting must never hold up a delivery
        log.warning("TLS-RPT counter for %s not stored: %s", domain, exc)


async def counts(redis: Any, domain: str, day: datetime) -> dict[str, int]:
    raw = await redis.hgetall(counter_key(domain, day))
    return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}


__all__ = ["KEY_PREFIX", "SUCCESS", "TLS_RPT", "counter_key", "counts", "record"]
