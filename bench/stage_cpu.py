"""CPU per message of the pure per-message work of four stages, in one process, without the bus:

- **ingress**: an SMTP session per message through the real ``IngressSMTP`` over an in-memory transport
  (the commands, the DATA reader, ``handle_DATA``'s checks, envelope, ``Received`` and trace event, the
  envelope and message encoded as the bus does), without a socket or a broker;
- **antispam**: the stage's handler (``make_handler``: ``Checker.check`` with sender authentication, the
  classifier in Redis and a URI block list, then the report headers and ``Runtime.finish``), DNS answered by
  a local server and then from the resolver's cache, as in a warm process;
- **routing**: ``Router.handle`` (rules none, the verdict action, routes, the trace events);
- **egress**: what egress does around an SMTP transaction that delivered every recipient (``Message``,
  ``decide``, the trace events), without the transaction itself.

    MAILMOAT_REDIS_URL=redis://127.0.0.1:6379/7 .venv/bin/python bench/stage_cpu.py [--messages 400] [--rounds 7]
        [--stage antispam] [--profile out.pstats]

The messages are ``bench/client.py --mix``'s four kinds (text, HTML newsletter with 25 URLs, 100 KB PDF
attachment, DKIM-signed text) and smtp-source's 10 KB text, in turn. Each round runs every message once
through a stage; the figure is the CPU time of the process (``time.process_time``) per message, the best
round of ``--rounds`` (the machine is shared: the best round is the least disturbed), with the median beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis
from client import Mix, build_message

from mailmoat_antispam.bayes import BayesStore, tokens
from mailmoat_antispam.check import Checker
from mailmoat_antispam.content import parse
from mailmoat_antispam.service import make_handler as antispam_handler
from mailmoat_connection_filter.verdict import ConnectionVerdict
from mailmoat_egress.decide import decide as egress_decide
from mailmoat_egress.delivery import Message, make_result
from mailmoat_egress.service import Egress
from mailmoat_platform.models import Envelope, Verdict, utcnow
from mailmoat_platform.runtime import Runtime
from mailmoat_policy import parse_policy
from mailmoat_routing.service import Router
from tests.support.dnsserver import DnsServer

SENDER = "ann@sender.bench.test"
RCPT = "user@rate.bench.test"
POLICY = Path(__file__).resolve().parent / "policy.yaml"


def messages(n: int) -> tuple[list[bytes], Mix]:
    """``n`` messages: the mix's four kinds and the 10 KB text, in turn."""
    mix = Mix(seed=1)
    out = []
    for i in range(n):
        ident = f"m{i:06d}"
        if i % 5 == 4:
            out.append(build_message(ident, SENDER, RCPT, 10240, 1_000_000 + i))
        else:
            out.append(mix.build(i, ident, SENDER, RCPT, 1_000_000 + i))
    return out, mix


class Trace:
    async def record(self, *args: Any, **kwargs: Any) -> None:
        return None


class StubRuntime:
    """What the handlers use of ``Runtime``: the policy, the trace (a no-op), Redis, ``finish``."""

    finish = Runtime.finish

    def __init__(self, service: str, policy, redis=None):
        self.service = service
        self.policy = SimpleNamespace(current=policy)
        self.trace = Trace()
        self.redis = redis
        self.scripts = None
        self.stopping = False

    def require_redis(self) -> None:
        return None


class NoQuarantine:
    async def put(self, *args: Any, **kwargs: Any):
        raise RuntimeError("the bench routes every message")


def measure(label: str, rounds: int, count: int, run) -> dict[str, float]:
    """CPU µs per message of ``run()`` (one pass over ``count`` messages), best and median of ``rounds``."""
    run()  # warm: imports, caches, DNS answers
    per = []
    for _ in range(rounds):
        started = time.process_time()
        run()
        per.append((time.process_time() - started) / count * 1e6)
    result = {"best": min(per), "median": statistics.median(per)}
    print(f"  {label:<10} {result['best']:8.1f} µs/msg best, {result['median']:8.1f} median ({rounds} rounds)",
          flush=True)
    return result


def connection_verdict() -> Verdict:
    detail = ConnectionVerdict.wire(client_ip="127.0.0.1", ipv="NLI", dnsbl=[],
                                    ptr={"result": "none", "names": []},
                                    helo={"name": "mx.sender.bench.test", "syntax": "fqdn"})
    return Verdict(stage="connection_filter", result="pass", detail=detail)


def ingress_envelope(policy) -> Envelope:
    return Envelope(client_ip="127.0.0.1", client_port=40000, helo="mx.sender.bench.test", mail_from=SENDER,
                    rcpt_to=[RCPT], itinerary=policy.pipeline.itinerary(),
                    verdicts={"connection_filter": connection_verdict(),
                              "antivirus": Verdict(stage="antivirus", result="clean", detail={})})


def ingress_runner(loop, policy, msgs: list[bytes]):
    """One SMTP session per message (EHLO, MAIL, RCPT, DATA, QUIT) through the real ``IngressSMTP`` and
    ``IngressHandler`` over an in-memory transport (``tests/support/smtpmemory.py``: the publish encodes the
    envelope and message as the bus does)."""
    from tests.support.smtpmemory import run_session_async

    head = (f"EHLO mx.sender.bench.test\r\nMAIL FROM:<{SENDER}> SIZE=200000\r\nRCPT TO:<{RCPT}>\r\n"
            "DATA\r\n").encode()
    sessions = [head + data.replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n" for data in msgs]

    async def one_pass():
        for data in sessions:
            outcome = await run_session_async(data, policy_=policy)
            assert len(outcome.published) == 1, outcome.lines

    return lambda: loop.run_until_complete(one_pass())


async def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--stage", action="append", choices=("ingress", "antispam", "routing", "egress"))
    parser.add_argument("--profile", help="write a cProfile of the timed rounds of the (one) stage to this file")
    args = parser.parse_args()
    stages = args.stage or ["ingress", "antispam", "routing", "egress"]
    msgs, mix = messages(args.messages)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    redis = aioredis.from_url(os.environ.get("MAILMOAT_REDIS_URL", "redis://127.0.0.1:6379/7"))
    prefix = f"mailmoat:stagecpu:{os.getpid()}"
    from tests.support.dkimkeys import txt_zone

    zone = ('sender.bench.test. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
            '_dmarc.sender.bench.test. 60 IN TXT "v=DMARC1; p=none"\n'
            + txt_zone("bench._domainkey.sender.bench.test", _dkim_record(mix.key)) + "\n")
    results: dict[str, dict[str, float]] = {}
    profiler = cProfile.Profile() if args.profile else None
    try:
        with DnsServer(zone) as dns:
            text = POLICY.read_text() + (
                f"\ndns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 1}}\n"
                f"antispam:\n  bayes: {{key_prefix: '{prefix}', min_spam: 20, min_ham: 20}}\n"
                "  uribl: [{zone: dbl.spamhaus.org}, {zone: multi.surbl.org}]\n")
            text = text.replace("filters: []", "filters: [connection_filter, antivirus, antispam]")
            policy = parse_policy(text)
            store = BayesStore(redis, prefix)
            for i, data in enumerate(msgs[:100]):
                loop.run_until_complete(store.learn(data + b"%d" % i, tokens(parse(data)),
                                                    "spam" if i % 3 == 0 else "ham"))
            print(f"{len(msgs)} messages (mix + 10 KB), CPU per message:")
            envelopes_after: list[tuple[Envelope, bytes]] = []

            def timed(label: str, run) -> None:
                if profiler is not None:
                    run()
                    profiler.enable()
                results[label] = measure(label, args.rounds, len(msgs), run)
                if profiler is not None:
                    profiler.disable()

            if "ingress" in stages:
                timed("ingress", ingress_runner(loop, policy, msgs))

            runtime = StubRuntime("antispam", policy, redis)
            handle = antispam_handler(runtime, Checker(redis=redis))

            # The envelopes as the antispam stage receives them, made before the timing (one set per pass).
            fresh = [[ingress_envelope(policy) for _ in msgs] for _ in range(args.rounds + 3)]

            async def antispam_pass(keep: bool = False):
                for envelope, data in zip(fresh.pop(), msgs, strict=True):
                    out = await handle(envelope, data)
                    if keep:
                        envelopes_after.append((out[0].envelope, out[0].data))

            loop.run_until_complete(antispam_pass(keep=True))
            seen: dict[str, int] = {}
            for envelope, _ in envelopes_after:
                detail = envelope.verdicts["antispam"].detail
                dkim = ",".join(d.get("result", "") for d in (detail.get("auth") or {}).get("dkim") or []) or "none"
                key = f"{envelope.verdicts['antispam'].result}/spf {detail['auth']['spf']['result']}/dkim {dkim}"
                seen[key] = seen.get(key, 0) + 1
            print("  antispam verdicts: " + ", ".join(f"{k} x{n}" for k, n in sorted(seen.items())))
            if "antispam" in stages:
                timed("antispam", lambda: loop.run_until_complete(antispam_pass()))
            router = Router(StubRuntime("routing", policy, redis), quarantine=NoQuarantine())

            if "routing" in stages:
                # Each pass gets its own envelopes (routing may change them); copied before the timing.
                batches = [[(e.model_copy(deep=True), d) for e, d in envelopes_after] for _ in range(args.rounds + 2)]

                async def routing_pass():
                    for envelope, data in batches.pop():
                        await router.handle(envelope, data)

                timed("routing", lambda: loop.run_until_complete(routing_pass()))
            if "egress" in stages:
                routed = [loop.run_until_complete(router.handle(e.model_copy(deep=True), d))[0]
                          for e, d in envelopes_after]

                def egress_pass():
                    for item in routed:
                        envelope, data = item.envelope, item.data
                        pending = list(envelope.rcpt_to)
                        work = envelope.model_copy(update={"rcpt_to": pending})
                        Message(work.mail_from, pending, data, work.smtputf8, work.body_type)
                        results_ = [make_result(r, 250, "2.0.0 Ok: queued") for r in pending]
                        outcome = egress_decide(work, data, results_, utcnow(), policy)
                        Egress._events(envelope, outcome)

                timed("egress", egress_pass)
    finally:
        keys = loop.run_until_complete(_keys(redis, prefix))
        if keys:
            loop.run_until_complete(redis.delete(*keys))
        loop.run_until_complete(redis.aclose())
        loop.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"profile: {args.profile}")


async def _keys(redis, prefix: str) -> list:
    return [k async for k in redis.scan_iter(f"{prefix}:*")]


def _dkim_record(private_pem: bytes) -> str:
    import base64

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


if __name__ == "__main__":
    main()
