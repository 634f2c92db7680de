"""One message through extraction and detection (pure, the clock injected): the DLP verdict detail."""

from __future__ import annotations

import time
from collections.abc import Callable

from mailmoat_dlp.budget import Budget, OutOfTime
from mailmoat_dlp.detect import Tally, find_all
from mailmoat_dlp.extract import extract
from mailmoat_dlp.policy import Dlp
from mailmoat_dlp.verdict import DlpVerdict
from mailmoat_policy import ArchiveLimits


def scan(raw: bytes, settings: Dlp, archive_limits: ArchiveLimits,
         clock: Callable[[], float] = time.monotonic) -> DlpVerdict:
    """The sensitive information types in a message, within ``settings.limits`` (what was left out is
    in the verdict's notes)."""
    budget = Budget(settings.limits, clock)
    tally = Tally(settings.evidence_digits)
    try:
        for item in extract(raw, settings, archive_limits, budget):
            tally.add(find_all(item.text, settings), item.part)
            budget.check_time()
    except OutOfTime as exc:
        budget.note(str(exc))
    return DlpVerdict(findings=tally.findings(settings.type_names()), scanned=budget.parts, notes=budget.all_notes())


def result_of(detail: DlpVerdict) -> str:
    """The verdict's result word: ``found`` or ``none``."""
    return "found" if detail.findings else "none"


__all__ = ["result_of", "scan"]
