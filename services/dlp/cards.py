"""Payment card numbers (pure): 13 to 19 digits, whole or in groups separated by spaces or dashes
(one kind of separator per number), passing the Luhn check and inside an issuer's range and lengths.

Confidence: a valid number alone is ``medium``; with a card keyword (``KEYWORDS``) within the proximity
window, ``high``. Numbers failing the Luhn check or outside every issuer range are not matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailmoat_dlp.checksums import luhn_valid
from mailmoat_dlp.keywords import KeywordIndex
from mailmoat_dlp.matches import Match

TYPE = "credit_card"
CANDIDATE = re.compile(r"(?<![\w+./,-])\d(?:[ -]?\d){12,18}(?![\w/-]|[.,]\d)")
_SEPARATORS = re.compile(r"[ -]")

KEYWORDS = (
    "credit card", "card number", "card no", "card num", "card #", "cc#", "ccn", "cc number", "debit card",
    "payment card", "visa", "mastercard", "master card", "amex", "american express", "discover", "jcb",
    "diners club", "unionpay", "union pay", "expiry", "expiration", "exp date", "valid thru", "valid through",
    "cvv", "cvv2", "cvc", "cvc2", "security code", "cardholder", "card holder", "kreditkarte", "kartennummer",
    "carte bancaire", "carte de crédit", "numéro de carte", "tarjeta de crédito", "número de tarjeta",
)

# (issuer, first digits from, to (inclusive, same length), card lengths)
ISSUERS: tuple[tuple[str, int, int, frozenset[int]], ...] = (
    ("amex", 34, 34, frozenset({15})),
    ("amex", 37, 37, frozenset({15})),
    ("visa", 4, 4, frozenset({13, 16, 19})),
    ("mastercard", 51, 55, frozenset({16})),
    ("mastercard", 2221, 2720, frozenset({16})),
    ("discover", 6011, 6011, frozenset(range(16, 20))),
    ("discover", 644, 649, frozenset(range(16, 20))),
    ("discover", 65, 65, frozenset(range(16, 20))),
    ("jcb", 3528, 3589, frozenset(range(16, 20))),
    ("diners", 300, 305, frozenset(range(14, 20))),
    ("diners", 3095, 3095, frozenset(range(14, 20))),
    ("diners", 36, 36, frozenset(range(14, 20))),
    ("diners", 38, 39, frozenset(range(16, 20))),
    ("unionpay", 62, 62, frozenset(range(16, 20))),
)


def issuer(digits: str) -> str | None:
    """The issuer whose range and lengths the number falls in, or None."""
    for name, low, high, lengths in ISSUERS:
        width = len(str(low))
        if len(digits) in lengths and low <= int(digits[:width]) <= high:
            return name
    return None


def _grouped(raw: str) -> bool:
    """Digits whole, or in groups of 3 to 6 after a first group of 4, one separator throughout."""
    separators = set(_SEPARATORS.findall(raw))
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = _SEPARATORS.split(raw)
    return len(groups[0]) == 4 and all(3 <= len(g) <= 6 for g in groups[1:])


def valid(digits: str) -> str | None:
    """The issuer of a valid card number (Luhn and issuer range), or None."""
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return None
    return issuer(digits)


def find(text: str, window: int, keywords: KeywordIndex | None = None) -> Iterator[Match]:
    """The valid card numbers in ``text``."""
    index = keywords if keywords is not None else KeywordIndex(text, KEYWORDS)
    for candidate in CANDIDATE.finditer(text):
        raw = candidate.group()
        if not _grouped(raw):
            continue
        digits = _SEPARATORS.sub("", raw)
        brand = valid(digits)
        if brand is None:
            continue
        start, end = candidate.span()
        confidence = "high" if index.near(start, end, window) else "medium"
        yield Match(TYPE, start, end, digits, confidence, brand)


__all__ = ["CANDIDATE", "ISSUERS", "KEYWORDS", "TYPE", "find", "issuer", "valid"]
