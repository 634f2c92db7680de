"""Records in PostgreSQL: the trace writer's throughput, and look-ups in a large trace table.

    .venv/bin/python bench/records.py                       # 200k events: a quick run
    .venv/bin/python bench/records.py --events 10000000     # the 10 million event table of bench/README.md

Phases (each on a database of its own, created here and dropped at the end unless ``--keep``):

1. **writer**: ``TraceWriter.write`` (what the recorder will run) on batches of ``--batch`` events of
   synthetic messages (one RECEIVE record with the look-up values, then the other events), one writer
   and two at once; then the same batches again (a redelivery: nothing added).
2. **load**: ``--events`` synthetic events (``--per-message`` per message) spanning ``--days`` days up
   to now, COPYed straight into the day partitions (trace_events, trace_messages, trace_keys), then
   ``VACUUM ANALYZE``.
3. **look-ups**: ``TraceReader.find`` by recipient and by envelope sender over the whole range, first
   page of 50 (and the next page by cursor), with each message's summary and latest event; p50/p99.
   Values drawn by how often they occur (what is looked up most) and uniformly (rare values: every
   day partition is searched and few rows come back). ``TraceReader.received``: every message of an
   hour and of two days (the console's listing by date range), the window anywhere in the range.
4. **disk**: ``pg_total_relation_size`` of every partition (tables and indexes), per message and event.

Synthetic mail: an organisation of ``--mailboxes`` mailboxes receiving from ``--senders`` outside
senders through ``--ips`` client addresses, each drawn from a Zipf-like distribution (a few very
busy); 80 % of messages to one recipient, 2 % to 10 to 30; events as the gateway's stages write them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailmoat_platform.models import TraceEvent  # noqa: E402
from mailmoat_records import db  # noqa: E402
from mailmoat_records.tracedb import Cursor, TraceReader, TraceRecord, TraceWriter  # noqa: E402

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TABLES = ("trace_events", "trace_messages", "trace_keys")


# --- synthetic mail --------------------------------------------------------------------------------

def zipf_cum(n: int, s: float = 1.07) -> list[float]:
    return list(itertools.accumulate(1 / (k + 1) ** s for k in range(n)))


class Mail:
    """Draws synthetic messages: who sends, who receives, from where, and the events traced."""

    def __init__(self, rng: random.Random, mailboxes: int, senders: int, ips: int):
        self.rng = rng
        self.mailboxes = [f"user{n}@corp{n % 5}.example" for n in range(mailboxes)]
        self.senders = [f"sender{n}@mail{n % 9973}.example" for n in range(senders)]
        self.ips = [f"{n >> 16 & 255 | 64}.{n >> 8 & 255}.{n & 255}.{rng.randrange(1, 255)}" for n in range(ips)]
        rng.shuffle(self.mailboxes)
        rng.shuffle(self.senders)
        self.mailbox_cum = zipf_cum(mailboxes)
        self.sender_cum = zipf_cum(senders)
        self.ip_cum = zipf_cum(ips)

    def recipients(self) -> list[str]:
        roll = self.rng.random()
        count = 1 if roll < 0.80 else 2 if roll < 0.90 else self.rng.randint(3, 5) if roll < 0.98 \
            else self.rng.randint(10, 30)
        return list(dict.fromkeys(self.rng.choices(self.mailboxes, cum_weights=self.mailbox_cum, k=count)))

    def message(self, at: datetime, per_message: int) -> tuple[str, TraceRecord, list[TraceEvent]]:
        """A queue id, its RECEIVE record (with the look-up values) and its later events."""
        rng = self.rng
        mid = queue_id(at, rng)
        sender = rng.choices(self.senders, cum_weights=self.sender_cum)[0]
        ip = rng.choices(self.ips, cum_weights=self.ip_cum)[0]
        rcpts = self.recipients()
        size = int(rng.lognormvariate(9.5, 1.2))
        spam = rng.random() < 0.1
        steps: list[tuple[str, str, str, dict]] = [
            ("RECEIVE", "ingress", f"from {ip} size {size}",
             {"helo": sender.split("@")[1], "tls": True, "direction": "inbound", "connector": None}),
            ("AGENTINFO", "connection_filter", "not listed", {"result": "pass", "zones": 2, "ms": 3}),
            ("SCAN", "antivirus", "clean", {"result": "clean", "parts": rng.randint(1, 6), "engine": "clamd"}),
            ("SPAM" if spam else "AGENTINFO", "antispam",
             f"SCL {9 if spam else 1} SFV:{'SPM' if spam else 'NSPM'} BCL 0",
             {"result": "spam" if spam else "clean", "scl": 9 if spam else 1, "bcl": 0,
              "auth": {"spf": "pass", "dkim": "pass", "dmarc": "pass", "compauth": "pass"},
              "author": {"addresses": [sender]}, "score": round(rng.uniform(-2, 12), 2)}),
            ("RULE", "routing", "no rule matched", {"rules": 3}),
            ("ROUTE", "routing", "internal",
             {"route": {"name": "internal", "smarthost": "mx.corp.example:25", "tls": "opportunistic"}}),
            ("QUARANTINE" if spam else "DELIVER", "egress" if not spam else "routing",
             "held: spam" if spam else f"250 2.0.0 Ok: queued as {rng.getrandbits(40):010X}",
             {"mx": "mx.corp.example", "tls": "TLSv1.3", "attempt": 1}),
            ("DKIM", "routing", "signed d=corp.example s=s1", {"domain": "corp.example"}),
        ]
        while len(steps) < per_message:
            steps.append(("DEFER", "egress", "451 4.3.0 try later", {"attempt": len(steps)}))
        events = [TraceEvent(event=name, message_id=mid, service=service, at=at + timedelta(milliseconds=7 * n),
                             recipients=rcpts, detail=detail, data=data)
                  for n, (name, service, detail, data) in enumerate(steps[:per_message])]
        record = TraceRecord(events=events[:1], sender=sender, recipients=rcpts, client_ip=ip,
                             message_id_header=f"<{mid.lower()}.{rng.getrandbits(32):x}@{sender.split('@')[1]}>",
                             authors=[sender])
        return mid, record, events[1:]


def queue_id(at: datetime, rng: random.Random) -> str:
    """A gateway queue id made at ``at`` (``new_message_id``'s layout)."""
    value = (int(at.timestamp() * 1000) << 80) | rng.getrandbits(80)
    return "".join(CROCKFORD[(value >> (5 * n)) & 31] for n in reversed(range(26)))


# --- databases -------------------------------------------------------------------------------------

def database(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlsplit(server)._replace(path=f"/{name}").geturl()
    db.upgrade(url)
    return url


def drop(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- 1. writer -------------------------------------------------------------------------------------

def writer_batches(mail: Mail, events: int, batch: int, per_message: int) -> list[list[TraceRecord]]:
    now = datetime.now(UTC)
    batches: list[list[TraceRecord]] = []
    current: list[TraceRecord] = []
    size = 0
    for n in range(max(1, events // per_message)):
        _, record, later = mail.message(now - timedelta(seconds=(events - n) / 1000), per_message)
        current += [record, TraceRecord(events=later)]
        size += per_message
        if size >= batch:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


async def bench_writer(url: str, batches: list[list[TraceRecord]]) -> dict:
    out: dict = {}
    total = sum(len(r.events) for b in batches for r in b)
    async with db.open_pool(url, min_size=2, max_size=2) as pool:
        half = len(batches) // 2
        writer = TraceWriter(pool)
        await writer.write(batches[0])  # partitions, staging tables, caches
        took: list[float] = []
        started = time.perf_counter()
        for b in batches[1:half]:
            t0 = time.perf_counter()
            await writer.write(b)
            took.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        one = sum(len(r.events) for b in batches[1:half] for r in b)
        out["one_writer_events_per_s"] = one / elapsed
        out["batch_ms_p50"], out["batch_ms_p99"] = pct(took, 0.5) * 1000, pct(took, 0.99) * 1000

        rest = batches[half:]
        second = TraceWriter(pool)

        async def run(w: TraceWriter, part: list[list[TraceRecord]]) -> None:
            for b in part:
                await w.write(b)

        started = time.perf_counter()
        await asyncio.gather(run(writer, rest[0::2]), run(second, rest[1::2]))
        elapsed = time.perf_counter() - started
        out["two_writers_events_per_s"] = sum(len(r.events) for b in rest for r in b) / elapsed

        started = time.perf_counter()
        added = 0
        for b in batches[1:half]:
            added += (await writer.write(b)).added
        out["redelivered_events_per_s"] = one / (time.perf_counter() - started)
        out["redelivered_added"] = added
    out["events"] = total
    return out


# --- 2. load ---------------------------------------------------------------------------------------

def rows_of(mid: str, record: TraceRecord, later: list[TraceEvent], rng: random.Random):
    """The three tables' rows of a message, as the writer makes them."""
    from mailmoat_records.tracedb import event_row, record_keys

    at = record.events[0].at
    events = [event_row(e) for e in [*record.events, *later]]
    message = (at, mid, record.message_id_header, record.sender, record.recipients, record.client_ip)
    keys = [(value, at, mid, kind) for kind, value in record_keys(record)]
    return events, message, keys


def load(url: str, mail: Mail, events: int, per_message: int, days: int, seed: int, samples: int) -> dict:
    rng = random.Random(seed + 1)
    messages = events // per_message
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    first_day = start.date()
    with psycopg.connect(url, autocommit=True) as conn:
        async_days = [first_day + timedelta(days=n) for n in range(days + 2)]
        asyncio.run(_partitions(url, async_days))
        per_day = messages / days
        loaded = rows_total = 0
        picked: list[str] = []  # queue ids to read the events of, spread over the range
        started = time.perf_counter()
        for d in range(days):
            day_start = start + timedelta(days=d)
            count = int(per_day * (d + 1)) - int(per_day * d)
            times = sorted(day_start + timedelta(seconds=rng.uniform(0, 86400 - 1)) for _ in range(count))
            ev_rows, msg_rows, key_rows = [], [], []
            for at in times:
                mid, record, later = mail.message(at, per_message)
                e, m, k = rows_of(mid, record, later, rng)
                ev_rows += e
                msg_rows.append(m)
                if rng.random() < samples / messages:
                    picked.append(mid)
                key_rows += k
            with conn.cursor() as cur:
                for table, columns, rows in (
                        ("trace_events", "at, message_id, event, service, recipients, detail, data, event_key",
                         ev_rows),
                        ("trace_messages", "received_at, message_id, message_id_header, sender, recipients, client_ip",
                         msg_rows),
                        ("trace_keys", "value, at, message_id, kind", key_rows)):
                    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            loaded += len(ev_rows)
            rows_total += len(ev_rows) + len(msg_rows) + len(key_rows)
            if d % 10 == 9:
                rate = loaded / (time.perf_counter() - started)
                print(f"  load: day {d + 1}/{days}, {loaded:,} events, {rate:,.0f} events/s", flush=True)
        copy_s = time.perf_counter() - started
        t0 = time.perf_counter()
        for table in TABLES:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        vacuum_s = time.perf_counter() - t0
    return {"events": loaded, "messages": messages, "rows": rows_total, "copy_s": copy_s,
            "events_per_s": loaded / copy_s, "vacuum_s": vacuum_s, "picked": picked,
            "start": start.isoformat(), "end": end.isoformat()}


async def _partitions(url: str, days: list) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await db.ensure_partitions(conn, days)


# --- 3. look-ups -----------------------------------------------------------------------------------

async def bench_lookups(url: str, mail: Mail, start: datetime, end: datetime, samples: int, seed: int,
                        ids: list[str]) -> dict:
    rng = random.Random(seed + 2)
    since, until = start - timedelta(hours=1), end + timedelta(hours=1)
    draws = {
        "recipient, by frequency": rng.choices(mail.mailboxes, cum_weights=mail.mailbox_cum, k=samples),
        "recipient, uniform": rng.choices(mail.mailboxes, k=samples),
        "sender, by frequency": rng.choices(mail.senders, cum_weights=mail.sender_cum, k=samples),
        "sender, uniform": rng.choices(mail.senders, k=samples),
    }
    out: dict = {}
    async with db.open_pool(url, min_size=1, max_size=1) as pool:
        reader = TraceReader(pool)
        for value in rng.sample(mail.mailboxes, 20):  # warm the connection and the catalog caches
            await reader.find(value, since=since, until=until)
        for label, values in draws.items():
            first: list[float] = []
            second: list[float] = []
            found: list[int] = []
            for value in values:
                t0 = time.perf_counter()
                page = await reader.find(value, since=since, until=until, limit=50)
                first.append((time.perf_counter() - t0) * 1000)
                found.append(len(page.messages))
                if page.next is not None:
                    t0 = time.perf_counter()
                    await reader.find(value, since=since, until=until, limit=50,
                                      after=Cursor.parse(page.next.token))
                    second.append((time.perf_counter() - t0) * 1000)
            out[label] = {"p50_ms": pct(first, 0.5), "p99_ms": pct(first, 0.99), "max_ms": max(first),
                          "mean_found": statistics.mean(found),
                          "next_page_p50_ms": pct(second, 0.5) if second else None,
                          "next_page_p99_ms": pct(second, 0.99) if second else None}
        for label, width in (("every message of an hour", timedelta(hours=1)),
                             ("every message of 2 days", timedelta(days=2))):
            first, second, found = [], [], []
            span = max((end - start) - width, timedelta(0))
            for _ in range(samples):  # a window anywhere in the table's range (the console's range listing)
                until = end - span * rng.random()
                t0 = time.perf_counter()
                page = await reader.received(since=until - width, until=until, limit=50)
                first.append((time.perf_counter() - t0) * 1000)
                found.append(len(page.messages))
                if page.next is not None:
                    t0 = time.perf_counter()
                    await reader.received(since=until - width, until=until, limit=50,
                                          after=Cursor.parse(page.next.token))
                    second.append((time.perf_counter() - t0) * 1000)
            out[label] = {"p50_ms": pct(first, 0.5), "p99_ms": pct(first, 0.99), "max_ms": max(first),
                          "mean_found": statistics.mean(found),
                          "next_page_p50_ms": pct(second, 0.5) if second else None,
                          "next_page_p99_ms": pct(second, 0.99) if second else None}
        took = []
        for mid in ids:
            t0 = time.perf_counter()
            await reader.events(mid)
            took.append((time.perf_counter() - t0) * 1000)
        out["events of a message (queue id)"] = {"p50_ms": pct(took, 0.5), "p99_ms": pct(took, 0.99),
                                                 "max_ms": max(took)}
    return out


# --- 4. disk ---------------------------------------------------------------------------------------

def disk(url: str, messages: int, events: int) -> dict:
    out: dict = {}
    with psycopg.connect(url) as conn:
        for table in TABLES:
            heap, total = conn.execute(
                "SELECT sum(pg_relation_size(relid)), sum(pg_total_relation_size(relid)) "
                "FROM pg_partition_tree(%s) WHERE isleaf", (table,)).fetchone()
            out[table] = {"total_bytes": int(total), "heap_bytes": int(heap)}
    total = sum(t["total_bytes"] for t in out.values())
    out["bytes_per_message"] = total / messages
    out["bytes_per_event"] = total / events
    out["total_bytes"] = total
    return out


# --- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default=os.environ.get("MAILMOAT_BENCH_DATABASE_URL",
                                                       "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--name", default="mailmoat_bench_records", help="database name prefix")
    ap.add_argument("--events", type=int, default=200_000, help="events in the look-up table")
    ap.add_argument("--writer-events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500, help="events per writer batch")
    ap.add_argument("--per-message", type=int, default=8)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--mailboxes", type=int, default=5000)
    ap.add_argument("--senders", type=int, default=200_000)
    ap.add_argument("--ips", type=int, default=50_000)
    ap.add_argument("--samples", type=int, default=300, help="look-ups per kind")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--only", choices=["writer", "table"], help="one phase only (table: load, look-ups, disk)")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)

    mail = Mail(random.Random(args.seed), args.mailboxes, args.senders, args.ips)
    report: dict = {"args": vars(args), "at": datetime.now(UTC).isoformat(timespec="seconds")}
    with psycopg.connect(args.server) as conn:
        report["server"] = conn.execute("SHOW server_version").fetchone()[0]
        report["shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]

    if args.only in (None, "writer"):
        name = f"{args.name}_writer"
        url = database(args.server, name)
        try:
            batches = writer_batches(mail, args.writer_events, args.batch, args.per_message)
            report["writer"] = w = asyncio.run(bench_writer(url, batches))
            report["writer"]["disk"] = disk(url, w["events"] // args.per_message, w["events"])
        finally:
            if not args.keep:
                drop(args.server, name)
        print(f"writer, batches of {args.batch} events: one writer {w['one_writer_events_per_s']:,.0f} events/s "
              f"(batch p50 {w['batch_ms_p50']:.1f} ms, p99 {w['batch_ms_p99']:.1f} ms); two writers "
              f"{w['two_writers_events_per_s']:,.0f} events/s; a redelivered batch {w['redelivered_events_per_s']:,.0f}"
              f" events/s, {w['redelivered_added']} added", flush=True)

    if args.only in (None, "table"):
        name = f"{args.name}_table"
        url = database(args.server, name)
        try:
            report["load"] = ld = load(url, mail, args.events, args.per_message, args.days, args.seed, args.samples)
            print(f"load: {ld['events']:,} events of {ld['messages']:,} messages over {args.days} days by COPY in "
                  f"{ld['copy_s']:.0f} s ({ld['events_per_s']:,.0f} events/s; {ld['rows']:,} rows), "
                  f"VACUUM ANALYZE {ld['vacuum_s']:.0f} s", flush=True)
            report["disk"] = dk = disk(url, ld["messages"], ld["events"])
            print(f"disk: {dk['total_bytes'] / 2**20:,.0f} MiB, {dk['bytes_per_message']:,.0f} bytes per message, "
                  f"{dk['bytes_per_event']:,.0f} per event; "
                  + ", ".join(f"{t} {dk[t]['total_bytes'] / 2**20:,.0f} MiB (heap {dk[t]['heap_bytes'] / 2**20:,.0f})"
                              for t in TABLES), flush=True)
            report["lookups"] = lk = asyncio.run(bench_lookups(
                url, mail, datetime.fromisoformat(ld["start"]), datetime.fromisoformat(ld["end"]),
                args.samples, args.seed, ld.pop("picked")))
            for label, r in lk.items():
                nxt = (f"; next page p50 {r['next_page_p50_ms']:.1f} / p99 {r['next_page_p99_ms']:.1f} ms"
                       if r.get("next_page_p50_ms") is not None else "")
                found = f", {r['mean_found']:.1f} found on average" if "mean_found" in r else ""
                print(f"look-up {label}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"max {r['max_ms']:.1f} ms{found}{nxt}", flush=True)
        finally:
            if not args.keep:
                drop(args.server, name)

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
