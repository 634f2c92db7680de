"""A timestamping SMTP sink (aiosmtpd): records when each message arrives, by its X-Bench-Id header.

Prints ``received <count>`` on stdout whenever the count changed (at most every 0.2 s), after adding the
new ``<id> <arrival ns>`` lines (CLOCK_REALTIME, comparable across processes) to --out; on SIGTERM or
SIGINT writes the rest and exits.

    python bench/sink.py --port 2701 --out arrivals.txt
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time

from aiosmtpd.smtp import SMTP, Envelope, Session

BENCH_ID = re.compile(rb"^X-Bench-Id:[ \t]*(\S+)\r?$", re.MULTILINE | re.IGNORECASE)


def bench_id(content: bytes) -> str | None:
    """The X-Bench-Id of a message (searched in its header section only)."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    match = BENCH_ID.search(head)
    return match.group(1).decode("ascii", "replace") if match else None


class Recorder:
    """aiosmtpd handler: accept everything, note (id, time) per message."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, int]] = []
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.time_ns()
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        self.arrivals.append((bench_id(content) or "-", now))
        self.count += 1
        return "250 2.0.0 Ok: queued"


async def serve(host: str, port: int, recorder: Recorder, out: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(recorder, hostname="bench-sink", data_size_limit=64 * 1024 * 1024,
                     ident="bench-sink"),
        host, port, backlog=512,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {host}:{port}", flush=True)
    shown = -1
    written = 0
    fh = open(out, "w")  # noqa: ASYNC230  (once, before serving)
    while not stop.is_set():
        if recorder.count != shown:
            shown = recorder.count
            new, written = recorder.arrivals[written:], len(recorder.arrivals)
            fh.writelines(f"{ident} {ns}\n" for ident, ns in new)
            fh.flush()
            print(f"received {shown}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass
    server.close()
    fh.writelines(f"{ident} {ns}\n" for ident, ns in recorder.arrivals[written:])
    fh.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    recorder = Recorder()
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, recorder, args.out))
    except ImportError:
        asyncio.run(serve(args.host, args.port, recorder, args.out))
    print(f"received {recorder.count}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
