"""The DLP stage's verdict detail (``mailmoat_dlp.verdict:DlpVerdict``): per sensitive information
type the number of distinct instances, the highest confidence and redacted evidence.

Redacted means: the type, the confidence, the part it was found in, the issuer or country, and at most
the last four digits; never the value. The verdict calls for nothing itself (``disposition`` is None):
mail-flow rules act on it with the ``sensitive_information`` condition (``mailmoat_dlp.rules``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from mailmoat_dlp.confidence import LEVELS, Confidence, rank
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import Disposition, VerdictDetail

if TYPE_CHECKING:
    from mailmoat_policy import Policy

RESULTS = ("found", "none", "error")
"""``found``: some sensitive information; ``none``: nothing; ``error``: the stage failed on the message."""


class Evidence(BaseModel):
    """One instance, redacted."""

    model_config = ConfigDict(extra="allow")

    confidence: Confidence
    part: str
    """Where: ``subject``, a MIME part path (``1.2``) with the attachment's name, an archive member."""
    last4: str | None = None
    """The last digits (at most four; none for values of fewer than eight digits)."""
    label: str | None = None
    """The card's issuer or the IBAN's country."""


class TypeFinding(BaseModel):
    """One sensitive information type found in the message."""

    model_config = ConfigDict(extra="allow")

    type: str
    count: int = Field(ge=1)
    """Distinct instances (each at the highest confidence it was found with)."""
    confidence: Confidence
    """The highest confidence of an instance."""
    counts: dict[Confidence, int] = Field(default_factory=dict)
    """Instances per confidence level."""
    evidence: list[Evidence] = Field(default_factory=list)
    """The first instances, highest confidence first (at most ten)."""

    def count_at_least(self, floor: Confidence) -> int:
        """Instances of this confidence or higher."""
        return sum(n for level, n in self.counts.items() if rank(level) >= rank(floor))


class DlpVerdict(VerdictDetail):
    """What the DLP stage wrote in ``Verdict.detail``."""

    findings: list[TypeFinding] = Field(default_factory=list)
    scanned: int = 0
    """Parts and archive members looked at."""
    notes: list[str] = Field(default_factory=list)
    """What could not be read or was left out (unreadable attachments, limits reached), redacted."""

    def finding(self, type_name: str) -> TypeFinding | None:
        for item in self.findings:
            if item.type == type_name:
                return item
        return None

    def count(self, type_name: str, floor: Confidence = "low") -> int:
        """Instances of a type at ``floor`` confidence or higher (0 when not found)."""
        item = self.finding(type_name)
        return 0 if item is None else item.count_at_least(floor)

    def summary(self) -> str:
        """One line for the trace and the report header: ``credit_card:2/high iban:1/medium``."""
        return " ".join(f"{f.type}:{f.count}/{f.confidence}" for f in self.findings) or "none"

    def disposition(self, verdict: Verdict, envelope: Envelope, policy: Policy) -> Disposition | None:
        """Nothing: mail-flow rules act on DLP findings."""
        return None


__all__ = ["LEVELS", "RESULTS", "DlpVerdict", "Evidence", "TypeFinding"]
