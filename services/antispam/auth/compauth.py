"""Composite authentication (in the spirit of EOP's ``compauth``): one verdict on whether the author
domain of a message is genuine, from SPF, DKIM, DMARC and ARC. Pure.

Reasons (EOP's numbering where it has one):

| result | reason | when |
|---|---|---|
| pass | 100 | DMARC passed, or SPF/DKIM aligned with the author domain (no record needed) |
| pass | 130 | DMARC failed, but a trusted ARC sealer vouched for it (``trusted_arc_sealers``) |
| fail | 000 | DMARC failed and the author domain publishes ``p=quarantine`` or ``p=reject`` |
| fail | 010 | the same, for one of our accepted domains |
| fail | 601 | one of our accepted domains, from outside, without an aligned pass (spoofing our own domain) |
| fail | 020 | from outside, From names several authors or does not parse, and not every author domain passed |
| softfail | 001 | no enforcing DMARC policy, nothing aligned passed and SPF or DKIM failed |
| none | 300 | not enough to judge: no From domain, or nothing failed and nothing aligned |
| none | 400 | not checked: outbound mail or one of the organisation's own servers |
| none | 451 | a temporary DNS error kept DMARC from being evaluated |
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmoat_antispam.auth.dkimverify import DkimResult
from mailmoat_antispam.auth.dmarc import DmarcResult
from mailmoat_antispam.auth.spf import SpfResult


@dataclass(frozen=True)
class CompAuth:
    result: str
    """pass, fail, softfail or none."""
    reason: str
    """Three-digit reason code (see the module's table)."""
    detail: str = ""


def composite(*, outside: bool, own_domain: bool, spf: SpfResult, dkim: list[DkimResult],
              dmarc: DmarcResult) -> CompAuth:
    """``outside``: arrived from outside the organisation; ``own_domain``: the author domain is accepted by us."""
    if not outside:
        return CompAuth("none", "400", "not checked: from the organisation's own servers")
    if not dmarc.domain:
        return CompAuth("none", "300", "no author (From:) domain")
    if dmarc.override:
        return CompAuth("pass", "130", f"DMARC failure overridden by {dmarc.override}")
    if dmarc.result == "pass" or dmarc.spf_aligned or dmarc.dkim_aligned:
        return CompAuth("pass", "100", "authenticated: SPF or DKIM aligned with the author domain")
    if dmarc.result == "temperror":
        return CompAuth("none", "451", dmarc.reason or "temporary DNS error")
    if dmarc.result == "fail" and dmarc.policy in ("quarantine", "reject"):
        if own_domain:
            return CompAuth("fail", "010", f"DMARC p={dmarc.policy} failed for our own domain {dmarc.domain}")
        return CompAuth("fail", "000", f"DMARC p={dmarc.policy} failed for {dmarc.domain}")
    if own_domain:
        return CompAuth("fail", "601", f"{dmarc.domain} is our own domain but the message is not authenticated")
    failed = spf.result in ("fail", "softfail") or any(d.result == "fail" for d in dkim)
    if failed:
        return CompAuth("softfail", "001", "no enforcing DMARC policy, and SPF or DKIM failed")
    return CompAuth("none", "300", "no aligned authentication and no failure")


__all__ = ["CompAuth", "composite"]
