"""SMTP accept rate of a bare aiosmtpd server on asyncio's default loop vs uvloop.

The server (a child process) answers 250 to every DATA without doing anything else. Postfix's
smtp-source drives it: ``-s`` parallel sessions, ``-m`` messages of ``-l`` bytes, one message per
connection (add ``--reuse`` for smtp-source -d: many messages per connection). Rounds alternate the
two loops. Reported: msgs/s (messages / smtp-source wall time) and the server's CPU time per message.

    .venv/bin/python bench/hop/smtp_accept.py --rounds 3 --sessions 20 --messages 2000 --size 10240
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import hoplib

SMTP_SOURCE = "/usr/sbin/smtp-source"
HERE = Path(__file__).resolve()


class Accept:
    """aiosmtpd handler: accept every message, keep nothing."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 2.0.0 Ok"


async def serve(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    handler = Accept()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="bench.test", data_size_limit=10_485_760),
                                      "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    server.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU {usage.ru_utime + usage.ru_stime:.4f} COUNT {handler.count}", flush=True)


def run_round(loop: str, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE), "--serve", str(port), "--loop", loop],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"server did not start: {line!r}")
        cpu_before = _child_cpu(server.pid)
        cmd = [SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
               "-f", "sender@example.org", "-t", "user@example.com"]
        if args.reuse:
            cmd.append("-d")
        started = time.perf_counter()
        subprocess.run([*cmd, f"127.0.0.1:{port}"], check=True, capture_output=True, timeout=300)
        elapsed = time.perf_counter() - started
        cpu_after = _child_cpu(server.pid)
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        count = int(out.split("COUNT")[1].split()[0])
        if count != args.messages:
            raise RuntimeError(f"server accepted {count} of {args.messages}")
        return {"msgs_per_s": args.messages / elapsed,
                "cpu_us_per_msg": (cpu_after - cpu_before) / args.messages * 1e6}
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def _child_cpu(pid: int) -> float:
    """utime + stime of a process, seconds (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / float(os.sysconf("SC_CLK_TCK"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--reuse", action="store_true", help="smtp-source -d: several messages per connection")
    args = parser.parse_args()
    if args.serve:
        hoplib.run(lambda: serve(args.serve), args.loop)
        return 0
    if not 1 <= args.rounds <= 10 or not 1 <= args.messages <= 100_000 or not 1 <= args.sessions <= 200:
        parser.error("--rounds 1..10, --messages 1..100000, --sessions 1..200")
    results: dict[str, list[dict[str, float]]] = {"asyncio": [], "uvloop": []}
    for rnd in range(args.rounds):
        for loop in results:
            r = run_round(loop, args)
            results[loop].append(r)
            print(f"round {rnd + 1}: {loop:8} {r['msgs_per_s']:8.1f} msgs/s  {r['cpu_us_per_msg']:7.1f} us server "
                  f"CPU/msg  load1={hoplib.loadavg():.2f}", flush=True)
    mode = "many per connection" if args.reuse else "one per connection"
    print(f"\nsmtp-source -s {args.sessions} -m {args.messages} -l {args.size} ({mode}), {args.rounds} runs, median")
    print("| loop | msgs/s (median) | runs | server CPU us/msg (median) |")
    print("|---|---:|---|---:|")
    for loop, rs in results.items():
        rates = [r["msgs_per_s"] for r in rs]
        print(f"| {loop} | {hoplib.median(rates):.0f} | {', '.join(f'{x:.0f}' for x in rates)} | "
              f"{hoplib.median([r['cpu_us_per_msg'] for r in rs]):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
