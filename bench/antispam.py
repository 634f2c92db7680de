"""Antispam stage throughput in one process: messages/s through ``Checker.check`` and ``annotate`` (the
whole decision and header work of the stage, without the bus), with DNS answered locally.

    .venv/bin/python bench/antispam.py [--messages 2000] [--concurrency 16]

Three passes over the same messages (a mix of plain text, a DKIM-signed message, an HTML newsletter
with URLs, GTUBE): content checks only; plus the classifier (trained with a few hundred generated
messages, counts in Redis under a throw-away prefix of ``MAILMOAT_REDIS_URL``); plus sender
authentication (SPF/DKIM/DMARC) and a URI block list against the local DNS server.

    .venv/bin/python bench/antispam.py --e2e [--e2e-messages 2000]

End to end instead: ``bench/e2e.py --only mailmoat`` (smtp-source → ingress x2 → [antispam] → routing
→ egress → smtp-sink), one round without filter stages and one with ``pipeline.filters: [antispam]``,
DNS (SPF, DKIM, DMARC look-ups of smtp-source's sender domain) answered by a local DNS server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim
import redis.asyncio as aioredis

from mailmoat_antispam.bayes import BayesStore, tokens
from mailmoat_antispam.check import Checker
from mailmoat_antispam.content import parse
from mailmoat_antispam.rules import GTUBE
from mailmoat_antispam.service import annotate
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from tests.support.dkimkeys import make_key, txt_zone
from tests.support.dnsserver import DnsServer

WORDS = ("meeting agenda project review budget thursday report offer cheap pills discount winner prize "
         "account verify password invoice shipping newsletter update team lunch plan").split()


def corpus(n: int, key) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(120)).encode()
        head = (b"From: Ann <ann@sender.test>\r\nTo: bob@example.com\r\nSubject: note %d\r\n"
                b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <b%d@sender.test>\r\n" % (i, i))
        kind = i % 4
        if kind == 0:
            out.append(head + b"\r\n" + body + b"\r\n")
        elif kind == 1:
            msg = head + b"\r\n" + body + b"\r\n"
            out.append(dkim.sign(msg, b"s1", b"sender.test", key.private_pem) + msg)
        elif kind == 2:
            html = b"<html><body><p>" + body + b'</p><a href="http://news.example.test/a">read</a>' \
                   b'<img src="http://img.example.test/p.gif"></body></html>'
            out.append(head + b"List-Unsubscribe: <https://n.test/u>\r\nList-Id: <n.test>\r\n"
                       b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html + b"\r\n")
        else:
            out.append(head + b"\r\n" + GTUBE.encode() + b"\r\n" + body + b"\r\n")
    return out


async def run_pass(checker: Checker, messages: list[bytes], policy, auth: bool, concurrency: int) -> float:
    queue = list(messages)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            data = queue.pop()
            envelope = Envelope(client_ip="127.0.0.1", helo="mx.sender.test", mail_from="ann@sender.test",
                                rcpt_to=["bob@example.com"])
            outcome = await checker.check(envelope, data, policy, authenticate_sender=auth)
            annotate(outcome, envelope, data, policy)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(messages) / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    key = make_key()
    zone = ('sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
            '_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=none"\n'
            + txt_zone("s1._domainkey.sender.test", key.record) + "\nexample.test.uribl.test. 60 IN A 127.0.0.2\n")
    messages = corpus(args.messages, key)
    prefix = f"mailmoat:bench:bayes:{os.getpid()}"
    client = aioredis.from_url(os.environ.get("MAILMOAT_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        with DnsServer(zone) as dns:
            base = f"dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 1}}\n"
            no_bayes = parse_policy(base + "antispam: {bayes: {enabled: false}}")
            with_bayes = parse_policy(base + f"antispam: {{bayes: {{key_prefix: '{prefix}', min_spam: 50, "
                                      "min_ham: 50}}")
            full = parse_policy(base + f"antispam: {{bayes: {{key_prefix: '{prefix}', min_spam: 50, min_ham: 50}}, "
                                "uribl: [{zone: uribl.test}]}")
            store = BayesStore(client, prefix)
            for i, data in enumerate(messages[:400]):
                await store.learn(data, tokens(parse(data)), "spam" if i % 4 == 3 else "ham")
            checker = Checker(redis=client)
            print(f"antispam stage, {args.messages} messages, {args.concurrency} concurrent, one process:")
            for label, policy, auth in (("content checks only", no_bayes, False),
                                        ("+ Bayes (Redis)", with_bayes, False),
                                        ("+ SPF/DKIM/DMARC + URIBL (local DNS)", full, True)):
                rate = await run_pass(checker, messages, policy, auth, args.concurrency)
                print(f"  {label:<40} {rate:8.0f} msgs/s")
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def e2e(messages: int) -> None:
    """End-to-end msgs/s with and without the antispam stage (one bench/e2e.py round each)."""
    bench = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="mailmoat-as-bench-") as tmp, DnsServer("") as dns:
        extra = Path(tmp) / "extra.yaml"
        extra.write_text(f"dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 1}}\n")
        print(f"antispam end to end, {messages} messages of 10 KB, 20 sessions:")
        for label, filters in (("no filter stages", ""), ("pipeline.filters: [antispam]", "antispam")):
            out = Path(tmp) / f"e2e-{filters or 'none'}.json"
            env = {**os.environ, "BENCH_FILTERS": filters, "BENCH_POLICY_EXTRA": str(extra)}
            subprocess.run([sys.executable, str(bench / "e2e.py"), "--only", "mailmoat", "--rounds", "1",
                            "--messages", str(messages), "--latency-messages", "200", "--paced-messages", "0",
                            "--json", str(out)], env=env, check=True, stdout=subprocess.DEVNULL)
            rate = json.loads(out.read_text())["systems"]["mailmoat"]["rate"]
            print(f"  {label:<30} accepted {rate['accepted_per_s']} msgs/s, delivered {rate['delivered_per_s']} "
                  f"msgs/s ({rate['delivered']}), {rate['cpu_ms_per_msg']} ms CPU/msg, "
                  f"load before {rate['load_before']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--e2e", action="store_true", help="end-to-end rates with and without the stage")
    parser.add_argument("--e2e-messages", type=int, default=2000)
    arguments = parser.parse_args()
    if arguments.e2e:
        e2e(arguments.e2e_messages)
    else:
        asyncio.run(main(arguments))
