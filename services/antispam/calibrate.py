"""The classifier tuned on the organisation's own labelled mail: what it misjudges learned once more, and
its spam cutoff calibrated.

- **Reinforcement** (train on error, as SpamBayes' and DSPAM's training regimes): each labelled message
  is scored by counts learned without it (``folds`` folds by body), and the ones on the wrong side of
  0.5 are learned a second time (``misjudged``, ``learned``).
- **Calibration**: the Fisher-combined probability is a ranking, not a calibrated probability, so which
  cutoff keeps the ham flagged under a given rate depends on the mail learned. ``calibrate`` learns all
  folds but one (reinforced as above, within those folds alone) and scores that one, pools these
  out-of-fold probabilities and takes the lowest cutoff at which at most ``ham_rate`` percent of the ham
  is flagged.

Folds are drawn by a digest of the normalised body, so copies of one text always share a fold and no text
is both learned and scored. ``CalibrationStore`` keeps the cutoff beside the token counts
(``<prefix>:calibration``, a hash); the classifier uses it unless the policy sets
``antispam.bayes.spam_cutoff`` itself.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from mailmoat_antispam.bayes import spam_probability
from mailmoat_antispam.content import split_header

FOLDS = 3
HAM_RATE = 0.3
"""Percent of the ham the classifier may flag out of fold (the goal of docs/policy.md: at most 0.3 %)."""
LOWEST = 0.05
"""A cutoff is never below this, however clean the ham learned."""
MIN_PER_CLASS = 50
"""Messages of each class needed to calibrate (fewer give a cutoff that says nothing)."""


def body_key(data: bytes) -> str:
    """Digest of the normalised body (lower case, whitespace collapsed): equal bodies share it."""
    _, body = split_header(data)
    return hashlib.sha256(re.sub(rb"\s+", b" ", body.lower()).strip()).hexdigest()


def fold_of(key: str, folds: int, level: int = 0) -> int:
    """The fold of a body digest; ``level`` 1 reads other digits, for folds drawn within a fold."""
    return int(key[12 * level:12 * level + 12], 16) % folds


@dataclass(frozen=True)
class Labelled:
    tokens: Sequence[str]
    spam: bool
    body: str
    """``body_key`` of the message."""


@dataclass
class Counts:
    """Token counts in memory, as ``BayesStore`` keeps them in Redis (messages of a class holding a token)."""

    spam: Counter = field(default_factory=Counter)
    ham: Counter = field(default_factory=Counter)
    nspam: int = 0
    nham: int = 0

    def add(self, toks: Sequence[str], is_spam: bool) -> None:
        if is_spam:
            self.spam.update(toks)
            self.nspam += 1
        else:
            self.ham.update(toks)
            self.nham += 1

    def probability(self, toks: Sequence[str]) -> float:
        return spam_probability(((self.spam.get(t, 0), self.ham.get(t, 0)) for t in toks), self.nspam, self.nham)


@dataclass(frozen=True)
class Calibration:
    cutoff: float
    ham_rate: float
    """The rate asked for (percent of ham)."""
    spam_caught: float
    """Percent of the spam at or over the cutoff, out of fold."""
    ham_flagged: float
    """Percent of the ham at or over the cutoff, out of fold."""
    nspam: int
    nham: int
    folds: int
    at: float = 0.0
    """When it was made (Unix time)."""
    reinforced: bool = False
    """Whether the classifier calibrated is the reinforced one (``learned``), which then is the one to ship."""


def out_of_fold(messages: Sequence[Labelled], folds: int = FOLDS, reinforce: bool = False, level: int = 0
                ) -> list[float]:
    """Each message's spam probability from counts learned on the other folds (in ``messages``' order),
    those counts ``reinforce``d within the other folds alone when asked."""
    probabilities = [0.5] * len(messages)
    for k in range(folds):
        counts = learned([m for m in messages if fold_of(m.body, folds, level) != k], reinforce, folds)
        for i, m in enumerate(messages):
            if fold_of(m.body, folds, level) == k:
                probabilities[i] = counts.probability(m.tokens)
    return probabilities


def misjudged(messages: Sequence[Labelled], folds: int = FOLDS) -> list[int]:
    """Indexes of the messages that counts learned without them (``folds`` folds by body) put on the wrong
    side of 0.5."""
    probabilities = out_of_fold(messages, folds, level=1)
    return [i for i, (m, p) in enumerate(zip(messages, probabilities, strict=True)) if (p < 0.5 if m.spam else p > 0.5)]


def learned(messages: Sequence[Labelled], reinforce: bool = True, folds: int = FOLDS) -> Counts:
    """The counts of ``messages``, and with ``reinforce`` the ``misjudged`` ones counted twice."""
    counts = Counts()
    for m in messages:
        counts.add(m.tokens, m.spam)
    if reinforce:
        for i in misjudged(messages, folds):
            counts.add(messages[i].tokens, messages[i].spam)
    return counts


def choose(probabilities: Sequence[float], spam: Sequence[bool], ham_rate: float) -> tuple[float, float, float]:
    """(cutoff, spam caught %, ham flagged %): the lowest cutoff (not under ``LOWEST``) that flags at most
    ``ham_rate`` percent of the ham, just above the ham probability that would pass the rate."""
    hams = sorted((p for p, s in zip(probabilities, spam, strict=True) if not s), reverse=True)
    spams = [p for p, s in zip(probabilities, spam, strict=True) if s]
    allowed = math.floor(ham_rate / 100 * len(hams) + 1e-9)
    cutoff = LOWEST if allowed >= len(hams) else max(LOWEST, min(1.0, math.nextafter(hams[allowed], 2.0)))
    caught = 100 * sum(p >= cutoff for p in spams) / max(len(spams), 1)
    flagged = 100 * sum(p >= cutoff for p in hams) / max(len(hams), 1)
    return cutoff, caught, flagged


def calibrate(messages: Sequence[Labelled], ham_rate: float = HAM_RATE, folds: int = FOLDS,
              reinforce: bool | None = None) -> Calibration:
    """The cutoff for ``ham_rate`` by ``folds``-fold cross-validation grouped by body, of the classifier as
    ``learned`` with or without reinforcement; ``reinforce`` None: both are cross-validated and the one
    that catches more spam out of fold at ``ham_rate`` is kept (plain on a tie). ``ValueError`` with fewer
    than ``MIN_PER_CLASS`` messages of a class."""
    nspam = sum(m.spam for m in messages)
    nham = len(messages) - nspam
    if min(nspam, nham) < MIN_PER_CLASS:
        raise ValueError(f"calibration needs {MIN_PER_CLASS} spam and {MIN_PER_CLASS} ham (got {nspam} and {nham})")
    labels = [m.spam for m in messages]
    best: Calibration | None = None
    for variant in ((False, True) if reinforce is None else (reinforce,)):
        cutoff, caught, flagged = choose(out_of_fold(messages, folds, variant), labels, ham_rate)
        if best is None or caught > best.spam_caught:
            best = Calibration(cutoff, ham_rate, round(caught, 2), round(flagged, 2), nspam, nham, folds,
                               time.time(), variant)
    assert best is not None
    return best


class CalibrationStore:
    """``<prefix>:calibration`` in Redis (``redisclient.Redis``): the hash ``BayesStore.classify`` reads."""

    def __init__(self, redis, prefix: str = "mailmoat:bayes"):
        self.redis = redis
        self.key = f"{prefix}:calibration"

    async def save(self, calibration: Calibration) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, mapping={k: repr(v) for k, v in asdict(calibration).items()})
            await pipe.execute()

    async def load(self) -> Calibration | None:
        raw = await self.redis.hgetall(self.key)
        if not raw:
            return None
        values = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                  for k, v in raw.items()}
        return Calibration(float(values["cutoff"]), float(values["ham_rate"]), float(values["spam_caught"]),
                           float(values["ham_flagged"]), int(values["nspam"]), int(values["nham"]),
                           int(values["folds"]), float(values.get("at", 0)), values.get("reinforced") == "True")

    async def clear(self) -> bool:
        return bool(await self.redis.delete(self.key))
