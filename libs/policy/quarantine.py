"""``quarantine``: retention and who may release a held message."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mailmoat_policy import registry
from mailmoat_policy.base import StrictModel


class QuarantineRetention(StrictModel):
    default_days: int = Field(30, ge=1, le=365)
    spam_days: int = Field(30, ge=1, le=30)
    """Retention of spam, bulk and spoof quarantined by the antispam verdict (1-30 days, as EOP)."""


class QuarantineNotifications(StrictModel):
    """End-user quarantine notifications: a digest per recipient of what was held since the last one, with
    signed links to view, release or request release (the console sends them, docs/console.md)."""

    enabled: bool = False
    every_hours: int = Field(24, ge=1, le=168)
    """At most one digest per recipient in this many hours."""
    subject: str = Field("Quarantine summary: {count} message(s) held for {recipient}", min_length=1,
                         max_length=200)
    """``{count}`` and ``{recipient}`` are replaced."""
    template: str | None = Field(None, max_length=20_000)
    """The digest's text as a Jinja2 template (sandboxed); none: the built-in one."""
    template_file: str | None = None
    """A file holding that template (read at each digest round), instead of ``template``."""
    link_days: int = Field(7, ge=1, le=30)
    """How long the digest's links work."""
    from_address: str | None = None
    """The digest's From; none: postmaster@<first accepted domain>."""

    @model_validator(mode="after")
    def _one_template(self) -> QuarantineNotifications:
        if self.template is not None and self.template_file is not None:
            raise ValueError("give template or template_file, not both")
        return self


class Quarantine(StrictModel):
    retention: QuarantineRetention = Field(default_factory=QuarantineRetention)
    release_by: dict[str, Literal["admin", "user"]] = Field(default_factory=registry.admin_release_reasons)
    """Who may release a message held for a reason (a verdict category or ``rule``); a reason not
    listed may be released by recipients (``user``). Default: administrators only for each reason in a
    stage's ``release_by`` in the registry (``malware``, ``hcphish``)."""
    admin_notify: str | None = None
    """Address told about every message quarantined for malware (``None``: nobody)."""
    notifications: QuarantineNotifications = Field(default_factory=QuarantineNotifications)
    """End-user quarantine notifications (off by default)."""
