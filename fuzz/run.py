"""Run every fuzz target (or the ones named) for a bounded time and report executions and findings.

    python fuzz/run.py [--seconds N] [NAME ...]

Each target runs in its own process (``fuzz.driver``) for N seconds (``FUZZ_SECONDS``, default 60).
The corpus a run grows is kept in ``var/fuzz/<name>/`` for the next run; an input that crashes a
target is written to ``var/fuzz/crashes/<name>/``: copy it to ``fuzz/regressions/<name>/`` with a
telling name, so that ``tests/unit/test_fuzz_regressions.py`` replays it from then on. Exit status 1
when any target found something.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = REPO / "fuzz" / "targets"


def target_names() -> list[str]:
    return sorted(p.stem for p in TARGETS.glob("*.py") if not p.name.startswith("_"))


def run_target(name: str, seconds: int) -> tuple[int, list[Path], str]:
    """Fuzz one target; returns (executions, crash files, last lines of its output)."""
    corpus = REPO / "var" / "fuzz" / name
    crashes = REPO / "var" / "fuzz" / "crashes" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    cmd = [
        sys.executable, "-m", "fuzz.driver", name, str(corpus),
        f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=3072", "-print_final_stats=1",
        f"-artifact_prefix={crashes}/", "-close_fd_mask=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAILMOAT_LOG_LEVEL": "CRITICAL"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, errors="replace",
                          timeout=seconds + 300)
    output = proc.stderr + proc.stdout
    match = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    if match is None:
        runs = re.findall(r"^#(\d+)\s", output, re.MULTILINE)
        executions = int(runs[-1]) if runs else 0
    else:
        executions = int(match.group(1))
    found = sorted(set(crashes.iterdir()) - before)
    if proc.returncode != 0 and not found:
        found = [Path(f"(exit status {proc.returncode}, no artifact)")]
    return executions, found, "\n".join(output.strip().splitlines()[-25:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    names = args.names or target_names()
    unknown = sorted(set(names) - set(target_names()))
    if unknown:
        parser.error(f"no such target: {', '.join(unknown)} (targets: {', '.join(target_names())})")
    failed = False
    print(f"{'target':<20} {'seconds':>7} {'executions':>11}  findings")
    for name in names:
        executions, found, tail = run_target(name, args.seconds)
        print(f"{name:<20} {args.seconds:>7} {executions:>11}  {len(found) or 'none'}", flush=True)
        for path in found:
            failed = True
            print(f"    {path}")
        if found:
            print("    " + tail.replace("\n", "\n    "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
