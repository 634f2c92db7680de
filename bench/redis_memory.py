"""Redis memory per relayed message, with the records in Redis and in PostgreSQL.

    .venv/bin/python bench/redis_memory.py --messages 2000          # both: records = redis, then postgresql

For each ``--records`` value: the gateway (ingress, routing, egress, and the recorder with ``postgresql``)
as processes on a RabbitMQ vhost of its own, its Redis database (``--redis-url``, default db 9, flushed
before and after) and, for ``postgresql``, a database of its own; ``--messages`` plain messages (one
recipient, ~1 KB) relayed to a local sink by 4 SMTP clients. Once every message is delivered (and, with
PostgreSQL, every trace record written), it reads the database's keys: their count, ``MEMORY USAGE`` of
each (the bytes Redis spends on the key and its value), which have no TTL, grouped by key prefix; and
``INFO memory``'s ``used_memory`` before and after (the whole instance: other databases' writes count too,
so the per-key sum is the figure to read). Results in bench/README.md, *Records*.
"""

from __future__ import annotations

import argparse
import json
import re
import smtplib
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from recorder_drain import vhost_create, vhost_delete  # noqa: E402
from records import database, drop  # noqa: E402

from tests.support.gateway import Gateway  # noqa: E402
from tests.support.sink import SmtpSink  # noqa: E402

POLICY = """
organization:
  hostname: gw.bench.test
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{port}"]
    tls: none
"""


def prefix(key: bytes) -> str:
    """``mailmoat:trace:by:rcpt`` for ``mailmoat:trace:by:rcpt:a@example.com``; ids and values cut off."""
    text = key.decode(errors="replace")
    parts = text.split(":")
    keep = 4 if text.startswith("mailmoat:trace:by:") else 2
    return ":".join(parts[:keep]) if len(parts) > keep else re.sub(r"[0-9A-Z]{26}", "<id>", text)


def snapshot(client: redis.Redis) -> dict:
    groups: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0, "no_ttl": 0})
    total = 0
    for key in client.scan_iter(count=1000):
        size = client.memory_usage(key, samples=0) or 0
        group = groups[prefix(key)]
        group["keys"] += 1
        group["bytes"] += size
        group["no_ttl"] += client.ttl(key) == -1
        total += size
    return {"keys": sum(g["keys"] for g in groups.values()), "bytes": total, "groups": dict(groups),
            "used_memory": int(client.info("memory")["used_memory"])}


def send(port: int, count: int, clients: int = 4) -> int:
    sent = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        mine = list(range(index, count, clients))
        for start in range(0, len(mine), 20):  # a new session every 20 messages
            with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.client.test", timeout=30) as smtp:
                for n in mine[start:start + 20]:
                    body = (f"From: <s{n}@sender.test>\r\nTo: <u{n % 100}@example.com>\r\nSubject: m {n}\r\n"
                            f"Message-ID: <bench-mem-{n}-{uuid.uuid4().hex}@sender.test>\r\n\r\n" + "x" * 900
                            + "\r\n")
                    smtp.sendmail(f"s{n}@sender.test", [f"u{n % 100}@example.com"], body.encode())
                    with lock:
                        sent[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent[0]


def held_records(gateway: Gateway) -> float:
    match = re.search(r"^mailmoat_recorder_held_records(?:\{[^}]*\})? (\S+)$", gateway.metrics("recorder"), re.M)
    return float(match.group(1)) if match else -1.0


def written(gateway: Gateway) -> float:
    return sum(float(m.group(1)) for m in re.finditer(
        r'^mailmoat_recorder_events_written_total\{[^}]*outcome="new"[^}]*\} (\S+)$', gateway.metrics("recorder"),
        re.M))


def run(records: str, args: argparse.Namespace) -> dict:
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    vhost, amqp_url = vhost_create()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-redis-memory-{records}-"))
    env = {"MAILMOAT_RECORDS": records, "MAILMOAT_LOG_LEVEL": "WARNING"}
    dbname = f"{args.name}_redis_memory"
    services: tuple[str, ...] = ("ingress", "routing", "egress")
    if records == "postgresql":
        env["MAILMOAT_DATABASE_URL"] = database(args.server, dbname)
        services += ("recorder",)
    try:
        with SmtpSink() as sink:
            gateway = Gateway(workdir, amqp_url, args.redis_url, extra_env=env,
                              policy_text=POLICY.format(port=sink.port), log_format="text")
            with gateway:
                gateway.start(services)
                send(gateway.smtp_port, 20)  # warm: connections, scripts, partitions
                sink.wait_for(20, timeout=60)
                time.sleep(2)
                before = snapshot(client)
                started = time.monotonic()
                sent = send(gateway.smtp_port, args.messages)
                sink.wait_for(20 + sent, timeout=300)
                deadline = time.monotonic() + 120
                if records == "postgresql":  # until the recorder holds nothing and has written nothing for 2 s
                    last, still = -1.0, 0
                    while time.monotonic() < deadline and still < 10:
                        count = written(gateway)
                        still = still + 1 if count == last and held_records(gateway) == 0 else 0
                        last = count
                        time.sleep(0.2)
                took = time.monotonic() - started
                time.sleep(1)
                after = snapshot(client)
                out = {"records": records, "messages": sent, "seconds": took, "before": before, "after": after,
                       "bytes_per_message": (after["bytes"] - before["bytes"]) / sent,
                       "keys_per_message": (after["keys"] - before["keys"]) / sent,
                       "used_memory_per_message": (after["used_memory"] - before["used_memory"]) / sent}
                if records == "postgresql":
                    out["trace_events_written"] = written(gateway)
    finally:
        client.flushdb()
        vhost_delete(vhost)
        if records == "postgresql" and not args.keep:
            drop(args.server, dbname)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--records", choices=["redis", "postgresql"], action="append")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    ap.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--name", default="mailmoat_bench_records")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    results = []
    for records in args.records or ["redis", "postgresql"]:
        r = run(records, args)
        results.append(r)
        groups = ", ".join(f"{name} {g['keys']} keys {g['bytes']:,} B ({g['no_ttl']} without TTL)"
                           for name, g in sorted(r["after"]["groups"].items()))
        print(f"records = {records}: {r['messages']} messages: {r['bytes_per_message']:,.0f} bytes and "
              f"{r['keys_per_message']:.2f} keys per message by MEMORY USAGE; used_memory "
              f"{r['used_memory_per_message']:,.0f} bytes per message (whole instance); after: {groups}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
