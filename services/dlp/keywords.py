"""Supporting keywords near a match (pure): a keyword dictionary found in a text once, then asked
whether any keyword lies within a proximity window (in characters) of a match."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=256)
def _pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    words = sorted({" ".join(k.split()) for k in keywords if k.strip()}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(re.escape(part) for part in word.split()) for word in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class KeywordIndex:
    """Where the keywords of a dictionary occur in one text (whole words, case-insensitive; any run of
    white space between the words of a phrase)."""

    def __init__(self, text: str, keywords: Iterable[str]):
        pattern = _pattern(tuple(keywords))
        spans = [m.span() for m in pattern.finditer(text)] if pattern is not None else []
        self._starts = [s for s, _ in spans]
        self._ends = [e for _, e in spans]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def near(self, start: int, end: int, window: int) -> bool:
        """A keyword ends at most ``window`` characters before ``start`` or starts at most ``window``
        characters after ``end``."""
        if not self._starts:
            return False
        index = bisect.bisect_left(self._starts, start - window - 200)  # keywords are far shorter than 200
        for position in range(index, len(self._starts)):
            kw_start, kw_end = self._starts[position], self._ends[position]
            if kw_start > end + window:
                return False
            if kw_end >= start - window:
                return True
        return False


__all__ = ["KeywordIndex"]
