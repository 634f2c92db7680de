"""Confidence levels of a sensitive information match: ``low`` < ``medium`` < ``high``."""

from __future__ import annotations

from typing import Literal

Confidence = Literal["low", "medium", "high"]
LEVELS: tuple[Confidence, ...] = ("low", "medium", "high")


def rank(level: Confidence) -> int:
    """0 for ``low``, 1 for ``medium``, 2 for ``high``."""
    return LEVELS.index(level)


def at_least(level: Confidence, floor: Confidence) -> bool:
    return rank(level) >= rank(floor)


def highest(levels: list[Confidence]) -> Confidence:
    return max(levels, key=rank)


__all__ = ["LEVELS", "Confidence", "at_least", "highest", "rank"]
