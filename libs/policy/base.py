"""What the sections share: the strict base model, and validators of list entries, header names,
regular expressions and one-line texts."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A policy section: an unknown key is an error, never ignored."""

    model_config = ConfigDict(extra="forbid")


_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_PROTECTED_HEADERS = ("x-mailmoat-", "received", "content-", "mime-version")


def rule_values(value: list[str], what: str) -> list[str]:
    """Entries stripped and lower-cased, duplicates dropped; an empty entry or list is an error."""
    out = []
    for item in value:
        text = str(item).strip().lower()
        if not text:
            raise ValueError(f"an empty {what}")
        if text not in out:
            out.append(text)
    if not out:
        raise ValueError("must list at least one value")
    return out


def header_name(name: str, *, writable: bool) -> str:
    """A header field name; ``writable``: not one rules may not set or remove."""
    name = str(name).strip()
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a header field name")
    if writable and name.lower().startswith(_PROTECTED_HEADERS):
        raise ValueError(f"{name!r}: rules may not set or remove Received, Content-*, MIME-Version or X-Mailmoat-*")
    return name


def regexes(value: list[str]) -> list[str]:
    """At least one pattern, each a valid Python regular expression."""
    if not value:
        raise ValueError("must list at least one pattern")
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {pattern!r}: {exc}") from None
    return value


def one_line(text: str, what: str, limit: int) -> str:
    """``text`` when it is one line of at most ``limit`` characters."""
    if "\r" in text or "\n" in text or len(text) > limit:
        raise ValueError(f"{what} must be one line of at most {limit} characters")
    return text
