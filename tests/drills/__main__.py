"""Run the fault drills: ``python -m tests.drills [--quick] [--json FILE] [DRILL ...]`` (``make drills``).

Starts a private RabbitMQ node and Redis (never the machine's own), runs each drill named (all by
default) and prints one line per drill, then the table. ``--quick`` shortens every phase and kills
once instead of three times. To measure other code (an older checkout), put its packages first on
PYTHONPATH: the gateway processes inherit it (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tests.drills.drills import DRILLS, FULL, QUICK, Result, run_drill
from tests.drills.servers import PrivateRabbit, PrivateRedis

HEADER = ("drill", "sent", "250", "4xx", "5xx", "conn", "delivered", "dup", "bounced", "dead", "lost",
          "recovery_s", "max_delay_s", "lock_busy", "unacked")


def row(result: Result) -> tuple[object, ...]:
    t = result.tally
    return (result.name, t.sent, t.accepted, t.temporary, t.permanent, t.failed, t.delivered, t.duplicates,
            t.bounced, result.dead_total, t.lost, f"{result.recovery:.1f}", f"{result.max_delay:.1f}",
            result.lock_waits, result.unacked)


def table(rows: list[tuple[object, ...]]) -> str:
    cells = [HEADER, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in
                               enumerate(zip(r, widths, strict=True))) for r in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.drills", description=__doc__.split("\n\n")[0])
    parser.add_argument("drills", nargs="*", help=f"drills to run (default all): {', '.join(d.name for d in DRILLS)}")
    parser.add_argument("--quick", action="store_true", help="shorter phases, one kill per kill drill")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs of every process)")
    args = parser.parse_args(argv)
    chosen = [d for d in DRILLS if not args.drills or d.name in args.drills]
    unknown = set(args.drills) - {d.name for d in DRILLS}
    if unknown:
        parser.error(f"no drill {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.WARNING)
    phases = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="mailmoat-drills-"))
    rabbit, redis = PrivateRabbit(workdir), PrivateRedis(workdir)
    results: list[Result] = []
    failed: list[str] = []
    started = time.monotonic()
    try:
        print(f"drills: private RabbitMQ {rabbit.node} on 127.0.0.1:{rabbit.port}, Redis on 127.0.0.1:{redis.port}, "
              f"work directory {workdir}", flush=True)
        redis.start()
        print(f"drills: RabbitMQ node up in {rabbit.start():.0f}s", flush=True)
        for index, drill in enumerate(chosen):
            began = time.monotonic()
            try:
                result = run_drill(drill, rabbit, redis, workdir, phases, index)
            except Exception as exc:  # one broken drill does not stop the others
                failed.append(drill.name)
                print(f"{drill.name}: the drill itself failed: {type(exc).__name__}: {str(exc)[:2000]}", flush=True)
                if rabbit.proc is None or rabbit.proc.poll() is not None:
                    rabbit.start()
                if redis.proc is None:
                    redis.start()
                continue
            results.append(result)
            notes = f" ({'; '.join(result.notes)})" if result.notes else ""
            print(f"{table([row(result)]).splitlines()[1]}   [{time.monotonic() - began:.0f}s]{notes}", flush=True)
    finally:
        rabbit.close()
        redis.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{table([row(r) for r in results])}\n\nall drills in {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r.tally), "name": r.name, "recovery_s": r.recovery,
                                          "max_delay_s": r.max_delay, "lock_busy": r.lock_waits,
                                          "dead_total": r.dead_total, "unacked": r.unacked, "notes": r.notes,
                                          "trace_lost": r.trace_lost}
                                         for r in results], indent=1))
    lost = sum(r.tally.lost for r in results)
    if lost:
        print(f"drills: {lost} messages answered 250 were neither delivered, bounced nor dead-lettered",
              file=sys.stderr)
    trace_lost = sum(r.trace_lost for r in results)
    if trace_lost:
        print(f"drills: {trace_lost} trace events missing in PostgreSQL", file=sys.stderr)
        lost += trace_lost
    if failed:
        print(f"drills: could not run {', '.join(failed)}", file=sys.stderr)
    return 1 if lost or failed else 0


if __name__ == "__main__":
    sys.exit(main())
