"""Conditions and exceptions of a mail-flow rule (``rules[].conditions``, ``rules[].exceptions``)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from mailmoat_platform.stages import RuleCondition
from mailmoat_policy import registry
from mailmoat_policy.base import StrictModel, header_name, regexes, rule_values
from mailmoat_policy.networks import IpSet, parse_networks

RULE_VERDICTS = (
    "malware", "archive-bomb", "blocked-type", "encrypted", "unscannable",
    "hcphish", "phish", "hcspam", "spoof", "spam", "bulk", "dmarc_reject", "dmarc_quarantine",
    "ip_allow", "dnsbl", "ip_block",
)
"""Names the ``verdict`` rule condition knows (see docs/policy.md, ``rules``)."""


class _HeaderCondition(StrictModel):
    header: str
    """Header field name (case-insensitive); every field of that name is looked at."""

    @field_validator("header")
    @classmethod
    def _name(cls, value: str) -> str:
        return header_name(value, writable=False)


class HeaderWords(_HeaderCondition):
    words: list[str]
    """Words or phrases, any of which matches (whole words, case-insensitive)."""

    @field_validator("words")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        return rule_values(value, "word")


class HeaderPatterns(_HeaderCondition):
    patterns: list[str]
    """Regular expressions (Python syntax, case-insensitive), any of which matches."""


class RuleConditions(StrictModel):
    """Predicates of a rule, each named by its field; all set ones must match (any value within one)."""

    sender_address: list[str] | None = None
    sender_domain: list[str] | None = None
    from_address: list[str] | None = None
    """The author (``From:``) as a mail client shows it, read by ``mailmoat_mail.author``."""
    from_domain: list[str] | None = None
    recipient_address: list[str] | None = None
    recipient_domain: list[str] | None = None
    sender_location: Literal["inside", "outside"] | None = None
    header_contains: HeaderWords | None = None
    header_matches: HeaderPatterns | None = None
    subject_contains: list[str] | None = None
    subject_matches: list[str] | None = None
    body_contains: list[str] | None = None
    subject_or_body_contains: list[str] | None = None
    attachment_name: list[str] | None = None
    attachment_extension: list[str] | None = None
    attachment_type: list[str] | None = None
    attachment_size_over: int | None = Field(None, ge=0)
    attachment_password_protected: bool | None = None
    message_size_over: int | None = Field(None, ge=0)
    sender_ip: list[str] | None = None
    scl_at_least: int | None = Field(None, ge=-1, le=9)
    bcl_at_least: int | None = Field(None, ge=0, le=9)
    verdict: list[str] | None = None
    impersonation: list[Literal["user", "domain", "address"]] | None = Field(None, min_length=1)
    """The antispam stage found impersonation of these kinds (``antispam.impersonation``)."""
    inbound_connector: list[str] | None = None
    _ips: IpSet = PrivateAttr(default_factory=IpSet)
    _stage: dict[str, tuple[RuleCondition, Any]] = PrivateAttr(default_factory=dict)

    @field_validator("sender_address", "recipient_address", "sender_domain", "recipient_domain",
                     "from_address", "from_domain", "attachment_name", "inbound_connector")
    @classmethod
    def _values(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else rule_values(value, "entry")

    @field_validator("subject_contains", "body_contains", "subject_or_body_contains")
    @classmethod
    def _words(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else rule_values(value, "word")

    @field_validator("subject_matches")
    @classmethod
    def _subject_regexes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else regexes(value)

    @field_validator("header_matches")
    @classmethod
    def _header_regexes(cls, value: HeaderPatterns | None) -> HeaderPatterns | None:
        if value is not None:
            regexes(value.patterns)
        return value

    @field_validator("attachment_extension", "attachment_type")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = [v.lstrip(".") for v in rule_values(value, "file type")]
        for item in out:
            if not re.fullmatch(r"[a-z0-9_-]{1,16}", item):
                raise ValueError(f"{item!r} is not a file type or extension such as exe")
        return out

    @field_validator("sender_ip", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str] | None:
        if value is None:
            return None
        out = parse_networks(value)
        if not out:
            raise ValueError("must list at least one address or network")
        return out

    @field_validator("verdict")
    @classmethod
    def _verdicts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = rule_values(value, "verdict")
        for item in out:
            if item not in RULE_VERDICTS:
                raise ValueError(f"unknown verdict {item!r} (known: {', '.join(RULE_VERDICTS)})")
        return out

    @model_validator(mode="after")
    def _ipset(self) -> RuleConditions:
        self._ips = IpSet.of(self.sender_ip or [])
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _with_stage_conditions(cls, data: Any, handler: Any) -> RuleConditions:
        """Keys that are not fields are the conditions registry stages add (``rule_conditions``), each
        validated by its ``RuleCondition.value`` type; any other key is an error naming the known ones."""
        fields = cls.model_fields
        if not isinstance(data, dict) or all(key in fields for key in data):
            return handler(data)
        added = registry.stage_conditions(fields)
        given = {key: value for key, value in data.items() if key not in fields}
        errors = [
            InitErrorDetails(
                type=PydanticCustomError("unknown_condition", f"unknown condition {key!r} (known: "
                                         f"{', '.join([*fields, *added])})"),
                loc=(key,), input=value)
            for key, value in given.items() if key not in added
        ]
        values, value_errors = registry.validated(given, {name: added[name].value for name in given if name in added})
        errors += value_errors
        try:
            conditions = handler({key: value for key, value in data.items() if key in fields})
        except ValidationError as exc:
            if not errors:
                raise
            errors = [*registry.errors_under(exc), *errors]
        registry.raise_errors(cls.__name__, errors)
        conditions._stage = {name: (added[name], values[name]) for name in added if name in values}
        return conditions

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            stage = None if name.startswith("_") else self._stage.get(name)
            if stage is None:
                raise
            return stage[1]

    def names(self) -> list[str]:
        """The conditions that are set: the fields in their order, then those stages add."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None] + list(self._stage)

    def stage_conditions(self) -> dict[str, tuple[RuleCondition, Any]]:
        """The set conditions that registry stages add: name → (the stage's ``RuleCondition``, the value)."""
        return dict(self._stage)

    def sender_ips(self) -> IpSet:
        return self._ips
