"""Actions of a mail-flow rule (``rules[].actions``)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from mailmoat_policy.base import StrictModel, header_name, one_line, rule_values

_ENHANCED_CODE = re.compile(r"^5\.7\.(?:1|9\d\d)$")


class RejectAction(StrictModel):
    text: str = "Delivery not authorized, message refused"
    """The explanation the NDR (and the trace) gives."""
    code: str = "5.7.1"
    """Enhanced status code: ``5.7.1``, or a custom one from ``5.7.900`` to ``5.7.999``."""

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return one_line(value, "the explanation", 400)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not _ENHANCED_CODE.match(value.strip()):
            raise ValueError(f"{value!r}: the code must be 5.7.1 or from 5.7.900 to 5.7.999")
        return value.strip()


class Disclaimer(StrictModel):
    text: str = Field(min_length=1)
    """Appended to plain-text parts (after a blank line)."""
    html: str | None = None
    """Appended to HTML parts (before ``</body>``); default: ``text``, HTML-escaped, in a paragraph."""


class NotifySender(StrictModel):
    """``notify_sender``: the envelope sender is told, in a message from the postmaster, that the rule matched."""

    text: str
    """What the notification says besides the rule's name (one line, at most 400 characters)."""

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the text is empty")
        return one_line(value, "the text", 400)


class RuleActions(StrictModel):
    """What a rule does, each named by its field."""

    reject: RejectAction | None = None
    delete: bool = False
    quarantine: bool = False
    redirect_to: list[str] | None = None
    add_recipients: list[str] | None = None
    set_header: dict[str, str] | None = None
    remove_header: list[str] | None = None
    prepend_subject: str | None = None
    set_scl: int | None = Field(None, ge=-1, le=9)
    route_to_connector: str | None = None
    require_tls: bool = False
    append_disclaimer: Disclaimer | None = None
    bypass_spam_filtering: bool = False
    notify_sender: NotifySender | None = None
    """Tell the sender (not the null sender); the message goes on as the other actions say."""

    @field_validator("redirect_to", "add_recipients")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = rule_values(value, "address")
        for item in out:
            if item.count("@") != 1 or item.startswith("@") or item.endswith("@") or any(c in item for c in " <>,"):
                raise ValueError(f"{item!r} is not an address")
        return out

    @field_validator("set_header")
    @classmethod
    def _set_header(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one header")
        return {header_name(k, writable=True): one_line(str(v), f"the value of {k}", 900) for k, v in value.items()}

    @field_validator("remove_header")
    @classmethod
    def _remove_header(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one header")
        return [header_name(v, writable=True) for v in value]

    @field_validator("prepend_subject")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("the prefix is empty")
        return one_line(value, "the prefix", 200)

    @model_validator(mode="after")
    def _sensible(self) -> RuleActions:
        if not self.names():
            raise ValueError("a rule needs at least one action")
        final = [n for n in ("reject", "delete", "quarantine") if n in self.names()]
        if len(final) > 1:
            raise ValueError(f"{' and '.join(final)}: a rule can end a message in one way only")
        return self

    def names(self) -> list[str]:
        """The actions that are set, in field order."""
        return [name for name in type(self).model_fields if getattr(self, name) not in (None, False)]
