"""Domain names and patterns (``example.com``, ``*.example.com``) as sections name them."""

from __future__ import annotations

import re

DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def domain_patterns(value: object, *, allow_special: bool) -> list[str]:
    """A list of domains and ``*.domain`` patterns, lower-cased, duplicates dropped; ``allow_special``:
    ``*`` and ``accepted`` too."""
    if not isinstance(value, list):
        raise ValueError("must be a list of domains")
    out = []
    for item in value:
        text = str(item).strip().lower().rstrip(".")
        if allow_special and text in ("*", "accepted"):
            pass
        else:
            name = text[2:] if text.startswith("*.") else text
            labels = name.split(".")
            if not name or not all(DNS_LABEL.match(label) for label in labels):
                raise ValueError(f"{item!r} is not a domain or *.domain pattern")
        if text not in out:
            out.append(text)
    return out


def domain_matches(domain: str, pattern: str) -> bool:
    """``domain`` against ``example.com`` (exact) or ``*.example.com`` (any subdomain of it)."""
    domain = domain.lower().rstrip(".")
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern
