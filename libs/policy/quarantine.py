"""``quarantine``: retention and who may release a held message."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mailmoat_policy import registry
from mailmoat_policy.base import StrictModel


class QuarantineRetention(StrictModel):
    default_days: int = Field(30, ge=1, le=365)
    spam_days: int = Field(30, ge=1, le=30)
    """Retention of spam, bulk and spoof quarantined by the antispam verdict (1-30 days, as EOP)."""


class Quarantine(StrictModel):
    retention: QuarantineRetention = Field(default_factory=QuarantineRetention)
    release_by: dict[str, Literal["admin", "user"]] = Field(default_factory=registry.admin_release_reasons)
    """Who may release a message held for a reason (a verdict category or ``rule``); a reason not
    listed may be released by recipients (``user``). Default: administrators only for each reason in a
    stage's ``release_by`` in the registry (``malware``, ``hcphish``)."""
    admin_notify: str | None = None
    """Address told about every message quarantined for malware (``None``: nobody)."""
