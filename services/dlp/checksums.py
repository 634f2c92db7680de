"""Check digits of sensitive numbers (pure): Luhn (payment cards) and ISO 7064 mod 97-10 (IBAN).

``CHECKSUMS`` names them for custom types (``dlp.custom_types[].checksum``); ``none`` accepts anything.
"""

from __future__ import annotations

from collections.abc import Callable


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a string of digits (at least two) holds."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def luhn_digit(payload: str) -> str:
    """The check digit that makes ``payload + digit`` pass the Luhn check."""
    for digit in "0123456789":
        if luhn_valid(payload + digit):
            return digit
    raise ValueError(f"{payload!r} is not a string of digits")


def mod97(text: str) -> int:
    """ISO 7064 mod 97-10 of an IBAN-like string, its first four characters moved to the end and
    letters counted as 10..35; an IBAN is valid when this is 1."""
    rearranged = text[4:] + text[:4]
    remainder = 0
    for char in rearranged.upper():
        if char.isascii() and char.isdigit():
            remainder = (remainder * 10 + ord(char) - 48) % 97
        elif "A" <= char <= "Z":
            remainder = (remainder * 100 + ord(char) - 55) % 97
        else:
            return -1
    return remainder


def mod97_valid(text: str) -> bool:
    return len(text) >= 5 and mod97(text) == 1


def _any(_: str) -> bool:
    return True


def _alnum(text: str) -> str:
    return "".join(c for c in text if c.isascii() and c.isalnum())


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isascii() and c.isdigit())


CHECKSUMS: dict[str, Callable[[str], bool]] = {
    "none": _any,
    "luhn": lambda text: luhn_valid(_digits(text)),
    "mod97": lambda text: mod97_valid(_alnum(text)),
}
"""Checks a custom type may name; each takes the matched text (separators are dropped first)."""


__all__ = ["CHECKSUMS", "luhn_digit", "luhn_valid", "mod97", "mod97_valid"]
