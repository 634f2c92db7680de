"""Run stage_hop.py over a matrix of configurations, interleaved round by round, and print medians.

Each run is its own process (own vhost, own event loop); a round runs every configuration once, so
drift in the machine's load spreads over all configurations instead of landing on one.

    .venv/bin/python bench/hop/matrix.py --rounds 3 --messages 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import hoplib

HERE = Path(__file__).resolve().parent
CONFIGS = {
    "default": [
        (impl, loop, prefetch)
        for prefetch in (32, 128)
        for impl, loop in (
            ("aiopika", "uvloop"), ("faststream", "uvloop"), ("faststream-lean", "uvloop"), ("bare", "uvloop"),
            ("aiopika", "asyncio"),
        )
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--only", default="", help="comma-separated impl:loop:prefetch list instead of the default")
    parser.add_argument("--out", type=Path, default=None, help="write all runs as JSON here")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be 1..10")
    configs = CONFIGS["default"]
    if args.only:
        configs = [(i, lp, int(p)) for i, lp, p in (c.split(":") for c in args.only.split(","))]

    runs: dict[tuple[str, str, int], list[dict]] = {c: [] for c in configs}
    for rnd in range(args.rounds):
        for impl, loop, prefetch in configs:
            cmd = [sys.executable, str(HERE / "stage_hop.py"), "--impl", impl, "--loop", loop,
                   "--prefetch", str(prefetch), "--messages", str(args.messages), "--size", str(args.size),
                   "--runs", "1", "--json"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            result = json.loads(proc.stdout.strip().splitlines()[-1])["runs"][0]
            runs[(impl, loop, prefetch)].append(result)
            print(f"round {rnd + 1}: {impl:15} {loop:8} prefetch={prefetch:<4} {result['msgs_per_s']:8.1f} msgs/s "
                  f"{result['cpu_us_per_msg']:7.1f} us CPU/msg load1={result['load1']}", flush=True)

    print(f"\n{args.messages} messages of {args.size} bytes per run, {args.rounds} runs, median")
    print("| impl | loop | prefetch | msgs/s (median) | runs | CPU us/msg (median) |")
    print("|---|---|---:|---:|---|---:|")
    for (impl, loop, prefetch), results in runs.items():
        rates = [r["msgs_per_s"] for r in results]
        cpu = hoplib.median([r["cpu_us_per_msg"] for r in results])
        print(f"| {impl} | {loop} | {prefetch} | {hoplib.median(rates):.0f} | "
              f"{', '.join(f'{x:.0f}' for x in rates)} | {cpu:.0f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "messages": args.messages, "size": args.size,
                   "runs": [{"impl": i, "loop": lp, "prefetch": p, "results": r} for (i, lp, p), r in runs.items()]}
        args.out.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
