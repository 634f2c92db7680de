"""The connection filter's verdict detail (typed) and what routing does with it.

Results: ``allow`` (IP allow list, SCL -1), ``reject`` (IP block list, or a listing in a DNS block
list whose action is reject), ``listed`` (annotated only), ``pass``, ``error`` (the stage failed: no
action follows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import Disposition, VerdictDetail

if TYPE_CHECKING:
    from mailmoat_policy import Policy


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class DnsblEntry(_Part):
    """One DNS block list's answer."""

    zone: str = ""
    result: str = ""
    """``listed``, ``clean``, ``temperror`` or ``error``."""
    action: str = "annotate"
    codes: list[str] = []
    meanings: list[str] = []
    weight: float = 0.0
    error: str | None = None


class PtrDetail(_Part):
    result: str = "none"
    names: list[str] = []
    confirmed: str | None = None


class HeloDetail(_Part):
    name: str | None = None
    syntax: str = "missing"
    literal: str | None = None
    matches_ptr: bool | None = None


class ConnectionVerdict(VerdictDetail):
    """What the connection filter wrote in ``Verdict.detail``."""

    client_ip: str = ""
    ipv: str | None = None
    """EOP-style IP verdict: ``CAL``, ``BLK``, ``DNSBL``, ``NLI``."""
    scl: int | None = None
    """-1 for an allow-listed client."""
    reason: str | None = None
    """For ``reject``: ``ip_block`` or ``dnsbl``."""
    dnsbl_skipped: str | None = None
    dnsbl: list[DnsblEntry] = []
    dnsbl_score: float = 0.0
    ptr: PtrDetail | None = None
    helo: HeloDetail | None = None
    temperror: list[str] = []

    def allow_listed(self, verdict: Verdict) -> bool:
        return verdict.result == "allow" or self.scl == -1

    def rule_verdicts(self, verdict: Verdict) -> frozenset[str]:
        if verdict.result == "allow":
            return frozenset({"ip_allow"})
        if self.reason == "ip_block":
            return frozenset({"ip_block"})
        if verdict.result in ("listed", "reject"):
            return frozenset({"dnsbl"})
        return frozenset()

    def disposition(self, verdict: Verdict, envelope: Envelope, policy: Policy) -> Disposition | None:
        if verdict.result != "reject":
            return None
        if self.reason == "ip_block":
            reason = f"client host [{self.client_ip}] is on the IP block list"
        else:
            zones = [d.zone for d in self.dnsbl if d.result == "listed" and d.action == "reject" and d.zone]
            reason = f"client host [{self.client_ip}] blocked using {', '.join(zones) or 'a DNS block list'}"
        return Disposition("reject", "connection", verdict.stage, verdict.result, reason, "5.7.1")


__all__ = ["ConnectionVerdict", "DnsblEntry", "HeloDetail", "PtrDetail"]
