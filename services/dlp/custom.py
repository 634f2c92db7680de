"""Custom sensitive information types from the policy (pure): a regular expression, an optional checksum
and keywords within a proximity window.

Confidence: a match with a keyword near is ``high``; without, ``medium`` when a checksum holds and
``low`` for the pattern alone. A match failing its checksum is no match.
"""

from __future__ import annotations

from collections.abc import Iterator

from mailmoat_dlp.checksums import CHECKSUMS
from mailmoat_dlp.keywords import KeywordIndex
from mailmoat_dlp.matches import Match
from mailmoat_dlp.policy import CustomType


def find(text: str, spec: CustomType, window: int) -> Iterator[Match]:
    """The matches of a custom type in ``text``."""
    check = CHECKSUMS[spec.checksum]
    index = KeywordIndex(text, spec.keywords)
    proximity = spec.proximity or window
    for found in spec.regex.finditer(text):
        value = found.group()
        if not value or not check(value):
            continue
        start, end = found.span()
        confidence = "high" if index.near(start, end, proximity) else spec.confidence_without_keyword
        yield Match(spec.name, start, end, "".join(value.split()), confidence)


__all__ = ["find"]
