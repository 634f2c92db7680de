"""MTA-STS applied to an MX delivery: which MX hosts may be used, with which TLS mode, and what the
attempt counts for TLS reporting.

``enforce``: only MX hosts matching the policy, TLS verified for the MX name (``verify``), so an MX
outside the policy or a certificate that does not verify defers the copy (4.7.5), never clear text.
``testing``: delivered as without a policy, but an ``opportunistic`` route's TLS verified where it can
be (``sts-testing``) and every failure counted. ``outbound.mta_sts`` (and ``per_route``) can turn the
published mode off or replace it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailmoat_egress import tlsrpt
from mailmoat_egress.delivery import RcptResult
from mailmoat_egress.mtasts import StsMode, StsPolicy, mode_in_force, tls_result_type
from mailmoat_egress.stspolicies import StsPolicies
from mailmoat_egress.targets import MX_MISMATCH, resolver_config
from mailmoat_egress.tls import STS_TESTING
from mailmoat_platform.models import Route, utcnow
from mailmoat_policy import Policy


@dataclass(frozen=True)
class StsPlan:
    domain: str = ""
    mode: StsMode = "none"
    policy: StsPolicy | None = None
    error: str | None = None
    """RFC 8460 result type of a failed policy fetch."""

    @property
    def allow(self) -> Callable[[str], bool] | None:
        """MX host filter for ``targets_for`` (only under ``enforce``)."""
        return self.policy.allows if self.mode == "enforce" and self.policy else None

    def tls(self, route: Route) -> tuple[str, str | None]:
        """(TLS mode, TLS name) of the delivery: the MX name is what the certificate must carry."""
        if self.mode == "enforce":
            return "verify", None
        if self.mode == "testing" and route.tls == "opportunistic":
            return STS_TESTING, None
        return route.tls, route.tls_name


def session_result(plan: StsPlan, result: RcptResult) -> str | None:
    """The RFC 8460 result of one delivery attempt under a policy, from its first recipient's result;
    None when the attempt says nothing about TLS (no host reached for other reasons)."""
    if plan.mode == "none" or plan.policy is None:
        return None
    if result.remote_host:
        if not plan.policy.allows(result.remote_host):
            return "validation-failure"
        if result.tls_failure:
            return tls_result_type(result.tls_failure)
        if result.tls is None:
            return "starttls-not-supported"
        return tlsrpt.SUCCESS
    if MX_MISMATCH in result.text:
        return "validation-failure"
    if result.enhanced in ("4.7.4", "4.7.5"):
        return tls_result_type(result.text)
    return None


class MtaSts:
    """Policy look-ups and reporting for egress."""

    def __init__(self, redis: Callable[[], Any], cafile: str | None = None):
        self.redis = redis
        self.policies = StsPolicies(redis, cafile)

    async def plan(self, route: Route, policy: Policy) -> StsPlan:
        override = policy.outbound.mta_sts_for(route.name)
        if route.kind != "mx" or not route.domain or override == "off":
            return StsPlan()
        found = await self.policies.lookup(route.domain, resolver_config(policy), policy.outbound.mta_sts_port)
        return StsPlan(route.domain, mode_in_force(found.policy, override), found.policy, found.error)

    async def report(self, plan: StsPlan, results: list[RcptResult], sending_ip: str | None = None) -> None:
        now = utcnow()
        applied = applied_policy(plan.policy)
        if plan.error:
            await tlsrpt.record(self.redis(), plan.domain, plan.error, now, policy=applied)
        outcome = session_result(plan, results[0]) if results else None
        if outcome is not None:
            detail = tlsrpt.FailureDetail(outcome, sending_ip or "", results[0].remote_host)
            await tlsrpt.record(self.redis(), plan.domain, outcome, now, policy=applied, detail=detail)


def applied_policy(policy: StsPolicy | None) -> tlsrpt.AppliedPolicy:
    """The RFC 8460 ``policy`` of a delivery under MTA-STS (``no-policy-found`` when none was fetched)."""
    if policy is None:
        return tlsrpt.AppliedPolicy("no-policy-found")
    lines = ("version: STSv1", f"mode: {policy.mode}", *(f"mx: {mx}" for mx in policy.mx),
             f"max_age: {policy.max_age}")
    return tlsrpt.AppliedPolicy("sts", lines, policy.mx)


__all__ = ["MX_MISMATCH", "MtaSts", "StsPlan", "applied_policy", "session_result"]
