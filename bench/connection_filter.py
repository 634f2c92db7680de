"""Connection filter benchmark: the stage's own msgs/s, and end-to-end msgs/s with it on and off.

1. stage: ``--messages`` framed messages are preloaded into ``mailmoat.connection_filter`` of a
   private RabbitMQ vhost; then one ``mailmoat run connection_filter`` process moves them to
   ``mailmoat.routing`` (PTR + forward confirmation, HELO checks and one DNS block list zone against
   a local dnslib DNS server, report header, trace event, publish with confirm, ack). Reported:
   msgs/s from the first message taken to the last one arrived (queue depths polled every 20 ms)
   and the stage process's CPU per message. Twice: with the per-process look-up cache (the
   default, ``cache_ttl: 300``) and without it (``cache_ttl: 0``: three DNS queries per message).
2. end to end: ``bench/e2e.py --only mailmoat`` (smtp-source → ingress x2 → … → smtp-sink), without
   filter stages, with ``connection_filter`` and the ingress rate limits on (limits high enough not to
   refuse, so their Redis round trips are counted), and with ``connection_filter`` alone.

    .venv/bin/python bench/connection_filter.py --messages 3000 --e2e-messages 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(BENCH / "hop"), str(REPO)]

import hoplib  # noqa: E402
import procstat  # noqa: E402

from mailmoat_platform.bus import Bus, Publish, stage_queue  # noqa: E402
from mailmoat_platform.models import Envelope  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402

ZONE = """
10.2.0.192.in-addr.arpa. 300 IN PTR mail.example.org.
mail.example.org. 300 IN A 192.0.2.10
10.2.0.192.bl.bench.test. 300 IN A 127.0.0.2
1.0.0.127.in-addr.arpa. 300 IN PTR localhost.bench.test.
localhost.bench.test. 300 IN A 127.0.0.1
"""
ITINERARY = ["connection_filter", "routing", "egress"]
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
"""Flushed by bench/e2e.py when it starts: a database no other bench run uses at the same time."""


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def filter_policy(dns_port: int, cache_ttl: int = 300, rate_limits: bool = True) -> dict:
    """The policy sections that turn the connection filter on (merged into the bench policy)."""
    policy = {
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 2},
        "connection_filter": {
            "ip_block": ["203.0.113.0/24"],
            "dnsbl": [{"zone": "bl.bench.test", "weight": 2, "codes": {"127.0.0.2": "BENCH"}}],
            "ptr": True,
            "helo": True,
            "cache_ttl": cache_ttl,
            "rate_limits": {"connections": 10_000, "messages_per_minute": 1_000_000,
                            "recipients_per_minute": 1_000_000},
        },
    }
    if not rate_limits:
        del policy["connection_filter"]["rate_limits"]
    return policy


async def preload(url: str, count: int, size: int) -> None:
    bus = Bus(url)
    await bus.connect()
    try:
        for stage in ITINERARY:
            await bus.declare_stage(stage)
        data = hoplib.make_data(size)
        sent = 0
        while sent < count:
            batch = min(256, count - sent)
            items = [Publish(stage_queue("connection_filter"), Envelope(
                client_ip="192.0.2.10", client_port=40000, helo="mail.example.org", mail_from="s@example.org",
                rcpt_to=["u@example.com"], size=len(data), itinerary=list(ITINERARY)), data) for _ in range(batch)]
            await bus.publish_many(items, timeout=60)
            sent += batch
    finally:
        await bus.close()


def stage_run(dns_port: int, messages: int, size: int, cache_ttl: int, workdir: Path) -> dict:
    """One stage run on a private vhost: msgs/s and CPU per message of the stage process."""
    with hoplib.private_vhost("mailmoat-cf-bench") as vhost:
        url = hoplib.amqp_url(vhost)
        asyncio.run(preload(url, messages, size))
        policy = {"pipeline": {"filters": ["connection_filter"]}, **filter_policy(dns_port, cache_ttl)}
        path = workdir / f"stage-{cache_ttl}.yaml"
        path.write_text(yaml.safe_dump(policy))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILMOAT_", "OTEL_"))}
        env.update({"MAILMOAT_AMQP_URL": url, "MAILMOAT_REDIS_URL": REDIS_URL, "MAILMOAT_POLICY": str(path),
                    "MAILMOAT_LOG_FORMAT": "text", "MAILMOAT_LOG_LEVEL": "WARNING",
                    "MAILMOAT_CONNECTION_FILTER_METRICS_PORT": "0"})
        out = open(workdir / f"stage-{cache_ttl}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "mailmoat_cli.main", "run", "connection_filter"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            first = last = None
            cpu0 = None
            deadline = time.monotonic() + max(120, messages / 20)
            while time.monotonic() < deadline:
                depth = asyncio.run(hoplib.depths(url, ["connection_filter", "routing"]))
                now = time.perf_counter()
                if first is None:
                    if depth["connection_filter"] < messages or depth["routing"] > 0:
                        first = now
                        sample = procstat.sample(proc.pid)
                        cpu0 = sample.cpu_s if sample else 0.0
                    elif proc.poll() is not None:
                        raise RuntimeError(f"connection_filter exited with {proc.returncode}")
                if depth["routing"] >= messages:
                    last = now
                    break
                time.sleep(0.02)
            sample = procstat.sample(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            out.close()
            asyncio.run(hoplib.purge_queues(url, ITINERARY, settle=1.0))
    if first is None or last is None:
        raise RuntimeError("the stage did not move every message in time")
    wall = last - first
    cpu = (sample.cpu_s if sample else 0.0) - (cpu0 or 0.0)
    return {"cache_ttl": cache_ttl, "messages": messages, "wall_s": round(wall, 3),
            "per_s": round(messages / wall, 1), "cpu_ms_per_msg": round(1000 * cpu / messages, 3),
            "load": round(os.getloadavg()[0], 2)}


def e2e_run(messages: int, extra: dict | None, workdir: Path, label: str) -> dict:
    """bench/e2e.py --only mailmoat, one round; the rate figures."""
    env = dict(os.environ)
    env["BENCH_FILTERS"] = "connection_filter" if extra else ""
    env["BENCH_REDIS_URL"] = REDIS_URL
    if extra:
        path = workdir / "e2e-extra.yaml"
        path.write_text(yaml.safe_dump(extra))
        env["BENCH_POLICY_EXTRA"] = str(path)
    else:
        env.pop("BENCH_POLICY_EXTRA", None)
    out = workdir / f"e2e-{len(list(workdir.glob('e2e-*.json')))}.json"
    subprocess.run([sys.executable, str(BENCH / "e2e.py"), "--only", "mailmoat", "--rounds", "1", "--messages",
                    str(messages), "--latency-messages", "200", "--paced-messages", "0", "--json", str(out)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    rate = json.loads(out.read_text())["systems"]["mailmoat"]["rate"]
    return {"label": label, "accepted_per_s": rate["accepted_per_s"], "delivered_per_s": rate["delivered_per_s"],
            "delivered": rate["delivered"], "cpu_ms_per_msg": rate["cpu_ms_per_msg"],
            "cpu_s": rate["cpu_s"], "load_before": rate["load_before"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=int(os.environ.get("BENCH_CF_MESSAGES", 3000)))
    parser.add_argument("--e2e-messages", type=int, default=int(os.environ.get("BENCH_CF_E2E_MESSAGES", 3000)))
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-stage", action="store_true")
    args = parser.parse_args()
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(), "stage": [], "e2e": []}
    with tempfile.TemporaryDirectory(prefix="mailmoat-cf-bench-") as tmp, DnsServer(ZONE) as dns:
        workdir = Path(tmp)
        for cache_ttl in () if args.skip_stage else (300, 0):
            log(f"stage: {args.messages} messages, cache_ttl {cache_ttl}")
            results["stage"].append(stage_run(dns.port, args.messages, args.size, cache_ttl, workdir))
            log(f"stage: {results['stage'][-1]}")
        if not args.skip_e2e:
            for label, extra in (("no filters", None),
                                 ("connection_filter", filter_policy(dns.port)),
                                 ("connection_filter, no rate limits", filter_policy(dns.port, rate_limits=False))):
                log(f"e2e: {label}")
                results["e2e"].append(e2e_run(args.e2e_messages, extra, workdir, label))
                log(f"e2e: {results['e2e'][-1]}")
    lines = [f"connection filter bench  {results['date']}  {results['cpus']} CPUs  {args.size} B messages"]
    for run in results["stage"]:
        lines.append(f"  stage alone, cache_ttl {run['cache_ttl']:>3}: {run['per_s']:>7} msgs/s "
                     f"({run['messages']} in {run['wall_s']} s), {run['cpu_ms_per_msg']} ms CPU/msg, "
                     f"load {run['load']}")
    for run in results["e2e"]:
        lines.append(f"  end to end, {run['label']:<33}: accepted {run['accepted_per_s']} msgs/s, delivered "
                     f"{run['delivered_per_s']} msgs/s ({run['delivered']}), {run['cpu_ms_per_msg']} ms CPU/msg")
    text = "\n".join(lines)
    print(text)
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results_dir / f"connection-filter-{stamp}.json").write_text(json.dumps(results, indent=2))
    (results_dir / f"connection-filter-{stamp}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
