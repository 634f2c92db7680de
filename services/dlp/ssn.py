"""US social security numbers (pure): ``AAA-GG-SSSS`` (dashes or spaces) or nine digits in a row, with
the ranges the SSA never issues excluded (area 000, 666 and 900-999, group 00, serial 0000) and
well-known published or sample numbers.

An SSN has no check digit, so confidence comes from the form and keywords: formatted with an SSN keyword
within the proximity window is ``high``, nine digits in a row with a keyword ``medium``, formatted
without a keyword ``low``; nine digits in a row without a keyword are not a match (order numbers,
phone numbers and the like look just the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailmoat_dlp.keywords import KeywordIndex
from mailmoat_dlp.matches import Match

TYPE = "us_ssn"
CANDIDATE = re.compile(r"(?<![\w+./-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w/-]|[.,]\d)")

KEYWORDS = (
    "ssn", "ssns", "ssn#", "ss#", "ssid", "social security", "social security number", "social security no",
    "soc sec", "ssa number", "taxpayer identification", "tin", "itin",
)

WELL_KNOWN = frozenset({
    "078051120",  # the Woolworth wallet card
    "219099999",  # an SSA advertisement
    "457555462",  # published in an advertisement
    "123456789", "987654321",
})


def valid(digits: str) -> bool:
    """Nine digits an SSN can have: not in a never-issued range, not well known, not one digit repeated."""
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return digits not in WELL_KNOWN and len(set(digits)) > 1


def find(text: str, window: int, keywords: KeywordIndex | None = None) -> Iterator[Match]:
    """The possible SSNs in ``text``."""
    index = keywords if keywords is not None else KeywordIndex(text, KEYWORDS)
    for candidate in CANDIDATE.finditer(text):
        area, separator, group, serial = candidate.groups()
        digits = area + group + serial
        if not valid(digits):
            continue
        start, end = candidate.span()
        near = index.near(start, end, window)
        if separator:
            confidence = "high" if near else "low"
        elif near:
            confidence = "medium"
        else:
            continue
        yield Match(TYPE, start, end, digits, confidence)


__all__ = ["CANDIDATE", "KEYWORDS", "TYPE", "WELL_KNOWN", "find", "valid"]
