"""One match of a sensitive information type in a text (pure). Its value stays in the process: only
``Match.tail`` (the last digits, at most four) ever goes into a verdict or the trace."""

from __future__ import annotations

from dataclasses import dataclass

from mailmoat_dlp.confidence import Confidence

TAIL_MIN_DIGITS = 8
"""A value shows its last digits only when it has at least this many (a short one would be all but given away)."""


@dataclass(frozen=True)
class Match:
    type: str
    start: int
    end: int
    value: str
    """The matched value without separators (compared to count distinct instances; never reported)."""
    confidence: Confidence
    label: str | None = None
    """The card's issuer, the IBAN's country: no part of the number."""

    def tail(self, digits: int = 4) -> str | None:
        """The last ``digits`` (at most 4) digits of the value, or None when it has fewer than eight."""
        numerals = [c for c in self.value if c.isascii() and c.isdigit()]
        if digits <= 0 or len(numerals) < TAIL_MIN_DIGITS:
            return None
        return "".join(numerals[-min(digits, 4):])


__all__ = ["TAIL_MIN_DIGITS", "Match"]
