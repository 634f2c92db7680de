"""Sensitive information in texts (pure): the built-in types a policy turns on and its custom types,
found in each text and tallied per type over the whole message.

Built-in matches do not overlap: an IBAN's digits are not also read as a card number or SSN (IBANs
first, then cards, then SSNs). A type counts distinct values: the same card number quoted twice in a
thread is one instance, at the highest confidence it was found with.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from mailmoat_dlp import cards, custom, iban, ssn
from mailmoat_dlp.confidence import LEVELS, Confidence, at_least, rank
from mailmoat_dlp.matches import Match
from mailmoat_dlp.policy import Dlp
from mailmoat_dlp.verdict import Evidence, TypeFinding

BUILTIN: dict[str, Callable[[str, int], Iterator[Match]]] = {
    iban.TYPE: iban.find,
    cards.TYPE: cards.find,
    ssn.TYPE: ssn.find,
}
"""The built-in detectors in the order they claim text."""
MAX_EVIDENCE = 10
"""Instances of one type described in the verdict (the count covers them all)."""


class _Spans:
    """Non-overlapping spans claimed so far in one text."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def free(self, start: int, end: int) -> bool:
        index = bisect.bisect_left(self.starts, end)
        return index == 0 or self.ends[index - 1] <= start

    def claim(self, start: int, end: int) -> None:
        index = bisect.bisect_left(self.starts, start)
        self.starts.insert(index, start)
        self.ends.insert(index, end)


def find_all(text: str, settings: Dlp) -> list[Match]:
    """Every match in one text at or above ``settings.min_confidence``."""
    out: list[Match] = []
    spans = _Spans()
    for name, find in BUILTIN.items():
        if name not in settings.types:
            continue
        for match in find(text, settings.proximity):
            if spans.free(match.start, match.end):
                spans.claim(match.start, match.end)
                out.append(match)
    for spec in settings.custom_types:
        out.extend(custom.find(text, spec, settings.proximity))
    return [m for m in out if at_least(m.confidence, settings.min_confidence)]


@dataclass
class _Instance:
    confidence: Confidence
    part: str
    match: Match


@dataclass
class Tally:
    """Distinct values per type over a message, each at the highest confidence seen."""

    evidence_digits: int = 4
    found: dict[str, dict[str, _Instance]] = field(default_factory=dict)

    def add(self, matches: Iterable[Match], part: str) -> None:
        for match in matches:
            values = self.found.setdefault(match.type, {})
            seen = values.get(match.value)
            if seen is None or rank(match.confidence) > rank(seen.confidence):
                values[match.value] = _Instance(match.confidence, part, match)

    def findings(self, order: Iterable[str]) -> list[TypeFinding]:
        """One finding per type found, in ``order`` (the policy's order of types)."""
        out = []
        for name in order:
            values = self.found.get(name)
            if not values:
                continue
            instances = sorted(values.values(), key=lambda i: -rank(i.confidence))
            counts = {level: sum(1 for i in instances if i.confidence == level) for level in LEVELS}
            out.append(TypeFinding(
                type=name, count=len(instances), confidence=instances[0].confidence,
                counts={k: v for k, v in counts.items() if v},
                evidence=[Evidence(confidence=i.confidence, part=i.part, last4=i.match.tail(self.evidence_digits),
                                   label=i.match.label) for i in instances[:MAX_EVIDENCE]],
            ))
        return out


__all__ = ["BUILTIN", "MAX_EVIDENCE", "Tally", "find_all"]
