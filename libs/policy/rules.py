"""``rules``: mail-flow rules, each conditions, exceptions and actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailmoat_policy.base import StrictModel
from mailmoat_policy.rule_actions import RuleActions
from mailmoat_policy.rule_conditions import RuleConditions


class MailFlowRule(StrictModel):
    """A named rule: conditions and exceptions select messages, actions say what happens to them."""

    name: str = Field(min_length=1, max_length=128)
    priority: int = 0
    """Lower runs first; rules of equal priority run in the order listed."""
    mode: Literal["enforce", "test"] = "enforce"
    """``test``: matches are traced, nothing is done."""
    active_from: datetime | None = None
    active_until: datetime | None = None
    stop_processing: bool = False
    """No rule after this one runs on a message it matched."""
    conditions: RuleConditions = Field(default_factory=RuleConditions)
    exceptions: RuleConditions = Field(default_factory=RuleConditions)
    actions: RuleActions

    @field_validator("active_from", "active_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _window(self) -> MailFlowRule:
        if self.active_from and self.active_until and self.active_from >= self.active_until:
            raise ValueError("active_until must be later than active_from")
        return self

    def active(self, now: datetime) -> bool:
        """Within its active window (a missing end is open)."""
        return (self.active_from is None or now >= self.active_from) and (
            self.active_until is None or now < self.active_until
        )

