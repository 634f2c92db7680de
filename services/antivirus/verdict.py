"""The antivirus stage's verdict detail (typed) and what routing does with it.

Every result but ``clean`` and ``unscanned`` (the engine was away and the policy fails open) is a
malware finding: ``malware``, ``archive-bomb``, ``blocked-type``, ``macro``, ``encrypted`` and
``unscannable`` (also when the stage failed on the message) take the verdict's ``action`` (the
policy's ``antimalware.action`` when it names none): ``quarantine``, ``reject`` (5.7.1) or ``strip``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import Disposition, VerdictDetail

if TYPE_CHECKING:
    from mailmoat_policy import Policy

CLEAN = frozenset({"clean", "unscanned"})
"""Results that call for nothing."""
ACTIONS = ("quarantine", "reject", "strip")
REASONS = {
    "archive-bomb": "an archive exceeds the archive limits",
    "blocked-type": "a blocked attachment type",
    "encrypted": "an encrypted archive that cannot be scanned",
    "unscannable": "content that could not be scanned",
}
_PART = re.compile(r"\bpart (\d+(?:\.\d+)*(?:\.uu\d+)?)")


class AntivirusVerdict(VerdictDetail):
    """What the antivirus stage wrote in ``Verdict.detail``."""

    names: list[str] = []
    """Malware signatures found."""
    findings: dict[str, list[str]] = {}
    """Per counted result (``malware``, ``blocked-type``, ...): where it was found."""
    parts: int = 0
    members: int = 0
    scans: int | None = None
    encrypted_allowed: list[str] = []
    unscannable_allowed: list[str] = []
    macros_allowed: list[str] = []
    action: str | None = None
    """For a result that is not clean: ``quarantine``, ``reject`` or ``strip``."""
    action_reason: str | None = None
    strip: list[str] | None = None
    """The MIME part paths to strip; None when a finding is not tied to a part."""
    reason: str | None = None
    """For ``unscanned``: why the engine was not asked."""
    fail_open: bool = False

    @staticmethod
    def clean(verdict: Verdict) -> bool:
        return verdict.result in CLEAN

    def rule_verdicts(self, verdict: Verdict) -> frozenset[str]:
        return frozenset() if self.clean(verdict) else frozenset({"malware", verdict.result})

    def withholds_dsn(self, verdict: Verdict) -> bool:
        return verdict.result == "malware"

    def detections(self) -> list[str]:
        return list(self.names)

    @property
    def found_encrypted(self) -> bool:
        """An encrypted archive was seen (whether the policy blocks or allows them)."""
        return bool(self.findings.get("encrypted") or self.encrypted_allowed)

    def strip_paths(self) -> tuple[str, ...]:
        """The MIME parts to strip: ``strip``, else the parts the findings name."""
        if self.strip:
            return tuple(self.strip)
        found: list[str] = []
        for text in (t for values in self.findings.values() for t in values):
            for path in _PART.findall(text):
                if path not in found:
                    found.append(path)
        return tuple(found)

    def disposition(self, verdict: Verdict, envelope: Envelope, policy: Policy) -> Disposition | None:
        if self.clean(verdict):
            return None
        action = self.action or policy.antimalware.action
        if verdict.result == "malware":
            reason = f"malware detected ({', '.join(self.names)})" if self.names else "malware detected"
        else:
            reason = REASONS.get(verdict.result, f"antivirus verdict {verdict.result}")
        return Disposition(
            action=action if action in ACTIONS else "quarantine",
            cause="malware", stage=verdict.stage, result=verdict.result, reason=reason,
            status="5.7.1" if action == "reject" else None,
            strip=self.strip_paths() if action == "strip" else (),
        )


__all__ = ["CLEAN", "AntivirusVerdict"]
