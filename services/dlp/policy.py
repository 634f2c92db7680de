"""The policy's ``dlp`` section (``mailmoat_dlp.policy:Dlp``, every field defaulted): which built-in
sensitive information types are looked for, custom types, the keyword window, what the verdict keeps,
and the bounds of text extraction. Archives inside attachments are opened within the anti-malware
archive limits (``antimalware.archives``), not limits of this section's own.

``Dlp.check_policy`` (called when the whole policy is validated) refuses a mail-flow rule whose
``sensitive_information`` names a type this section does not look for: it could never match."""

from __future__ import annotations

import re
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailmoat_dlp.confidence import Confidence

if TYPE_CHECKING:
    from mailmoat_policy import Policy

BuiltinType = Literal["credit_card", "iban", "us_ssn"]
BUILTIN_TYPES: tuple[str, ...] = ("credit_card", "iban", "us_ssn")
TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
RULE_CONDITION = "sensitive_information"
"""The mail-flow rule condition on this stage's verdict (``mailmoat_dlp.rules``)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomType(_Strict):
    """A sensitive information type of the organisation's own: a regular expression, optionally a
    checksum the match must pass and keywords that raise the confidence when near."""

    name: str
    """Lower-case letters, digits and ``_``; what rules name in ``sensitive_information.type``."""
    pattern: str = Field(min_length=1, max_length=1000)
    """A Python regular expression (the whole match is the value; use ``(?i)`` for any case)."""
    keywords: list[str] = Field(default_factory=list)
    """Supporting words or phrases (whole words, any case) within ``proximity`` characters of a match."""
    proximity: int | None = Field(None, ge=1, le=5000)
    """The keyword window in characters either side (default: ``dlp.proximity``)."""
    checksum: Literal["none", "luhn", "mod97"] = "none"
    """A check the matched value must pass: ``luhn`` (its digits), ``mod97`` (ISO 7064, as IBANs), or ``none``."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TYPE_NAME.fullmatch(value):
            raise ValueError(f"{value!r}: a type name is lower-case letters, digits and _, starting with a letter")
        if value in BUILTIN_TYPES:
            raise ValueError(f"{value!r} is a built-in type")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regex {value!r}: {exc}") from None
        if compiled.fullmatch(""):
            raise ValueError(f"{value!r} matches the empty string")
        return value

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            word = " ".join(item.split())
            if not word or len(word) > 100:
                raise ValueError(f"{item!r}: a keyword is 1 to 100 characters")
            if word.lower() not in (w.lower() for w in out):
                out.append(word)
        return out

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    @property
    def confidence_without_keyword(self) -> Confidence:
        """``medium`` when a checksum holds, else ``low`` (a pattern alone)."""
        return "low" if self.checksum == "none" else "medium"


class DlpLimits(_Strict):
    """Bounds on the work one message can cause, so a hostile attachment cannot stall the stage; what
    is left out is named in the verdict's notes."""

    max_part_size: int = Field(10_485_760, ge=1024)
    """Decoded bytes of one part (or archive member) opened for text; larger ones are skipped."""
    max_parts: int = Field(200, ge=1)
    """Parts and archive members looked at in one message."""
    max_text: int = Field(2_000_000, ge=1000)
    """Characters of text scanned in one message."""
    max_seconds: float = Field(10.0, gt=0, le=300)
    """CPU seconds for extraction and detection of one message (the scanning thread's own, so a busy
    machine does not cut a scan short); what is not reached by then is skipped."""
    pdf_max_pages: int = Field(100, ge=1)
    """Pages of one PDF whose text is read."""


class Dlp(_Strict):
    """Data loss prevention: which sensitive information the stage looks for (rules act on its verdict)."""

    types: list[BuiltinType] = Field(default_factory=lambda: list(BUILTIN_TYPES))
    """Built-in types looked for: ``credit_card``, ``iban``, ``us_ssn``."""
    custom_types: list[CustomType] = Field(default_factory=list)
    proximity: int = Field(300, ge=1, le=5000)
    """The keyword window of the built-in types, in characters either side of a match."""
    min_confidence: Confidence = "low"
    """Matches below this confidence are not recorded in the verdict."""
    evidence_digits: int = Field(4, ge=0, le=4)
    """Last digits of a match shown in the verdict and trace (0: none; never more than 4)."""
    attachments: bool = True
    """Read the text of attachments (PDF, DOCX, XLSX, text, and text inside archives)."""
    limits: DlpLimits = Field(default_factory=DlpLimits)

    @field_validator("types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a type is listed twice")
        return value

    @model_validator(mode="after")
    def _unique(self) -> Dlp:
        names = [c.name for c in self.custom_types]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"custom types share the name {', '.join(dupes)}")
        return self

    def type_names(self) -> list[str]:
        """Every type looked for: the built-in ones on, then the custom ones."""
        return [*self.types, *(c.name for c in self.custom_types)]

    def check_policy(self, policy: Policy) -> None:
        """Every type a mail-flow rule's ``sensitive_information`` (condition or exception) names is one
        this section looks for: a built-in type in ``dlp.types`` or a custom type of ``dlp.custom_types``."""
        known = self.type_names()
        for index, rule in enumerate(policy.rules):
            for part in ("conditions", "exceptions"):
                added = getattr(rule, part).stage_conditions().get(RULE_CONDITION)
                for entry, condition in enumerate(added[1] if added is not None else []):
                    if condition.type not in known:
                        raise ValueError(f"rules.{index}.{part}.{RULE_CONDITION}.{entry}.type: "
                                         f"{self._unknown(condition.type)}")

    def _unknown(self, name: str) -> str:
        """Why a rule may not name the type ``name``."""
        if name in BUILTIN_TYPES:
            why = f"the built-in type {name!r} is not in dlp.types ({', '.join(self.types) or 'empty'})"
        else:
            custom = ", ".join(c.name for c in self.custom_types) or "none"
            why = (f"{name!r} is neither a built-in type ({', '.join(BUILTIN_TYPES)}) nor a custom type of "
                   f"dlp.custom_types ({custom})")
        return f"{why}, so this could never match"


__all__ = ["BUILTIN_TYPES", "BuiltinType", "CustomType", "Dlp", "DlpLimits"]
