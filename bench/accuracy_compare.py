"""mailmoat, SpamAssassin's spamd and Rspamd on the same splits of the SpamAssassin public corpus, offline.

The splits are ``make accuracy``'s (``mailmoat_antispam.accuracy``): ``collection`` (trained on the first
collection — easy_ham, hard_ham, spam — tested on easy_ham_2 and spam_2, less bodies seen in training) and
``cv0`` (fold 0 of the 5-fold cross-validation grouped by body). The test part may be sampled
(``--sample N``: every k-th message in checksum order, both classes alike); the training part never is.

- **mailmoat**: its whole content pipeline, the cutoff calibrated on the training part (and the fixed 0.90),
  as ``make accuracy``; flagged at SCL >= 5.
- **spamd** (Debian's SpamAssassin 4, ``tests/support/spamd.py``): stock rules, ``--local`` (no DNS block
  lists, Razor, Pyzor, DCC), ``dns_available no``, Bayes on (``use_bayes 1``, no auto-learn) and trained
  with ``sa-learn`` on the same training part; flagged at score >= 5 (``required_score``'s default).
- **rspamd** (Debian's Rspamd 3.4, ``tests/support/rspamd.py``): the packaged rules, one normal worker, no
  Redis (so no Bayes, neural, reputation, ratelimit or greylisting), the modules that need the network
  disabled (``DISABLED_MODULES``), and DNS answered by a loopback server that knows no names; flagged when
  its action is ``add header``, ``rewrite subject`` or ``reject`` (its add-header threshold, 6).

Needs root (the daemons run as their own users) and the Debian packages (``scripts/setup.sh --test``)::

    .venv/bin/python bench/accuracy_compare.py --split collection --sample 800 --out /tmp/compare.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailmoat_antispam.accuracy import (  # noqa: E402
    Sample,
    base_findings,
    collection_split,
    corpus,
    cv_splits,
    find_tarball,
    run_split,
    sender,
)
from mailmoat_antispam.bayes import tokens  # noqa: E402
from mailmoat_antispam.calibrate import HAM_RATE  # noqa: E402
from mailmoat_antispam.content import parse  # noqa: E402
from mailmoat_antispam.engines import spamd_check  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402
from tests.support.rspamd import RspamdServer  # noqa: E402
from tests.support.spamd import SpamdServer  # noqa: E402

SPAMD_CONFIG = """\
use_bayes 1
bayes_auto_learn 0
bayes_path {db}/bayes
bayes_file_mode 0777
skip_rbl_checks 1
dns_available no
"""
DISABLED_MODULES = ("rbl", "surbl", "emails", "asn", "fuzzy_check", "dcc", "phishing", "url_redirector",
                    "greylist", "ratelimit", "replies", "neural", "reputation", "history_redis", "clickhouse",
                    "elastic", "metadata_exporter", "external_services", "spamtrap", "p0f", "mx_check",
                    "rspamd_update", "aws_s3", "bimi")
"""Rspamd modules that ask the network (block lists, fuzzy hashes, feeds, MX checks) or Redis."""
FLAGGING_ACTIONS = {"add header", "rewrite subject", "reject"}


def sample_of(test: Sequence[Sample], size: int | None) -> list[Sample]:
    ordered = sorted(test, key=lambda s: s.checksum)
    if not size or size >= len(ordered):
        return ordered
    step = len(ordered) / size
    return [ordered[int(i * step)] for i in range(size)]


def split_of(samples: list[Sample], name: str) -> tuple[list[Sample], list[Sample]]:
    if name == "collection":
        train, test, _ = collection_split(samples)
        return train, test
    if name.startswith("cv"):
        return cv_splits(samples, 5)[int(name[2:])]
    raise SystemExit(f"unknown split {name}")


def flagged_ham_groups(test: Sequence[Sample], hits: Sequence[bool]) -> dict[str, int]:
    """Which sets the flagged ham came from (``hard-ham-1`` is commercial mail people asked for)."""
    out: dict[str, int] = {}
    for s, hit in zip(test, hits, strict=True):
        if hit and not s.spam:
            out[s.group] = out.get(s.group, 0) + 1
    return out


def rates(flags: list[tuple[bool, bool]]) -> dict:
    spam = [hit for is_spam, hit in flags if is_spam]
    ham = [hit for is_spam, hit in flags if not is_spam]
    return {"tested_spam": len(spam), "tested_ham": len(ham), "caught": sum(spam), "flagged": sum(ham),
            "spam_caught_pct": round(100 * sum(spam) / max(len(spam), 1), 2),
            "ham_flagged_pct": round(100 * sum(ham) / max(len(ham), 1), 2)}


async def bounded(jobs, limit: int):
    gate = asyncio.Semaphore(limit)

    async def one(job):
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


# --- spamd ----------------------------------------------------------------------------------------------

def write_messages(folder: Path, samples: Sequence[Sample], user: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user)
    for s in samples:
        path = folder / s.checksum
        path.write_bytes(s.data.replace(b"\r\n", b"\n"))
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chown(folder, entry.pw_uid, entry.pw_gid)


def run_spamd(train: Sequence[Sample], test: Sequence[Sample], workdir: Path, log) -> dict:
    server = SpamdServer(workdir / "spamd", ready_timeout=300)
    db = server.workdir / "bayes-db"
    server.own(db)
    (server.site / "local.cf").write_text(SPAMD_CONFIG.format(db=db))
    user = server.user or pwd.getpwuid(os.geteuid()).pw_name
    started = time.perf_counter()
    for label in ("spam", "ham"):
        folder = server.workdir / f"train-{label}"
        write_messages(folder, [s for s in train if s.spam == (label == "spam")], user)
        cmd = ["sa-learn", f"--siteconfigpath={server.site}", f"--{label}", "--no-sync", str(folder)]
        if server.user:
            cmd = ["runuser", "-u", server.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=3600, cwd=server.workdir)
    sync = ["sa-learn", f"--siteconfigpath={server.site}", "--sync"]
    subprocess.run(["runuser", "-u", server.user, "--", *sync] if server.user else sync, check=True,
                   capture_output=True, timeout=600, cwd=server.workdir)
    dump = ["sa-learn", f"--siteconfigpath={server.site}", "--dump", "magic"]
    magic = subprocess.run(["runuser", "-u", server.user, "--", *dump] if server.user else dump,
                           capture_output=True, text=True, timeout=120, cwd=server.workdir).stdout
    learned = time.perf_counter() - started
    log(f"  spamd: sa-learn {len(train)} messages in {learned:.0f}s")
    with server:
        started = time.perf_counter()

        async def go():
            answers = await bounded((spamd_check(server.address, s.data, 120) for s in test), 2)
            return answers

        answers = asyncio.run(go())
        scored = time.perf_counter() - started
    missing = sum(a is None for a in answers)
    flags = [(s.spam, a is not None and a.score >= 5.0) for s, a in zip(test, answers, strict=True)]
    log(f"  spamd: {len(test)} scored in {scored:.0f}s ({missing} without an answer)")
    nspam = next((ln.split()[2] for ln in magic.splitlines() if ln.endswith("nspam")), "?")
    nham = next((ln.split()[2] for ln in magic.splitlines() if ln.endswith("nham")), "?")
    return {**rates(flags), "unanswered": missing, "bayes_nspam": nspam, "bayes_nham": nham,
            "ham_flagged_by_set": flagged_ham_groups(test, [hit for _, hit in flags]),
            "learn_s": round(learned), "score_s": round(scored)}


# --- rspamd ---------------------------------------------------------------------------------------------

def run_rspamd(test: Sequence[Sample], workdir: Path, log) -> dict:
    with DnsServer() as dns:
        server = RspamdServer(workdir / "rspamd", dns_port=dns.port, ready_timeout=300)
        local = server.dirs["local"] / "local.d"
        server.own(local)
        for module in DISABLED_MODULES:
            (local / f"{module}.conf").write_text("enabled = false;\n")
        with server:
            started = time.perf_counter()

            async def ask(session: aiohttp.ClientSession, s: Sample):
                headers = {"From": sender(s.data) or "", "Rcpt": "user@example.com"}
                for _ in range(2):
                    try:
                        async with session.post(server.url + "/checkv2", data=s.data, headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=60)) as response:
                            if response.status == 200:
                                return await response.json(content_type=None)
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                return None

            async def go():
                async with aiohttp.ClientSession() as session:
                    return await bounded((ask(session, s) for s in test), 4)

            answers = asyncio.run(go())
            scored = time.perf_counter() - started
    missing = sum(a is None for a in answers)
    flags = [(s.spam, a is not None and a.get("action") in FLAGGING_ACTIONS) for s, a in zip(test, answers,
                                                                                           strict=True)]
    log(f"  rspamd: {len(test)} scored in {scored:.0f}s ({missing} without an answer)")
    return {**rates(flags), "unanswered": missing, "score_s": round(scored),
            "ham_flagged_by_set": flagged_ham_groups(test, [hit for _, hit in flags])}


# --- mailmoat -------------------------------------------------------------------------------------------

def run_mailmoat(train: Sequence[Sample], test: Sequence[Sample], redis_url: str, log) -> dict:
    import redis.asyncio as aioredis

    every = list(train) + list(test)
    toks = {s.checksum: tokens(parse(s.data)) for s in every}
    base = base_findings(every)

    async def go():
        client = aioredis.from_url(redis_url)
        try:
            return await run_split(client, f"mailmoat:compare:{os.getpid()}", train, test, toks, base, HAM_RATE,
                                   None, "compare")
        finally:
            await client.aclose()

    started = time.perf_counter()
    result = asyncio.run(go())
    log(f"  mailmoat: trained and scored in {time.perf_counter() - started:.0f}s")
    spam_pct, ham_pct = result.rates(False)
    fixed_spam_pct, fixed_ham_pct = result.rates(True)
    return {"tested_spam": result.test_spam, "tested_ham": result.test_ham, "caught": result.caught,
            "flagged": result.flagged, "spam_caught_pct": round(spam_pct, 2), "ham_flagged_pct": round(ham_pct, 2),
            "calibrated_cutoff": result.cutoffs[0], "fixed_spam_caught_pct": round(fixed_spam_pct, 2),
            "fixed_ham_flagged_pct": round(fixed_ham_pct, 2), "ham_flagged_by_set": dict(result.fp_groups)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", action="append", help="collection (default) and/or cv0..cv4; repeatable")
    parser.add_argument("--sample", type=int, default=None, help="test messages per split (all when absent)")
    parser.add_argument("--engines", default="mailmoat,spamd,rspamd")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    tarball = find_tarball()
    if tarball is None:
        print("accuracy_compare: no corpus; run scripts/setup.sh --accuracy", file=sys.stderr)
        return 2
    samples = list(corpus(tarball))
    redis_url = os.environ.get("MAILMOAT_REDIS_URL", "redis://127.0.0.1:6379/0")
    engines = args.engines.split(",")
    results: dict[str, dict] = {}

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="mailmoat-compare-") as tmp:
        for split in args.split or ["collection"]:
            train, full_test = split_of(samples, split)
            test = sample_of(full_test, args.sample)
            log(f"{split}: trained on {len(train)} ({sum(s.spam for s in train)} spam), testing {len(test)} of "
                f"{len(full_test)} ({sum(s.spam for s in test)} spam)")
            results[split] = {"trained": len(train), "trained_spam": sum(s.spam for s in train),
                              "test_total": len(full_test), "tested": len(test)}
            if "mailmoat" in engines:
                results[split]["mailmoat"] = run_mailmoat(train, test, redis_url, log)
            if "spamd" in engines:
                results[split]["spamd"] = run_spamd(train, test, Path(tmp) / split, log)
            if "rspamd" in engines:
                results[split]["rspamd"] = run_rspamd(test, Path(tmp) / split, log)
    print("| split | engine | tested (spam + ham) | spam caught | ham flagged |")
    print("|---|---|---|---|---|")
    for split, r in results.items():
        for engine in engines:
            e = r[engine]
            print(f"| {split} | {engine} | {e['tested_spam']} + {e['tested_ham']} | {e['caught']} = "
                  f"{e['spam_caught_pct']:.2f}% | {e['flagged']} = {e['ham_flagged_pct']:.2f}% |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
