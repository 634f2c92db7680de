"""International bank account numbers (pure, ISO 13616): a country code with the country's IBAN length,
two check digits and the BBAN, in electronic form or in print form (groups separated by single spaces),
passing the mod 97-10 check.

Confidence: a valid IBAN alone is ``medium``; with a banking keyword (``KEYWORDS``) within the
proximity window, ``high``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailmoat_dlp.checksums import mod97_valid
from mailmoat_dlp.keywords import KeywordIndex
from mailmoat_dlp.matches import Match

TYPE = "iban"
START = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}")

LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
"""IBAN length per country (SWIFT's IBAN registry)."""

KEYWORDS = (
    "iban", "bank account", "account number", "account no", "acct", "bic", "swift", "wire transfer",
    "bank transfer", "international bank account", "beneficiary", "bankverbindung", "kontonummer",
    "überweisung", "rib", "relevé d'identité bancaire", "compte bancaire", "numéro de compte",
    "cuenta bancaria", "conto corrente", "rekeningnummer",
)


def _alnum(char: str) -> bool:
    return char.isascii() and (char.isdigit() or "A" <= char <= "Z")


def _extent(text: str, start: int, length: int) -> int | None:
    """Where an IBAN of ``length`` characters starting at ``start`` ends (single spaces between
    characters allowed), or None when the text has fewer, or more, characters in a row."""
    count, position = 0, start
    while count < length and position < len(text):
        char = text[position]
        if _alnum(char):
            count += 1
            position += 1
        elif char == " " and count >= 4 and position + 1 < len(text) and _alnum(text[position + 1]):
            position += 1
        else:
            break
    if count != length or (position < len(text) and text[position].isalnum()):
        return None
    return position


def valid(compact: str) -> bool:
    """An IBAN without spaces: a known country, its length, the mod 97-10 check."""
    return LENGTHS.get(compact[:2]) == len(compact) and compact[2:4].isdigit() and mod97_valid(compact)


def find(text: str, window: int, keywords: KeywordIndex | None = None) -> Iterator[Match]:
    """The valid IBANs in ``text``."""
    index = keywords if keywords is not None else KeywordIndex(text, KEYWORDS)
    for candidate in START.finditer(text):
        country = candidate.group()[:2]
        length = LENGTHS.get(country)
        if length is None:
            continue
        start = candidate.start()
        end = _extent(text, start, length)
        if end is None:
            continue
        compact = text[start:end].replace(" ", "")
        if not valid(compact):
            continue
        confidence = "high" if index.near(start, end, window) else "medium"
        yield Match(TYPE, start, end, compact, confidence, country)


__all__ = ["KEYWORDS", "LENGTHS", "TYPE", "find", "valid"]
