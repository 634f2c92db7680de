"""The work one message may cause (pure, the clock injected): time, parts looked at, characters of
text kept. Extraction asks before each step; what it had to leave out becomes a note of the verdict."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailmoat_dlp.policy import DlpLimits

_DIGIT_RUN = re.compile(r"\d[\d \-]{3,}\d")
NOTE_LIMIT = 20
"""Notes kept in a verdict (the count of the rest is added)."""


class OutOfTime(Exception):
    """The message's time for extraction and detection is used up."""


def redact(text: str, limit: int = 200) -> str:
    """A file name or error message fit for the verdict: runs of five or more digits (spaces, dashes between)
    replaced by ``#``, control characters dropped, at most ``limit`` characters."""
    masked = _DIGIT_RUN.sub(lambda m: "#" if sum(c.isdigit() for c in m.group()) >= 5 else m.group(), text)
    clean = "".join(c if c.isprintable() else " " for c in masked)
    return clean[:limit]


@dataclass
class Budget:
    limits: DlpLimits
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    parts: int = 0
    chars: int = 0
    notes: list[str] = field(default_factory=list)
    dropped_notes: int = 0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def expired(self) -> bool:
        return self.clock() - self.started > self.limits.max_seconds

    def check_time(self) -> None:
        if self.expired():
            raise OutOfTime(f"stopped after {self.limits.max_seconds:g} s (dlp.limits.max_seconds)")

    def take_part(self) -> bool:
        """Count one more part or archive member; False when ``max_parts`` are already looked at."""
        if self.parts >= self.limits.max_parts:
            return False
        self.parts += 1
        return True

    def take_text(self, text: str) -> str:
        """``text``, cut to what is left of ``max_text`` (noted when cut)."""
        room = self.limits.max_text - self.chars
        if len(text) > room:
            self.note(f"text beyond {self.limits.max_text} characters not scanned (dlp.limits.max_text)")
            text = text[: max(room, 0)]
        self.chars += len(text)
        return text

    def text_left(self) -> bool:
        return self.chars < self.limits.max_text

    def note(self, text: str) -> None:
        """Record what was left out (redacted; repeated notes once)."""
        line = redact(text)
        if line in self.notes:
            return
        if len(self.notes) >= NOTE_LIMIT:
            self.dropped_notes += 1
            return
        self.notes.append(line)

    def all_notes(self) -> list[str]:
        extra = [f"{self.dropped_notes} more notes left out"] if self.dropped_notes else []
        return [*self.notes, *extra]


__all__ = ["NOTE_LIMIT", "Budget", "OutOfTime", "redact"]
