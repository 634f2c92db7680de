"""TLS reporting (RFC 8460), the counting half: per policy domain and UTC day, how many sessions
succeeded and how many failed with which result type, in Redis (``mailmoat:tlsrpt:<day>:<domain>``,
a hash of result type to count, kept 8 days) and in ``mailmoat_tls_rpt_total{result}``.

What the daily report needs besides the counts is kept next to them for the same 8 days: the policy
applied (``mailmoat:tlsrpt-policy:<day>:<domain>``, the last one seen that day) and the failures by
result type, sending address and receiving MX (``mailmoat:tlsrpt-fail:<day>:<domain>``, a hash of
detail to count with at most ``MAX_DETAILS`` fields: further distinct details are counted under
their result type alone, so a domain with many MX hosts cannot grow the hash without bound).
``tlsreport`` builds the report, ``tlsrptsend`` mails it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

KEY_PREFIX = "mailmoat:tlsrpt:"
POLICY_PREFIX = "mailmoat:tlsrpt-policy:"
FAILURE_PREFIX = "mailmoat:tlsrpt-fail:"
KEEP_SECONDS = 8 * 86400
SUCCESS = "successful"
MAX_DETAILS = 100
"""Distinct failure details kept per domain and day; more are counted by result type only."""

TLS_RPT = Counter(
    "mailmoat_tls_rpt_total",
    "MX delivery sessions to domains with an MTA-STS policy, by RFC 8460 result "
    "(``successful`` or the failure's result type).",
    ["result"],
)

# KEYS[1] the failure hash; ARGV: field, overflow field, limit, ttl. A new field when limit - 1 are
# taken goes to the overflow field (the result type alone), so the hash never has more than limit.
_COUNT_DETAIL = """
local field = ARGV[1]
if redis.call('HEXISTS', KEYS[1], field) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) - 1 then
  field = ARGV[2]
end
redis.call('HINCRBY', KEYS[1], field, 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""


@dataclass(frozen=True)
class AppliedPolicy:
    """RFC 8460 4.3 ``policy``: what was applied to a domain's sessions."""

    policy_type: str
    """``sts``, ``tlsa`` or ``no-policy-found``."""
    policy_string: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"policy-type": self.policy_type, "policy-string": list(self.policy_string),
                "mx-host": list(self.mx_host)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AppliedPolicy:
        return cls(str(raw["policy-type"]), tuple(raw.get("policy-string", ())), tuple(raw.get("mx-host", ())))


@dataclass(frozen=True)
class FailureDetail:
    """One RFC 8460 ``failure-details`` key (its count kept beside it)."""

    result_type: str
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_ip: str = ""

    def field(self) -> str:
        return json.dumps([self.result_type, self.sending_mta_ip, self.receiving_mx_hostname, self.receiving_ip])

    @classmethod
    def from_field(cls, field: str) -> FailureDetail:
        result_type, sending, mx, receiving = json.loads(field)
        return cls(result_type, sending, mx, receiving)


def counter_key(domain: str, day: datetime) -> str:
    return f"{KEY_PREFIX}{day:%Y-%m-%d}:{domain.lower()}"


def policy_key(domain: str, day: datetime) -> str:
    return f"{POLICY_PREFIX}{day:%Y-%m-%d}:{domain.lower()}"


def failure_key(domain: str, day: datetime) -> str:
    return f"{FAILURE_PREFIX}{day:%Y-%m-%d}:{domain.lower()}"


async def record(redis: Any, domain: str, result: str, now: datetime, *, policy: AppliedPolicy | None = None,
                 detail: FailureDetail | None = None) -> None:
    """Count one session (or policy fetch) ``result`` for ``domain``, with the policy applied and, for a
    failure, its detail; a Redis failure is logged, not raised."""
    TLS_RPT.labels(result).inc()
    key = counter_key(domain, now)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, result, 1)
            pipe.expire(key, KEEP_SECONDS)
            if policy is not None:
                pipe.set(policy_key(domain, now), json.dumps(policy.to_json()), ex=KEEP_SECONDS)
            await pipe.execute()
        if result != SUCCESS:
            detail = detail or FailureDetail(result)
            await redis.eval(_COUNT_DETAIL, 1, failure_key(domain, now), detail.field(),
                             FailureDetail(detail.result_type).field(), MAX_DETAILS, KEEP_SECONDS)
    except Exception as exc:  # reporting must never hold up a delivery
        log.warning("TLS-RPT counter for %s not stored: %s", domain, exc)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def counts(redis: Any, domain: str, day: datetime) -> dict[str, int]:
    raw = await redis.hgetall(counter_key(domain, day))
    return {_text(k): int(v) for k, v in raw.items()}


async def failures(redis: Any, domain: str, day: datetime) -> dict[FailureDetail, int]:
    raw = await redis.hgetall(failure_key(domain, day))
    return {FailureDetail.from_field(_text(k)): int(v) for k, v in raw.items()}


async def applied_policy(redis: Any, domain: str, day: datetime) -> AppliedPolicy | None:
    raw = await redis.get(policy_key(domain, day))
    return None if raw is None else AppliedPolicy.from_json(json.loads(_text(raw)))


async def domains(redis: Any, day: datetime) -> Sequence[str]:
    """Policy domains with counts on ``day``, sorted."""
    prefix = f"{KEY_PREFIX}{day:%Y-%m-%d}:"
    found = {_text(k)[len(prefix):] async for k in redis.scan_iter(match=prefix + "*", count=500)}
    return sorted(found)


__all__ = [
    "KEY_PREFIX", "MAX_DETAILS", "SUCCESS", "TLS_RPT", "AppliedPolicy", "FailureDetail", "applied_policy",
    "counter_key", "counts", "domains", "failure_key", "failures", "policy_key", "record",
]
