"""The antispam stage's verdict detail (typed) and what routing does with it (decision 004).

The verdict calls for the action of its strongest key of ``SPAM_ORDER`` (``antispam.actions``):
hcphish > phish > hcspam > DMARC reject > DMARC quarantine > spoof > spam > bulk. An allow-listed
message (SCL -1, from the connection filter's IP allow list or this stage's allow lists) is acted on
only for high-confidence phishing. The verdict ``error`` (the stage failed on the message) keeps what
was judged without the content (authentication, allow and block lists: its keys act as above) and
otherwise takes ``antispam.actions.error``, below every spam key and skipped for an allow-listed message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mailmoat_mail.dsn import SPAM_RESULTS
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import Disposition, VerdictDetail, allow_listed

if TYPE_CHECKING:
    from mailmoat_policy import Policy

SPAM_ORDER = ("hcphish", "phish", "hcspam", "dmarc_reject", "dmarc_quarantine", "spoof", "spam", "bulk")
"""Antispam keys of ``antispam.actions``, strongest first."""
SPAM_CATEGORIES = frozenset({"hcphish", "phish", "hcspam", "spoof", "spam", "bulk"})


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class DmarcDetail(_Part):
    """The DMARC evaluation of the author domain (``policy``: what the receiver should do)."""

    result: str = "none"
    policy: str = "none"
    published: str | None = None
    domain: str = ""
    override: str = ""


class ImpersonationDetail(_Part):
    kind: str = ""
    """``user``, ``domain`` or ``address``."""
    claimed: str = ""
    sender: str = ""


class AntispamVerdict(VerdictDetail):
    """What the antispam stage wrote in ``Verdict.detail`` (and a mail-flow rule's SCL, ``scl_rule``)."""

    scl: int | None = None
    bcl: int | None = None
    category: str | None = None
    """The strongest category, or None."""
    categories: list[str] = Field(default_factory=list)
    dmarc: DmarcDetail | None = None
    forged: bool = False
    auth: dict[str, Any] = Field(default_factory=dict)
    """SPF, DKIM, DMARC, ARC, composite authentication and the author (``auth.AuthResult.detail``)."""
    rules: list[str] = Field(default_factory=list)
    score: float | None = None
    sfv: str | None = None
    bulk: list[str] = Field(default_factory=list)
    impersonation: ImpersonationDetail | None = None
    bayes: float | None = None
    asf: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    allowed: str | None = None
    """Why the message skips filtering (SCL -1)."""
    scl_rule: str | None = None
    """The mail-flow rule that set the SCL."""

    def hits(self, verdict: Verdict) -> list[str]:
        """Every ``SPAM_ORDER`` key the verdict calls for, strongest first."""
        found = {name for name in (verdict.result, self.category, *self.categories) if name in SPAM_CATEGORIES}
        if self.dmarc is not None and self.dmarc.result.lower() == "fail":
            policy = self.dmarc.policy.lower()
            if policy in ("reject", "quarantine"):
                found.add(f"dmarc_{policy}")
        return [key for key in SPAM_ORDER if key in found]

    def allow_listed(self, verdict: Verdict) -> bool:
        return verdict.result == "allowed" or self.scl == -1

    def rule_verdicts(self, verdict: Verdict) -> frozenset[str]:
        return frozenset(self.hits(verdict))

    def withholds_dsn(self, verdict: Verdict) -> bool:
        return verdict.result in SPAM_RESULTS or (self.scl or 0) >= 5

    def forged_sender(self) -> bool:
        return self.forged

    def disposition(self, verdict: Verdict, envelope: Envelope, policy: Policy) -> Disposition | None:
        # Whether the message is allow-listed (every verdict read again) is asked only when it matters.
        hits = self.hits(verdict)
        if hits and allow_listed(envelope):
            hits = [h for h in hits if h == "hcphish"]
        if hits:
            return self._spam(hits[0], verdict, policy)
        action = policy.antispam.actions.error
        if verdict.result == "error" and action != "deliver" and not allow_listed(envelope):
            return Disposition(action, "error", verdict.stage, "error",
                               f"the antispam stage failed on this message: {self.error or 'error'}")
        return None

    def _spam(self, key: str, verdict: Verdict, policy: Policy) -> Disposition:
        action = getattr(policy.antispam.actions, key)
        if key.startswith("dmarc_"):
            domain = self.dmarc.domain if self.dmarc is not None else ""
            reason = (f"sending domain {domain} does not pass DMARC verification and has a DMARC policy of "
                      f"{key.removeprefix('dmarc_')}")
        else:
            reason = f"SCL {self.scl}" if self.scl is not None else ""
        status = ("5.7.509" if key == "dmarc_reject" else "5.7.1") if action == "reject" else None
        return Disposition(action, key, verdict.stage, verdict.result, reason, status)


__all__ = ["SPAM_CATEGORIES", "SPAM_ORDER", "AntispamVerdict", "DmarcDetail", "ImpersonationDetail"]
