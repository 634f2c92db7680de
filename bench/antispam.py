"""Antispam stage throughput in one process: messages/s through ``Checker.check`` and ``annotate`` (the
whole decision and header work of the stage, without the bus), with DNS answered locally.

    .venv/bin/python bench/antispam.py [--messages 2000] [--concurrency 16]

Three passes over the same messages (a mix of plain text, a DKIM-signed message, an HTML newsletter
with URLs, GTUBE): content checks only; plus the classifier (trained with a few hundred generated
messages, counts in Redis under a throw-away prefix of ``MAILMOAT_REDIS_URL``); plus sender
authentication (SPF/DKIM/DMARC) and a URI block list against the local DNS server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
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
from mailmoat_common.models import Envelope
from mailmoat_common.policy import parse_policy
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
