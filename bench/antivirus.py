"""Antivirus benchmark: the stage's scan rate, and the end-to-end rate with it in the pipeline.

1. stage: the antivirus handler's work without the bus (MIME walk and decoding, built-in checks,
   archives, macros, clamd INSTREAM scans of the message and each part, verdict, report header) on
   messages with attachments of about 10 KB and 1 MB, ``--concurrency`` messages at a time (the
   stage's prefetch), against a clamd started here. Reported: msgs/s, MB/s, and the CPU time of
   the built-in checks alone per message.
2. end to end: the gateway as processes (ingress, [antivirus,] routing, egress) on a fresh RabbitMQ
   vhost, an aiosmtplib client with ``--sessions`` sessions sending the same messages, an aiosmtpd
   sink counting them; msgs/s = N / (first send → N-th arrival), once with ``pipeline.filters:
   [antivirus]`` and once with ``[]`` for comparison.

The clamd is the test suite's (tests/support/clamd.py): its own config, a loopback port, and a
signature database of two hash signatures (EICAR and ClamAV's test file), not the real ClamAV
database; with the real database (millions of signatures) clamd's own scan time per byte is higher,
so these figures are the stage's overhead and an upper bound on its rate.

    .venv/bin/python bench/antivirus.py                 # both phases, both sizes
    .venv/bin/python bench/antivirus.py --only stage --messages-10k 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiosmtplib  # noqa: E402

from mailmoat_antivirus import mime  # noqa: E402
from mailmoat_antivirus.clamd import ClamdClient  # noqa: E402
from mailmoat_antivirus.decide import add_engine_results, analyse, decide, report_header  # noqa: E402
from mailmoat_antivirus.service import scan_items  # noqa: E402
from mailmoat_policy import Antimalware  # noqa: E402
from tests.support.attachments import message, zip_of  # noqa: E402
from tests.support.clamd import ClamdServer  # noqa: E402
from tests.support.gateway import Gateway  # noqa: E402
from tests.support.infra import amqp_url_for, create_vhost, delete_vhost  # noqa: E402
from tests.support.office import ooxml  # noqa: E402
from tests.support.sink import SmtpSink  # noqa: E402

WORDS = b"the quick brown fox jumps over the lazy dog while the gateway scans every part of it "
POLICY = """
organization:
  hostname: bench.mailmoat.test
accepted_domains:
  - domain: example.com
    route: sink
routes:
  sink:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
limits:
  max_message_size: 10485760
  max_sessions: 200
pipeline:
  filters: [{filters}]
"""


def text(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = WORDS.split()
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + (b"\r\n" if rng.random() < 0.08 else b" ")
    return bytes(out[:size])


def noise(size: int, seed: int, magic: bytes = b"") -> bytes:
    return magic + random.Random(seed).randbytes(size - len(magic))


def build(kind: str, n: int) -> bytes:
    """A message with attachments: ``10k`` (about 10 KB) or ``1m`` (about 1 MB); ``n`` varies the bytes."""
    if kind == "10k":
        attachments = [
            ("report.pdf", "application/pdf", noise(3000, n, b"%PDF-1.4\n"), "base64"),
            ("data.zip", "application/zip", zip_of([("a.csv", text(3000, n)), ("b.txt", text(2000, n + 1))]),
             "base64"),
            ("notes.txt", "text/plain", text(1200, n + 2), "quoted-printable"),
        ]
        body = text(1500, n + 3)
    else:
        attachments = [
            ("photo.jpg", "image/jpeg", noise(420_000, n, b"\xff\xd8\xff\xe0"), "base64"),
            ("report.pdf", "application/pdf", noise(160_000, n + 1, b"%PDF-1.4\n"), "base64"),
            ("data.zip", "application/zip", zip_of([("big.csv", text(400_000, n)), ("x.bin", noise(60_000, n))]),
             "base64"),
            ("letter.docx", "application/octet-stream", ooxml("word", macros=False), "base64"),
        ]
        body = text(4000, n + 3)
    return message(attachments, body=body, subject=f"bench {kind} {n}").replace(
        b"Message-ID: <av-test@outside.test>", f"Message-ID: <bench-{kind}-{n}@outside.test>".encode())


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- 1. the stage ----------------------------------------------------------------------------------


async def stage_rate(clamd: ClamdServer, messages: list[bytes], concurrency: int) -> dict[str, float]:
    policy = Antimalware(max_connections=max(8, concurrency))
    client = ClamdClient(clamd.address, max_connections=policy.max_connections)
    verdicts: dict[str, int] = {}
    queue = list(reversed(messages))

    async def worker() -> None:
        while queue:
            raw = queue.pop()
            findings, items = await asyncio.to_thread(analyse, raw, policy)
            add_engine_results(findings, await scan_items(client, items))
            verdict = decide(findings, policy)
            report_header(verdict)
            verdicts[verdict.result] = verdicts.get(verdict.result, 0) + 1

    await scan_items(client, [])  # nothing; keeps the first measured message honest
    pid = clamd.proc.pid if clamd.proc is not None else 0
    started, cpu0, clamd0 = time.perf_counter(), cpu(), process_cpu(pid)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, used = time.perf_counter() - started, cpu() - cpu0
    clamd_used = process_cpu(pid) - clamd0
    checks0 = cpu()
    for raw in messages[: min(len(messages), 200)]:
        analyse(raw, policy)
    checks = (cpu() - checks0) / min(len(messages), 200)
    total = sum(len(m) for m in messages)
    assert verdicts == {"clean": len(messages)}, verdicts
    return {"msgs_s": len(messages) / elapsed, "mb_s": total / elapsed / 1e6, "elapsed": elapsed,
            "cpu_ms": used * 1000 / len(messages), "checks_ms": checks * 1000,
            "clamd_ms": clamd_used * 1000 / len(messages)}


# --- 2. end to end ----------------------------------------------------------------------------------


async def send_all(port: int, messages: list[bytes], sessions: int) -> float:
    queue = list(reversed(messages))
    started = time.perf_counter()

    async def session() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120)
        await client.connect()
        try:
            while queue:
                raw = queue.pop()
                await client.sendmail("bench@outside.test", ["alice@example.com"], raw)
        finally:
            await client.quit()

    await asyncio.gather(*(session() for _ in range(sessions)))
    return started


def end_to_end(filters: str, messages: dict[str, list[bytes]], sessions: int, clamd: ClamdServer,
               workdir: Path, redis_url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    vhost = create_vhost()
    sink = SmtpSink(data_size_limit=None).start()
    gateway = Gateway(workdir / (filters or "none"), amqp_url_for(vhost), redis_url,
                      policy_text=textwrap.dedent(POLICY).format(sink_port=sink.port, filters=filters),
                      extra_env={"MAILMOAT_CLAMD_ADDRESS": clamd.address, "MAILMOAT_LOG_LEVEL": "WARNING"},
                      log_format="text")
    services = ("ingress", "antivirus", "routing", "egress") if filters else ("ingress", "routing", "egress")
    try:
        gateway.start(services)
        for kind, batch in messages.items():
            sink.clear()
            started = asyncio.run(send_all(gateway.smtp_port, batch, sessions))
            sink.wait_for(len(batch), timeout=600)
            elapsed = time.perf_counter() - started
            if filters:
                assert all(m.data.startswith(b"X-Mailmoat-Malware-Report: result=clean") for m in sink.messages)
            out[kind] = len(batch) / elapsed
            sink.clear()
    finally:
        gateway.stop()
        sink.stop()
        delete_vhost(vhost)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["stage", "e2e"])
    parser.add_argument("--messages-10k", type=int, default=1000)
    parser.add_argument("--messages-1m", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--redis-url", default=os.environ.get("MAILMOAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = parser.parse_args()

    messages = {"10k": [build("10k", n) for n in range(args.messages_10k)],
                "1m": [build("1m", n) for n in range(args.messages_1m)]}
    for kind, batch in messages.items():
        print(f"{kind}: {len(batch)} messages, {sum(map(len, batch)) / len(batch) / 1024:.1f} KiB on average, "
              f"{len(mime.walk(batch[0]))} parts")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="mailmoat-bench-av-") as tmp, ClamdServer(Path(tmp) / "clamd") as clamd:
        if args.only in (None, "stage"):
            for kind, batch in messages.items():
                for concurrency in (1, args.concurrency):
                    figures = asyncio.run(stage_rate(clamd, batch, concurrency))
                    print(f"stage {kind} concurrency {concurrency:2}: {figures['msgs_s']:8.1f} msgs/s "
                          f"{figures['mb_s']:6.1f} MB/s  CPU/msg: stage {figures['cpu_ms']:.2f} ms "
                          f"(built-in checks {figures['checks_ms']:.2f} ms), clamd {figures['clamd_ms']:.2f} ms")
        if args.only in (None, "e2e"):
            for filters in ("", "antivirus"):
                figures = end_to_end(filters, messages, args.sessions, clamd, Path(tmp), args.redis_url)
                label = filters or "no filters"
                print("e2e " + label + ": " + ", ".join(f"{k} {v:.1f} msgs/s" for k, v in figures.items()))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
