"""The mail-flow rule condition the DLP stage adds (registry ``rule_conditions``):
``sensitive_information: [{type, min_count, min_confidence}]``.

It matches when the DLP verdict counts at least ``min_count`` distinct instances of ``type`` at
``min_confidence`` or higher, for any entry of the list (one entry may be given without the list).
A message without a DLP verdict (the stage not in ``pipeline.filters``, or it failed) never matches.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from mailmoat_dlp.confidence import Confidence
from mailmoat_dlp.policy import TYPE_NAME
from mailmoat_dlp.verdict import DlpVerdict
from mailmoat_platform.models import Envelope
from mailmoat_platform.stages import RuleCondition
from mailmoat_platform.verdicts import detail_in

STAGE = "dlp"


class SensitiveInfoCondition(BaseModel):
    """One sensitive information type and how much of it, at what confidence, makes the condition true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    """``credit_card``, ``iban``, ``us_ssn`` or the name of a custom type (``dlp.custom_types``)."""
    min_count: int = Field(1, ge=1)
    min_confidence: Confidence = "medium"

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not TYPE_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a sensitive information type name such as credit_card")
        return value


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, dict | SensitiveInfoCondition) else value


SensitiveInformation = Annotated[list[SensitiveInfoCondition], BeforeValidator(_listed), Field(min_length=1)]


def matches(value: list[SensitiveInfoCondition], envelope: Envelope) -> bool:
    """Any entry's type is in the DLP verdict often enough at its confidence."""
    detail = detail_in(envelope, STAGE, DlpVerdict)
    if detail is None:
        return False
    return any(detail.count(c.type, c.min_confidence) >= c.min_count for c in value)


CONDITIONS: dict[str, RuleCondition] = {
    "sensitive_information": RuleCondition(value=SensitiveInformation, matches=matches),
}

__all__ = ["CONDITIONS", "SensitiveInfoCondition", "SensitiveInformation", "matches"]
