"""MTA-STS policies of recipient domains: the ``_mta-sts`` TXT record through the policy's resolver,
the policy file over HTTPS with a verified certificate, and a Redis cache for ``max_age``.

RFC 8461 5.1: a cached policy stays in force until it expires; a new TXT ``id`` makes it fetched
again, and while that fails (or the TXT record or DNS is gone) the cached one is used. A domain with
a TXT record but no fetchable policy and nothing cached is treated as one without MTA-STS (the
failure is reported). Redirects are not followed; the policy must come as ``text/plain`` with 200.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailmoat_egress.mtasts import PolicyError, ResultType, StsPolicy, parse_policy, txt_id
from mailmoat_mail.dns import DnsError, NoSuchDomain, ResolverConfig, resolve_addresses, resolve_txt

log = logging.getLogger(__name__)

CACHE_PREFIX = "mailmoat:mtasts:"
FETCH_TIMEOUT = 10.0
MAX_POLICY_BYTES = 64 * 1024


@dataclass(frozen=True)
class StsLookup:
    policy: StsPolicy | None
    """The policy in force (fresh or cached); None when the domain has none."""
    error: ResultType | None = None
    """Why a published policy could not be had (RFC 8460 result type), None when nothing failed."""


class FetchFailed(Exception):
    def __init__(self, result: ResultType, message: str):
        super().__init__(message)
        self.result = result


async def fetch_policy(domain: str, config: ResolverConfig, port: int = 443, cafile: str | None = None,
                       timeout: float = FETCH_TIMEOUT) -> StsPolicy:
    """GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (the host's addresses through
    ``config``; the certificate must chain to the system's CAs, or ``cafile``'s, and name the host)."""
    import aiohttp  # the client with the first policy fetched, not in every egress process

    host = f"mta-sts.{domain}"
    try:
        addresses = await resolve_addresses(host, config)
    except DnsError as exc:
        raise FetchFailed("sts-policy-fetch-error", f"{host}: {exc.message}") from exc
    if not addresses:
        raise FetchFailed("sts-policy-fetch-error", f"{host} has no address")
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    last: FetchFailed | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as client:
        for address in addresses:
            literal = f"[{address}]" if ":" in address else address
            url = f"https://{literal}:{port}/.well-known/mta-sts.txt"
            try:
                async with client.get(url, ssl=context, server_hostname=host, allow_redirects=False,
                                      headers={"Host": host if port == 443 else f"{host}:{port}"}) as response:
                    if response.status != 200:
                        raise FetchFailed("sts-policy-fetch-error", f"{host} answered HTTP {response.status}")
                    if response.content_type != "text/plain":
                        raise FetchFailed("sts-policy-invalid", f"{host} sent {response.content_type}, not text/plain")
                    body = await response.content.read(MAX_POLICY_BYTES + 1)
            except aiohttp.ClientConnectorCertificateError as exc:
                raise FetchFailed("sts-webpki-invalid", f"{host}: {exc.certificate_error}") from exc
            except aiohttp.ClientSSLError as exc:
                raise FetchFailed("sts-webpki-invalid", f"{host}: {exc}") from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = FetchFailed("sts-policy-fetch-error", f"{host} ({address}): {exc or type(exc).__name__}")
                continue
            if len(body) > MAX_POLICY_BYTES:
                raise FetchFailed("sts-policy-invalid", f"{host}: policy larger than {MAX_POLICY_BYTES} bytes")
            try:
                return parse_policy(body.decode("utf-8"))
            except (PolicyError, UnicodeDecodeError) as exc:
                raise FetchFailed("sts-policy-invalid", f"{host}: {exc}") from exc
    assert last is not None
    raise last


class StsPolicies:
    """Policy look-ups with the Redis cache (``mailmoat:mtasts:<domain>``: id and policy, expiring
    after the policy's ``max_age``)."""

    def __init__(self, redis: Callable[[], Any], cafile: str | None = None):
        self.redis = redis
        self.cafile = cafile

    async def _cached(self, domain: str) -> tuple[str, StsPolicy] | None:
        try:
            raw = await self.redis().get(CACHE_PREFIX + domain)
        except Exception as exc:  # the cache is an optimisation; a look-up goes on without it
            log.warning("MTA-STS cache unavailable: %s", exc)
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return str(data["id"]), StsPolicy.from_json(data["policy"])
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            log.warning("MTA-STS cache entry of %s unreadable (%s): fetched again", domain, exc)
            return None

    async def _store(self, domain: str, policy_id: str, policy: StsPolicy) -> None:
        if policy.max_age <= 0:
            return
        try:
            await self.redis().set(CACHE_PREFIX + domain, json.dumps({"id": policy_id, "policy": policy.to_json()}),
                                   ex=policy.max_age)
        except Exception as exc:
            log.warning("MTA-STS cache unavailable: %s", exc)

    async def lookup(self, domain: str, config: ResolverConfig, port: int = 443) -> StsLookup:
        domain = domain.lower().rstrip(".")
        cached = await self._cached(domain)
        try:
            records = await resolve_txt(f"_mta-sts.{domain}", config)
        except NoSuchDomain:
            records = []
        except DnsError as exc:
            log.info("MTA-STS TXT of %s: %s; %s", domain, exc.message, "cached policy used" if cached else "none")
            return StsLookup(cached[1] if cached else None)
        try:
            policy_id = txt_id(records)
        except PolicyError as exc:
            log.info("MTA-STS TXT of %s: %s", domain, exc)
            policy_id = None
        if policy_id is None:
            return StsLookup(cached[1] if cached else None)
        if cached and cached[0] == policy_id:
            return StsLookup(cached[1])
        try:
            policy = await fetch_policy(domain, config, port, self.cafile)
        except FetchFailed as exc:
            log.warning("MTA-STS policy of %s: %s (%s)", domain, exc, exc.result)
            return StsLookup(cached[1] if cached else None, exc.result)
        await self._store(domain, policy_id, policy)
        return StsLookup(policy)


__all__ = ["CACHE_PREFIX", "FetchFailed", "StsLookup", "StsPolicies", "fetch_policy"]
