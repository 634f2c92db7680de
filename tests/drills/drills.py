"""The fault drills: the gateway as processes between real SMTP clients and a recording next hop, on a
private RabbitMQ node and Redis, with one fault injected under load per drill.

Each drill: a fresh vhost and an empty Redis; ingress, routing and egress as processes (routing as
its own hop); SMTP clients sending numbered messages at a steady rate; the fault in the middle of the
load; then the load stops and the drill waits (bounded) until every message answered ``250`` is
delivered, bounced or dead-lettered. It prints what the clients were answered (250 / 4xx / 5xx /
connection failed), what the next hop got (delivered, duplicates), bounced, dead-lettered and lost
(answered 250, and none of those), the recovery time (from the end of the fault until the next hop got
the last copy, duplicates included, of a message accepted before it), the longest delay from a 250 to
the first delivery, and how often egress found a delivery lock held.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiormq

from mailmoat_platform.bus import Bus, FrameError, decode, encode, stage_queue
from mailmoat_platform.models import Envelope, Route
from tests.drills import postgresql
from tests.drills.load import Load, Tally, tally
from tests.drills.servers import PrivateRabbit, PrivateRedis
from tests.support.amqpraw import RawText
from tests.support.gateway import Gateway
from tests.support.sink import SmtpSink

SERVICES = ("ingress", "routing", "egress")

POLICY = """
organization: {{hostname: gw.drill.test}}
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{port}"]
    tls: none
delivery:
  retry_delays: [1, 2, 5]
  expire_after: 3600
  connect_timeout: 5
  command_timeout: 5
pipeline:
  route_at_ingress: false{filters}
"""
COLOCATED_FILTERS = "\n  filters: [dlp]"
"""The colocated drills' itinerary: ingress → dlp → routing → egress, dlp and routing in the ``pipeline`` process
(dlp hands every message over to routing in memory; it needs no DNS or daemon)."""


@dataclass
class Phases:
    warm: float
    """Seconds of load before the fault."""
    after: float
    """Seconds of load after the fault ended."""
    settle: float
    """Longest wait, after the load, for every accepted message to end somewhere."""
    kills: int
    """Kills in the drills that repeat one."""
    outage: float = 60.0
    """Seconds PostgreSQL is away in the records drill."""


FULL = Phases(warm=5, after=6, settle=90, kills=3)
QUICK = Phases(warm=3, after=3, settle=45, kills=1, outage=20.0)


@dataclass
class Context:
    rabbit: PrivateRabbit
    redis: PrivateRedis
    gateway: Gateway
    sink: SmtpSink
    vhost: str
    phases: Phases
    notes: list[str] = field(default_factory=list)
    records: postgresql.Records | None = None
    """With ``records = postgresql``: the database and the proxy in front of it."""
    services: tuple[str, ...] = SERVICES
    """The processes the drill runs (``pipeline`` instead of routing with ``topology = colocated``)."""

    @property
    def amqp_url(self) -> str:
        return self.rabbit.url(self.vhost)

    def restart(self, service: str, sig: int = signal.SIGKILL, down: float = 0.5) -> None:
        self.gateway.kill(service, sig=sig)
        time.sleep(down)
        self.gateway.start_service(service)

    def wait_ready(self, timeout: float = 90) -> None:
        for service in self.services:
            self.gateway.wait_ready(service, timeout=timeout)


@dataclass
class Drill:
    name: str
    fault: Callable[[Context], None]
    sink_delay: float = 0.0
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    records: str = "postgresql"
    """``postgresql`` (the default, as shipped): the trace and the quarantine in a database of the drill's
    own, reached through a proxy (``Context.records``), the recorder running, and every accepted message's
    trace counted; ``redis``: both in the drill's Redis."""
    topology: str = "stages"
    """``colocated``: dlp and routing in one ``pipeline`` process handing messages over in memory (decision 012)."""


# --- faults -----------------------------------------------------------------------------------------


def no_fault(ctx: Context) -> None:
    pass


def kill_each(service: str, sig: int = signal.SIGKILL) -> Callable[[Context], None]:
    def fault(ctx: Context) -> None:
        held = []
        for n in range(ctx.phases.kills):
            if n:
                time.sleep(3)
            if service in ("routing", "egress", "pipeline"):
                # the pipeline's deliveries are its first stage's (dlp), held through routing's work
                value = _gauge(ctx.gateway, "dlp" if service == "pipeline" else service, "mailmoat_in_flight_messages")
                held.append(int(value) if value == value else -1)
            ctx.restart(service, sig)
        if held:
            ctx.notes.append(f"{service} held {'+'.join(map(str, held))} deliveries at the {_signame(sig)}s")

    return fault


def broker(kind: str) -> Callable[[Context], None]:
    def fault(ctx: Context) -> None:
        if kind == "kill":
            ctx.rabbit.kill()
        else:
            ctx.rabbit.stop()
        time.sleep(2)
        took = ctx.rabbit.start()
        ctx.notes.append(f"broker back after {took:.0f}s start-up")
        ctx.wait_ready()

    return fault


def redis_stop(ctx: Context) -> None:
    ctx.redis.stop()
    time.sleep(5)
    ctx.redis.start()


def redis_hang(ctx: Context) -> None:
    ctx.redis.hang()
    time.sleep(8)
    ctx.redis.resume()


def next_hop(reply: str | None = None, delay: float | None = None, seconds: float = 6) -> Callable[[Context], None]:
    def fault(ctx: Context) -> None:
        before = ctx.sink.delay
        ctx.sink.always = reply
        if delay is not None:
            ctx.sink.delay = delay
        time.sleep(seconds)
        ctx.sink.always = None
        ctx.sink.delay = before

    return fault


def postgresql_away(ctx: Context) -> None:
    assert ctx.records is not None
    postgresql.cut(ctx.records, ctx.gateway, ctx.phases.outage)


POISON_COUNT = 5


def poison(ctx: Context) -> None:
    """Deliveries egress cannot use, straight onto its queue: not a frame, a ``traceparent`` header that
    is not UTF-8, an envelope without recipients, one without a route."""
    asyncio.run(_publish_poison(ctx.amqp_url, ctx.sink.port))
    ctx.notes.append(f"{4 * POISON_COUNT} poison deliveries published")


async def _publish_poison(amqp_url: str, port: int) -> None:
    bus = Bus(amqp_url)
    await bus.connect()
    try:
        channel = await bus._chan().get_underlay_channel()
        route = Route(name="route:onprem", kind="smarthost", hosts=[f"127.0.0.1:{port}"], tls="none")
        for n in range(POISON_COUNT):
            ident = f"<drill-poisoned-{n}@drill.test>"  # the load's own are drill-poison-<n>
            data = f"Message-ID: {ident}\r\n\r\nx\r\n".encode()

            def envelope(ident: str = ident, **kw: object) -> Envelope:
                fields = {"mail_from": "drill@example.com", "rcpt_to": ["a@example.com"], "itinerary": ["egress"],
                          "route": route, "message_id_header": ident, **kw}
                return Envelope.model_validate(fields)

            bodies = [
                (b"not a mailmoat frame", {}),
                (encode(envelope(), data), {"traceparent": RawText(b"00-\xff\xfe-not-utf8-01")}),
                (encode(envelope(rcpt_to=[]), data), {}),
                (encode(envelope(route=None), data), {}),
            ]
            for body, headers in bodies:
                properties = aiormq.spec.Basic.Properties(delivery_mode=2, headers=headers)
                await channel.basic_publish(body, routing_key=stage_queue("egress"), properties=properties)
    finally:
        await bus.close()


DRILLS = [
    Drill("baseline", no_fault),
    Drill("slow-next-hop", no_fault, sink_delay=0.5),
    Drill("egress-kill9-slow", kill_each("egress"), sink_delay=0.5),
    Drill("egress-sigterm-slow", kill_each("egress", signal.SIGTERM), sink_delay=0.5),
    Drill("ingress-kill9", kill_each("ingress")),
    Drill("routing-kill9", kill_each("routing")),
    Drill("pipeline-kill9", kill_each("pipeline"), topology="colocated"),
    Drill("pipeline-sigterm", kill_each("pipeline", signal.SIGTERM), topology="colocated"),
    Drill("broker-kill", broker("kill")),
    Drill("broker-stop", broker("stop")),
    Drill("redis-stop", redis_stop),
    Drill("redis-hang", redis_hang),
    Drill("next-hop-451", next_hop("451 4.3.0 Try again later")),
    Drill("next-hop-550", no_fault, rcpt_replies={"c@example.com": "550 5.1.1 No such user here"}),
    Drill("next-hop-stall", next_hop(delay=30)),
    Drill("poison", poison),
    Drill("postgresql-away", postgresql_away, records="postgresql"),
]


# --- running ----------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    tally: Tally
    recovery: float
    max_delay: float
    lock_waits: int
    dead_total: int
    unacked: int
    notes: list[str]
    trace_lost: int = 0
    """Trace events missing in PostgreSQL (drills with ``records = postgresql``)."""


async def _waiting(amqp_url: str, queues: list[str]) -> int:
    """Messages ready in ``queues`` (stage and delay queues): work the gateway has not finished."""
    bus = Bus(amqp_url)
    await bus.connect()
    try:
        return sum([await bus.queue_depth(q) for q in queues])
    finally:
        await bus.close()


def _gauge(gateway: Gateway, service: str, name: str) -> float:
    """A service's own gauge (``name{service="<service>"}``); NaN when the process does not answer."""
    try:
        text = gateway.metrics(service)
    except (AssertionError, OSError):
        return float("nan")
    match = re.search(rf'^{name}\{{service="{service}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _signame(sig: int) -> str:
    return "kill -9" if sig == signal.SIGKILL else signal.Signals(sig).name


def _in_flight(gateway: Gateway) -> float:
    """Deliveries the consuming services hold right now (their in-flight gauges); 1 while one of them
    does not answer (restarting: not idle)."""
    total = 0.0
    for service in ("routing", "egress"):
        value = _gauge(gateway, service, "mailmoat_in_flight_messages")
        total += 1.0 if value != value else value
    return total


async def _dead_letters(amqp_url: str) -> tuple[set[str], int]:
    """Message-IDs (drill messages) and the count of everything on the dead-letter queue."""
    bus = Bus(amqp_url)
    await bus.connect()
    ids: set[str] = set()
    total = 0
    try:
        assert bus.channel is not None
        queue = await bus.channel.declare_queue("mailmoat.dead", passive=True)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            total += 1
            try:
                envelope, _ = decode(message.body)
            except FrameError:
                continue
            if envelope.message_id_header:
                ids.add(envelope.message_id_header.strip("<>"))
    finally:
        await bus.close()
    return ids, total


def _lock_waits(gateway: Gateway) -> int:
    """Lines in egress's log (all its runs) where it found a copy's delivery lock held."""
    path = gateway.log_path("egress")
    text = path.read_text(errors="replace") if path.exists() else ""
    return len(re.findall(r"(being delivered|is held) by another consumer", text))


def run_drill(drill: Drill, rabbit: PrivateRabbit, redis: PrivateRedis, workdir: Path, phases: Phases,
              index: int) -> Result:
    vhost = rabbit.add_vhost(f"drill-{index}-{drill.name}")
    redis.flush()
    with contextlib.ExitStack() as stack:
        records = stack.enter_context(postgresql.records_database(drill.name)) if drill.records == "postgresql" \
            else None
        return _run(drill, rabbit, redis, workdir, phases, vhost, records)


def _run(drill: Drill, rabbit: PrivateRabbit, redis: PrivateRedis, workdir: Path, phases: Phases, vhost: str,
         records: postgresql.Records | None) -> Result:
    env = {"MAILMOAT_RECORDS": "redis"} if records is None else {"MAILMOAT_RECORDS": "postgresql",
                                                                  "MAILMOAT_DATABASE_URL": records.proxied_url}
    colocated = drill.topology == "colocated"
    if colocated:
        env["MAILMOAT_TOPOLOGY"] = "colocated"
    base = tuple("pipeline" if s == "routing" else s for s in SERVICES) if colocated else SERVICES
    services = base if records is None else (*base, "recorder")
    with SmtpSink() as sink:
        sink.delay = drill.sink_delay
        for rcpt, reply in drill.rcpt_replies.items():
            sink.reply_to(rcpt, reply)
        gateway = Gateway(workdir / drill.name, rabbit.url(vhost), redis.url, ingress_workers=1,
                          policy_text=POLICY.format(port=sink.port, filters=COLOCATED_FILTERS if colocated else ""),
                          ready_timeout=60, extra_env=env)
        with gateway:
            gateway.start(services)
            ctx = Context(rabbit, redis, gateway, sink, vhost, phases, records=records, services=base)
            load = Load(gateway.smtp_port, drill.name).start()
            try:
                time.sleep(phases.warm)
                drill.fault(ctx)
                fault_end = time.time()
                time.sleep(phases.after)
            finally:
                load.stop()
            dead: set[str] = set()
            dead_total = 0
            deadline = time.monotonic() + phases.settle
            queues = [q for q in rabbit.queue_counts(vhost) if q.startswith("mailmoat.") and q != "mailmoat.dead"]
            idle = 0
            while time.monotonic() < deadline:
                ids, total = asyncio.run(_dead_letters(rabbit.url(vhost)))
                dead |= ids
                dead_total += total
                result = tally(load, sink, dead)
                # Done when every accepted message ended somewhere and nothing waits in a queue
                # (a copy that will turn out a duplicate may still wait in a delay queue).
                busy = result.pending or _in_flight(gateway) or asyncio.run(_waiting(rabbit.url(vhost), queues))
                idle = 0 if busy else idle + 1
                if idle >= 2:
                    break
                time.sleep(1.0)
            time.sleep(1.0)  # a duplicate still on its way
            ids, total = asyncio.run(_dead_letters(rabbit.url(vhost)))
            dead |= ids
            dead_total += total
            result = tally(load, sink, dead)
            counts = rabbit.queue_counts(vhost)
            for _ in range(3):  # a quorum queue's figures in rabbitmqctl lag its state by a few seconds
                if not any(u for _, u in counts.values()):
                    break
                time.sleep(2)
                counts = rabbit.queue_counts(vhost)
            unacked = sum(u for _, u in counts.values())
            # Ready counts come from the settle loop (rabbitmqctl's lag behind a quorum queue's own).
            left = {q: u for q, (_, u) in counts.items() if u}
            if left:
                ctx.notes.append("unacked at the end: " + ", ".join(f"{q} {u}" for q, u in sorted(left.items())))
            lock_waits = _lock_waits(gateway)
            recovery, max_delay = _times(load, sink, fault_end)
            trace_lost = 0
            if records is not None:
                trace_lost = _trace_notes(ctx, records, load)
    return Result(drill.name, result, recovery, max_delay, lock_waits, dead_total, unacked, ctx.notes, trace_lost)


def _trace_notes(ctx: Context, records: postgresql.Records, load: Load) -> int:
    """The records drill's own figures (SMTP replies before and during the outage, the recorder's catch-up,
    the trace counted in PostgreSQL) as notes; the trace events lost."""
    ctx.notes.extend(records.notes)
    if records.cut_at:
        ctx.notes.append("SMTP before the outage: " + postgresql.latencies(load.sent, 0.0, records.cut_at))
        ctx.notes.append("SMTP during the outage: " + postgresql.latencies(load.sent, records.cut_at,
                                                                            records.restored_at))
    count = postgresql.count_trace(records, load, ctx.gateway)
    ctx.notes.append(f"trace: {count.found} events in PostgreSQL for {count.messages} messages answered 250 "
                     f"(expected {count.messages} x {count.per_message} = {count.messages * count.per_message})"
                     + (f"; {len(count.short)} short, first {count.short[:3]}" if count.short else ""))
    return count.lost + (len(count.short) if count.short and not count.lost else 0)


def _times(load: Load, sink: SmtpSink, fault_end: float) -> tuple[float, float]:
    """(seconds from the end of the fault until the next hop got the last copy, duplicates included,
    of a message accepted before it: the gateway has worked off what the fault left; the longest time
    from a 250 to the first delivery of that message)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    with sink.lock:
        for item in sink.messages:
            match = re.search(rb"Message-ID: <(drill-[^>]+)>", item.data)
            if match and item.mail_from:
                ident = match.group(1).decode()
                first.setdefault(ident, item.at)
                last[ident] = item.at
    accepted = [s for s in load.sent if s.reply == 250]
    before = [last[s.ident] for s in accepted if s.at <= fault_end and s.ident in last]
    recovery = max(0.0, max(before, default=fault_end) - fault_end)
    delays = [first[s.ident] - s.at for s in accepted if s.ident in first]
    return recovery, max(delays, default=0.0)
