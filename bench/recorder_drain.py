"""The recorder end to end: ``mailmoat.trace`` filled with realistic batches, then drained into PostgreSQL.

    .venv/bin/python bench/recorder_drain.py --events 400000          # one run
    .venv/bin/python bench/recorder_drain.py --events 400000 --profile recorder.prof   # py-spy is not needed

What it does, on a RabbitMQ vhost and a PostgreSQL database of its own (both removed at the end):

1. fills ``mailmoat.trace`` with trace messages as stages publish them (``tracebus``): records of one
   event each (ingress's RECEIVE with the look-up values, then one record per later stage), ``--per-batch``
   records a message (what a busy stage group-commits in one broker round trip);
2. starts ``mailmoat run recorder`` as a process (``MAILMOAT_RECORDS=postgresql``) and reads its
   ``mailmoat_recorder_events_written_total`` until every event is written;
3. reports events/s from its first commit to its last, the CPU seconds of the recorder and of the
   PostgreSQL backends, and checks the count in ``trace_events``.

Used by ``bench/records.py --only recorder`` (bench/README.md, *Records*).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import psycopg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import procstat  # noqa: E402
from records import Mail, database, drop  # noqa: E402

from mailmoat_records.trace import TRACE_CONTENT_TYPE, TRACE_QUEUE, TRACE_QUEUE_ARGUMENTS, TraceRecord, encode_batch  # noqa: E402
from mailmoat_records.tracebus import OLDEST_HEADER  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vhost_create() -> tuple[str, str]:
    name = f"mailmoat-bench-recorder-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    return name, f"amqp://guest:guest@127.0.0.1:5672/{name}"


def vhost_delete(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120)


def bodies(mail: Mail, events: int, per_batch: int, per_message: int) -> list[bytes]:
    """Trace message bodies as stages publish them: one event a record, ``per_batch`` records a body."""
    now = datetime.now(UTC)
    records: list[TraceRecord] = []
    for n in range(max(1, events // per_message)):
        _, first, later = mail.message(now - timedelta(seconds=(events - n) / 1000), per_message)
        records.append(first)
        records.extend(TraceRecord(events=[e]) for e in later)
    # Stages publish concurrently: a body mixes records of many messages (shuffled a little).
    rng = random.Random(7)
    for i in range(0, len(records) - 64, 64):
        window = records[i:i + 64]
        rng.shuffle(window)
        records[i:i + 64] = window
    return [encode_batch(records[i:i + per_batch]) for i in range(0, len(records), per_batch)]


async def fill(amqp_url: str, payloads: list[bytes]) -> float:
    started = time.perf_counter()
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        channel = await conn.channel(publisher_confirms=True)
        await channel.declare_queue(TRACE_QUEUE, durable=True, arguments=TRACE_QUEUE_ARGUMENTS)
        stamp = int(time.time() * 1000)
        window = 200
        for i in range(0, len(payloads), window):
            await asyncio.gather(*(channel.default_exchange.publish(
                aio_pika.Message(body, headers={OLDEST_HEADER: stamp}, content_type=TRACE_CONTENT_TYPE,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=TRACE_QUEUE)
                for body in payloads[i:i + window]))
    return time.perf_counter() - started


def metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            return reply.read().decode()
    except OSError:
        return ""


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def written(port: int) -> float:
    text = metrics(port)
    if not text:
        return -1.0
    return sum(float(m.group(1)) for m in re.finditer(
        r'^mailmoat_recorder_events_written_total\{outcome="[a-z]+"\} (\S+)$', text, re.M))


def backend_cpu(dbname: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to ``dbname`` (found by their process title)."""
    total = 0.0
    for pid in procstat.find_by_comm("postgres"):
        if any(dbname in part for part in procstat.cmdline(pid)):
            s = procstat.sample(pid)
            total += s.cpu_s if s else 0.0
    return total


def server_cpu() -> float:
    """CPU seconds of the PostgreSQL server's background processes (WAL writer, checkpointer...)."""
    total = 0.0
    for pid in procstat.find_by_comm("postgres"):
        cmd = " ".join(procstat.cmdline(pid))
        if "walwriter" in cmd or "checkpointer" in cmd or "background writer" in cmd:
            s = procstat.sample(pid)
            total += s.cpu_s if s else 0.0
    return total


def run(args: argparse.Namespace) -> dict:
    mail = Mail(random.Random(args.seed), 5000, 200_000, 50_000)
    name = f"{args.name}_recorder"
    url = database(args.server, name)
    vhost, amqp_url = vhost_create()
    port = free_port()
    proc: subprocess.Popen | None = None
    out: dict = {"per_batch": args.per_batch, "per_message": args.per_message}
    try:
        payloads = bodies(mail, args.events, args.per_batch, args.per_message)
        total = sum(len(json.loads(b)) for b in payloads)  # one event per record
        out["events"] = total
        out["messages_on_queue"] = len(payloads)
        out["fill_s"] = asyncio.run(fill(amqp_url, payloads))
        workdir = Path(tempfile.mkdtemp(prefix="bench-recorder-"))
        (workdir / "policy.yaml").write_text("{}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILMOAT_", "OTEL_"))}
        env.update({"MAILMOAT_AMQP_URL": amqp_url, "MAILMOAT_DATABASE_URL": url, "MAILMOAT_RECORDS": "postgresql",
                    "MAILMOAT_REDIS_URL": args.redis_url, "MAILMOAT_POLICY": str(workdir / "policy.yaml"),
                    "MAILMOAT_RECORDER_METRICS_PORT": str(port), "MAILMOAT_LOG_FORMAT": "text",
                    "MAILMOAT_LOG_LEVEL": "WARNING", **args.env})
        command = [sys.executable, "-m", "mailmoat_cli.main", "run", "recorder"]
        if args.profile:
            command = [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "mailmoat_cli.main", "run",
                       "recorder"]
        log = open(workdir / "recorder.log", "wb")
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        first = last = None
        first_count = 0.0
        cpu0 = pg0 = srv0 = rabbit0 = 0.0
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"recorder exited: {(workdir / 'recorder.log').read_text()[-2000:]}")
            count = written(port)
            now = time.perf_counter()
            if first is None and count > 0:
                first, first_count = now, count
                s = procstat.sample(proc.pid)
                cpu0, pg0, srv0 = (s.cpu_s if s else 0.0), backend_cpu(name), server_cpu()
                rabbit0 = sum(procstat.sample(p).cpu_s for p in procstat.find_by_comm("beam.smp"))
            if count >= total:
                last = now
                break
            time.sleep(0.05)
        if last is None or first is None:
            raise RuntimeError(f"not drained in {args.timeout} s: {written(port)} of {total}")
        s = procstat.sample(proc.pid)
        rabbit = procstat.find_by_comm("beam.smp")
        text = metrics(port)
        out["transactions"] = int(metric(text, "mailmoat_recorder_batch_seconds_count"))
        out["transaction_ms_mean"] = 1000 * metric(text, "mailmoat_recorder_batch_seconds_sum") / max(
            1, out["transactions"])
        out["drain_s"] = last - first
        out["events_per_s"] = (total - first_count) / (last - first)
        out["recorder_cpu_s"] = (s.cpu_s if s else 0.0) - cpu0
        out["postgres_backend_cpu_s"] = backend_cpu(name) - pg0
        out["postgres_server_cpu_s"] = server_cpu() - srv0
        out["rabbitmq_cpu_s"] = sum(procstat.sample(p).cpu_s for p in rabbit) - rabbit0
        with psycopg.connect(url) as conn:
            out["stored"] = conn.execute("SELECT count(*) FROM trace_events").fetchone()[0]
            out["messages_stored"] = conn.execute("SELECT count(*) FROM trace_messages").fetchone()[0]
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(2 if args.profile else 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        vhost_delete(vhost)
        if not args.keep:
            drop(args.server, name)
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default=os.environ.get("MAILMOAT_BENCH_DATABASE_URL",
                                                       "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--name", default="mailmoat_bench_records")
    ap.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"))
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--per-batch", type=int, default=50, help="records per message on the queue")
    ap.add_argument("--per-message", type=int, default=8, help="events per mail message")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--profile", help="run the recorder under cProfile, writing here")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the recorder")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.env = dict(kv.split("=", 1) for kv in args.env)
    out = run(args)
    print(f"recorder: {out['events']:,} events in {out['messages_on_queue']:,} messages of {args.per_batch} records: "
          f"{out['events_per_s']:,.0f} events/s ({out['drain_s']:.1f} s); CPU recorder {out['recorder_cpu_s']:.1f} s, "
          f"PostgreSQL backends {out['postgres_backend_cpu_s']:.1f} s, server {out['postgres_server_cpu_s']:.1f} s, "
          f"RabbitMQ {out['rabbitmq_cpu_s']:.1f} s; {out['transactions']:,} transactions of "
          f"{out['transaction_ms_mean']:.1f} ms on average; "
          f"stored {out['stored']:,}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0 if out["stored"] == out["events"] else 1


if __name__ == "__main__":
    sys.exit(main())
