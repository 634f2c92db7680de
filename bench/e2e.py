"""End-to-end benchmark: mailmoat (every service a process) against a private Postfix relay.

For each system, on loopback:

1. rate: Postfix's ``smtp-source`` sends N messages of --size bytes in --sessions parallel sessions
   (one message per connection, as smtp-source does) into the system, which relays them to
   Postfix's ``smtp-sink``. Reported: accepted msgs/s (N / smtp-source wall time) and end-to-end
   msgs/s (N / time from the first connection until the sink counted the N-th message), and the CPU
   time each process used during this phase.
2. latency: ``bench/client.py`` (aiosmtplib, --sessions sessions, persistent connections) sends
   messages stamped with X-Bench-Id into the system, which relays them to ``bench/sink.py``
   (aiosmtpd) that timestamps each arrival; latency = arrival - the client's 250 for the DATA.
   Once closed loop (as fast as the sessions go) and once paced at --paced-rate msgs/s.
3. peak RSS (VmHWM) of every process of the system, read at the end.

With --hygiene (BENCH_HYGIENE=1): mailmoat with every filter stage against Postfix with Rspamd as its
milter, one clamd and one NXDOMAIN resolver shared (bench/hygiene.py), rounds of the realistic mix
(client.py --mix) after the rate rounds, and the paced runs at half the slower system's rate.

BENCH_RABBITMQ_CONF='raft.wal_max_size_bytes = 67108864' (rabbitmq.conf lines, ``;`` between them): mailmoat's
broker is a RabbitMQ node of the bench's own with those settings instead of the machine's (its CPU counted
as RabbitMQ's).

Everything started here (gateway, Postfix instance, sinks, RabbitMQ vhost or node, temp dir) is stopped
and removed when the run ends, also on errors and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mailmoat_ingress.direct import routes_at_ingress
from mailmoat_policy import load_policy

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import hygiene  # noqa: E402
import procstat  # noqa: E402
import profiles  # noqa: E402
from postfix_relay import PostfixRelay  # noqa: E402

sys.path.insert(0, str(BENCH.parent))
from tests.drills.servers import PrivateRabbit  # noqa: E402  (the drills' private RabbitMQ node)

BENCH_DATABASE = "postgresql://postgres@127.0.0.1:5432/mailmoat_bench"
"""The bench's own records database (dropped, created and migrated at each start): ``BENCH_DATABASE_URL``."""

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
RATE_RCPT = "bench@rate.bench.test"
LATENCY_RCPT = "bench@latency.bench.test"
SENDER = "bench@sender.bench.test"


class BenchError(RuntimeError):
    pass


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- ports -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_block(size: int, tries: int = 50) -> int:
    """A base port whose next ``size`` ports are free on 0.0.0.0 (metrics listeners bind there)."""
    for _ in range(tries):
        base = free_port()
        socks: list[socket.socket] = []
        try:
            for offset in range(size):
                sock = socket.socket()
                sock.bind(("0.0.0.0", base + offset))
                socks.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise BenchError("no free block of ports")


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- sinks -------------------------------------------------------------------------------------


class CountingSink:
    """Postfix's smtp-sink with its running counter (-c) read by a thread, timestamped."""

    COUNTER = re.compile(rb"mesg=(\d+)")

    def __init__(self, port: int):
        self.port = port
        self.count = 0
        self.last_change = time.monotonic()
        self.first_at: float | None = None
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-c", f"127.0.0.1:{port}", "512"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_port(port, 10)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.monotonic()
            found = self.COUNTER.findall(chunk)
            if found:
                value = int(found[-1])
                with self._lock:
                    if value > self.count:
                        if self.first_at is None:
                            self.first_at = now
                        self.count = value
                        self.last_change = now

    def snapshot(self) -> tuple[int, float]:
        with self._lock:
            return self.count, self.last_change

    def stop(self) -> None:
        stop_process(self.proc)


class TimestampSink:
    """bench/sink.py as a process; its stdout tells the running count."""

    def __init__(self, port: int, out: Path):
        self.port = port
        self.out = out
        self.count = 0
        self.last_change = time.monotonic()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "sink.py"), "--port", str(port), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_port(port, 20)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("received "):
                value = int(line.split()[1])
                with self._lock:
                    if value > self.count:
                        self.count = value
                        self.last_change = time.monotonic()

    def snapshot(self) -> tuple[int, float]:
        with self._lock:
            return self.count, self.last_change

    def arrivals(self) -> dict[str, list[int]]:
        """Stop the sink and read what it recorded: id -> arrival times (ns)."""
        stop_process(self.proc, timeout=30)
        return self.arrivals_now()

    def arrivals_now(self) -> dict[str, list[int]]:
        """What the sink recorded so far (it writes each arrival before it reports the new count)."""
        found: dict[str, list[int]] = {}
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                ident, _, ns = line.partition(" ")
                found.setdefault(ident, []).append(int(ns))
        return found

    def stop(self) -> None:
        stop_process(self.proc)


def wait_delivered(sink: CountingSink | TimestampSink, target: int, stall: float, limit: float) -> tuple[int, float]:
    """Wait until the sink counted ``target`` messages, no progress for ``stall`` s, or ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        count, last = sink.snapshot()
        if count >= target:
            return count, last
        if time.monotonic() - last > stall:
            log(f"no delivery for {stall:.0f}s; stopping the wait at {count}/{target}")
            return count, last
        time.sleep(0.05)
    count, last = sink.snapshot()
    log(f"gave up waiting after {limit:.0f}s at {count}/{target}")
    return count, last


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


# --- systems under test ------------------------------------------------------------------------


BROKER: PrivateRabbit | None = None
"""With ``BENCH_RABBITMQ_CONF``: the private RabbitMQ node mailmoat uses instead of the machine's."""


def private_broker(workdir: Path) -> PrivateRabbit | None:
    """``BENCH_RABBITMQ_CONF`` (rabbitmq.conf lines, ``;`` between them): a RabbitMQ node of the bench's own
    (tests/drills/servers.py) with those settings, started and made mailmoat's broker; None without it."""
    conf = os.environ.get("BENCH_RABBITMQ_CONF", "").strip()
    if not conf:
        return None
    broker = PrivateRabbit(workdir / "broker")
    settings = broker.dir / "rabbitmq.conf"
    settings.write_text(settings.read_text() + "".join(f"{line.strip()}\n" for line in conf.split(";") if line.strip()))
    log(f"starting a private RabbitMQ node for mailmoat: {conf}")
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


def broker_pid(broker: PrivateRabbit) -> int | None:
    """The Erlang VM of the private node (the ``beam.smp`` started with its ``RABBITMQ_NODENAME``)."""
    wanted = f"RABBITMQ_NODENAME={broker.node}".encode()
    for pid in procstat.find_by_comm("beam.smp"):
        with contextlib.suppress(OSError):
            if wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
    return None


class RabbitVhost:
    """A vhost of its own on the machine's RabbitMQ, or on ``BROKER`` when the bench runs one."""

    def __init__(self) -> None:
        self.name = f"mailmoat-bench-{uuid.uuid4().hex[:8]}"
        self.created = False

    def _ctl(self, *args: str, check: bool, timeout: float) -> None:
        if BROKER is not None:
            result = BROKER.ctl(*args, timeout=timeout)
            if check and result.returncode != 0:
                raise BenchError(f"rabbitmqctl {' '.join(args)}: {result.stderr.decode(errors='replace')}")
        else:
            subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True, timeout=timeout)

    def create(self) -> str:
        self._ctl("add_vhost", self.name, check=True, timeout=60)
        self.created = True
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*", check=True, timeout=60)
        port = BROKER.port if BROKER is not None else 5672
        return f"amqp://guest:guest@127.0.0.1:{port}/{self.name}"

    def delete(self) -> None:
        if self.created:
            self._ctl("delete_vhost", self.name, check=False, timeout=120)
            self.created = False


class Mailmoat:
    """``python -m mailmoat_cli.main run all`` with a bench policy, on a fresh vhost and a flushed Redis db
(``BENCH_REDIS_DB``, default 14)."""

    name = "mailmoat"

    def __init__(self, workdir: Path, rate_sink: int, latency_sink: int, workers: int, log_level: str,
                 shared: hygiene.SharedParts | None = None, dlp: bool = False):
        """``shared``: the hygiene comparison's DNS server and clamd (every filter stage on, ``--hygiene``)."""
        self.workdir = workdir
        self.shared = shared
        self.workers = workers
        self.smtp_port = free_port()
        self.vhost = RabbitVhost()
        policy = yaml.safe_load((BENCH / "policy.yaml").read_text())
        policy["routes"]["rate-sink"]["hosts"] = [f"127.0.0.1:{rate_sink}"]
        policy["routes"]["latency-sink"]["hosts"] = [f"127.0.0.1:{latency_sink}"]
        filters = [f for f in os.environ.get("BENCH_FILTERS", "").split(",") if f]
        policy["pipeline"]["filters"] = filters
        # BENCH_ROUTING_HOP=1: every message through the routing stage (pipeline.route_at_ingress: false);
        # by default a pipeline without filter stages is routed at ingress, as the policy's default.
        if routing_hop():
            policy["pipeline"]["route_at_ingress"] = False
        if shared is not None:
            policy = hygiene.hygiene_policy(policy, shared.dns.port, dlp)
            filters = policy["pipeline"]["filters"]
            # BENCH_CF_AT_SMTP=1: ingress runs the connection filter during SMTP (decision 013), no hop for it.
            if os.environ.get("BENCH_CF_AT_SMTP", "0") not in ("", "0"):
                policy["connection_filter"]["at_smtp"] = True
        if os.environ.get("BENCH_POLICY_EXTRA"):  # sections added to the bench policy (bench/connection_filter.py)
            policy.update(yaml.safe_load(Path(os.environ["BENCH_POLICY_EXTRA"]).read_text()) or {})
        self.policy_path = workdir / "policy.yaml"
        self.policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
        # The pipeline measured, decided as the gateway decides it from this policy.
        routed_at_ingress = routes_at_ingress(load_policy(self.policy_path))
        self.topology = " -> ".join(["ingress (routing at ingress)", "egress"] if routed_at_ingress
                                    else ["ingress", *filters, "routing", "egress"])
        if load_policy(self.policy_path).connection_filter.at_smtp:
            self.topology += " (the connection filter run by ingress at SMTP time, its stage idle)"
        # BENCH_TOPOLOGY=colocated: every filter stage and routing in one process (decision 012).
        self.process_topology = os.environ.get("BENCH_TOPOLOGY") or "stages"
        if self.process_topology == "colocated":
            self.topology += " (filters and routing in one pipeline process, handed over in memory)"
        # The records as shipped: in PostgreSQL (the recorder and the console run); BENCH_RECORDS=redis for
        # the Redis records. Set explicitly, whatever the default of the code measured.
        self.records = os.environ.get("BENCH_RECORDS") or "postgresql"
        self.database_url = os.environ.get("BENCH_DATABASE_URL", BENCH_DATABASE)
        self.stages = [("ingress", i) for i in range(workers)] + [(f, 0) for f in filters] + [
            ("routing", 0), ("egress", 0)] + ([("recorder", 0)] if self.records == "postgresql" else [])
        self.ports = {"ingress": free_block(workers)}
        for stage in ("routing", "egress", "connection_filter", "antivirus", "antispam", "dlp", "devmailbox",
                      "recorder", "console"):
            self.ports[stage] = free_block(1)
        self.log_level = log_level
        self.redis_url = os.environ.get("BENCH_REDIS_URL") or (
            f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', '14')}")
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "gateway.log"

    def start(self, timeout: float = 90.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILMOAT_", "OTEL_"))}
        env.update({
            "MAILMOAT_AMQP_URL": self.vhost.create(),
            "MAILMOAT_REDIS_URL": self.redis_url,
            "MAILMOAT_POLICY": str(self.policy_path),
            "MAILMOAT_SMTP_HOST": "127.0.0.1",
            "MAILMOAT_SMTP_PORT": str(self.smtp_port),
            "MAILMOAT_INGRESS_WORKERS": str(self.workers),
            "MAILMOAT_LOG_FORMAT": "text",
            "MAILMOAT_LOG_LEVEL": self.log_level,
            **{f"MAILMOAT_{s.upper()}_METRICS_PORT": str(p) for s, p in self.ports.items()},
        })
        # The trace through mailmoat.trace to the recorder and PostgreSQL (the bench's own database, made
        # afresh and migrated here), or in Redis with BENCH_RECORDS=redis.
        env["MAILMOAT_RECORDS"] = self.records
        env["MAILMOAT_TOPOLOGY"] = self.process_topology
        env["MAILMOAT_DATABASE_URL"] = self.database_url
        env["MAILMOAT_CONSOLE_PORT"] = str(free_port())
        if self.records == "postgresql":
            fresh_database(self.database_url)
            done = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "db", "upgrade"], env=env,
                                  capture_output=True, text=True, timeout=180)
            if done.returncode != 0:
                raise BenchError(f"mailmoat db upgrade failed: {done.stderr[-2000:]}")
            # An account, as a deployment has after its first start: the console measured is one restarted on
            # its database, not the first start that makes the first admin (an argon2 hash, 64 MiB while it
            # runs, in the console's peak RSS). BENCH_CONSOLE_FIRST_START=1 measures that first start.
            if os.environ.get("BENCH_CONSOLE_FIRST_START", "0") in ("", "0"):
                done = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "console", "create-admin", "admin"],
                                      env=env, capture_output=True, text=True, timeout=120)
                if done.returncode != 0:
                    raise BenchError(f"mailmoat console create-admin failed: {done.stderr[-2000:]}")
        if self.shared is not None:
            env["MAILMOAT_CLAMD_ADDRESS"] = self.shared.clamd.address
        self._flush_redis()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailmoat_cli.main", "run", "all"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        pending = list(self.stages)
        while pending and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"mailmoat run all exited with {self.proc.returncode}:\n{self.log_tail()}")
            pending = [s for s in pending if not self._ready(*s)]
            time.sleep(0.2)
        if pending:
            raise BenchError(f"not ready after {timeout:.0f}s: {pending}\n{self.log_tail()}")
        wait_port(self.smtp_port, 10)

    def _ready(self, stage: str, worker: int) -> bool:
        url = f"http://127.0.0.1:{self.ports[stage] + worker}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def _flush_redis(self) -> None:
        subprocess.run(["redis-cli", "-u", self.redis_url, "flushdb"], capture_output=True, timeout=30)

    def pids(self) -> dict[str, int]:
        """Service name -> pid of every child of ``run all``."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        return {procstat.service_name(pid): pid for pid in procstat.children(self.proc.pid)}

    def all_pids(self) -> dict[str, int]:
        out = dict(self.pids())
        if self.proc is not None:
            out["supervisor"] = self.proc.pid
        return out

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        try:
            if self.proc is not None:
                stop_process(self.proc, timeout=45)
        finally:
            self.vhost.delete()
            self._flush_redis()


class Postfix:
    name = "postfix"

    def __init__(self, workdir: Path, rate_sink: int, latency_sink: int, shared: hygiene.SharedParts | None = None):
        """``shared``: with Rspamd as its milter (its antivirus module on the shared clamd, DNS on the shared
        server), for the hygiene comparison."""
        self.smtp_port = free_port()
        extra = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_POSTFIX_PARAMS", "").split(",") if "=" in kv)
        self.rspamd: hygiene.RspamdMilter | None = None
        if shared is not None:
            self.rspamd = hygiene.RspamdMilter(workdir / "rspamd", dns_port=shared.dns.port,
                                               clamd_port=shared.clamd.port)
            extra = {**hygiene.milter_params(self.rspamd.proxy_port), **extra}
            self.name = "postfix+rspamd"
        self.relay = PostfixRelay(
            self.smtp_port, f"127.0.0.1:{rate_sink}",
            transports={"latency.bench.test": f"127.0.0.1:{latency_sink}"},
            base=workdir / "postfix", extra=extra,
        )

    def start(self) -> None:
        if self.rspamd is not None:
            hygiene.flush_rspamd_redis()
            self.rspamd.start()
        self.relay.start()

    def pids(self) -> dict[str, int]:
        return self.all_pids()

    def all_pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for pid in self.relay.pids() + (self.rspamd.pids() if self.rspamd is not None else []):
            name = procstat.service_name(pid)
            key, n = name, 1
            while key in out:
                n += 1
                key = f"{name}#{n}"
            out[key] = pid
        return out

    def log_tail(self, lines: int = 40) -> str:
        return self.relay.log_tail(lines) + ("\n" + self.rspamd.tail(lines) if self.rspamd is not None else "")

    def stop(self) -> None:
        try:
            self.relay.stop()
        finally:
            if self.rspamd is not None:
                self.rspamd.stop()
                hygiene.flush_rspamd_redis()


def fresh_database(url: str) -> None:
    """Drop the bench's records database (its own, named by ``url``) so that each run starts empty;
    ``mailmoat db upgrade`` creates and migrates it again."""
    import psycopg
    from psycopg import sql

    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    if not name or not str(name).startswith("mailmoat_bench"):
        raise BenchError(f"refusing to drop {name!r}: the bench drops only databases named mailmoat_bench*")
    server = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


# --- measurements ------------------------------------------------------------------------------


@dataclass
class Cpu:
    """CPU seconds used between two samples, by process name (``smtpd#3`` counts as ``smtpd``).

    Keyed by pid: a process started in between counts from zero; one that exited in between is
    found in its parent's reaped-children time (Postfix's master waits for its daemons), reported
    as ``<parent>: exited children``.
    """

    before: dict[int, tuple[float, float]] = field(default_factory=dict)

    @staticmethod
    def read(pids: dict[str, int]) -> dict[int, tuple[str, float, float]]:
        out = {}
        for name, pid in pids.items():
            s = procstat.sample(pid)
            if s is not None:
                out[pid] = (name.split("#")[0], s.cpu_s, s.children_cpu_s)
        return out

    def start(self, pids: dict[str, int]) -> None:
        self.before = {pid: (own, kids) for pid, (_, own, kids) in self.read(pids).items()}

    def delta(self, pids: dict[str, int]) -> dict[str, float]:
        used: dict[str, float] = {}
        for pid, (name, own, kids) in self.read(pids).items():
            own0, kids0 = self.before.get(pid, (0.0, 0.0))
            used[name] = used.get(name, 0.0) + own - own0
            if kids - kids0 > 0.005:
                key = f"{name}: exited children"
                used[key] = used.get(key, 0.0) + kids - kids0
        return {name: round(value, 3) for name, value in used.items()}


def infra_pids(shared: hygiene.SharedParts | None = None) -> dict[str, int]:
    """RabbitMQ, Redis and PostgreSQL (every process of it: its backends serve the recorder and the
    console), and with ``shared`` the clamd and the DNS server both systems use."""
    out = {}
    for comm, label in (("beam.smp", "rabbitmq"), ("redis-server", "redis")):
        pids = procstat.find_by_comm(comm)
        if pids:
            out[label] = pids[0]
    if BROKER is not None and (pid := broker_pid(BROKER)) is not None:
        out["rabbitmq"] = pid
    for index, pid in enumerate(procstat.find_by_comm("postgres")):
        out[f"postgresql#{index}"] = pid
    if shared is not None:
        for label, part in (("clamd", shared.clamd), ("unbound", shared.dns)):
            if part.proc is not None:
                out[label] = part.proc.pid
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def loadavg() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return float(Path("/proc/loadavg").read_text().split()[0])
    return float("nan")


def wait_quiet(threshold: float, limit: float) -> float:
    """Wait (at most ``limit`` s) until the 1-minute load average is below ``threshold``."""
    deadline = time.monotonic() + limit
    load = loadavg()
    if load >= threshold and limit > 0:
        log(f"load average {load:.2f} >= {threshold}; waiting up to {limit:.0f}s for a quieter machine")
    while load >= threshold and time.monotonic() < deadline:
        time.sleep(5)
        load = loadavg()
    return load


def rate_phase(system, n: int, sessions: int, size: int, sink: CountingSink, profile_dir: Path | None,
               shared: hygiene.SharedParts | None = None) -> dict:
    pids = system.all_pids()
    infra = infra_pids(shared)
    dns0 = shared.dns_queries() if shared is not None else 0
    cpu, cpu_infra = Cpu(), Cpu()
    spies = profiles.start(system.pids(), profile_dir) if profile_dir is not None else []
    cpu.start(pids)
    cpu_infra.start(infra)
    base, _ = sink.snapshot()
    load_before = loadavg()
    busy0 = procstat.machine_busy_s()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink0 = procstat.sample(sink.proc.pid)
    log(f"{system.name}: smtp-source -s {sessions} -m {n} -l {size} (load average {load_before:.2f})")
    started = time.monotonic()
    done = subprocess.run(
        [SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-l", str(size), "-f", SENDER, "-t", RATE_RCPT,
         f"127.0.0.1:{system.smtp_port}"],
        capture_output=True, text=True, timeout=max(600, n / 5),
    )
    source_wall = time.monotonic() - started
    count, last = wait_delivered(sink, base + n, stall=60, limit=max(300, n / 5))
    delivered = count - base
    e2e_wall = last - started
    cpu_used = cpu.delta(system.all_pids())
    infra_used = cpu_infra.delta(infra)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink1 = procstat.sample(sink.proc.pid)
    load_gen = (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
                + (sink1.cpu_s - sink0.cpu_s if sink0 and sink1 else 0.0))
    other = procstat.machine_busy_s() - busy0 - sum(cpu_used.values()) - sum(infra_used.values()) - load_gen
    top = profiles.stop(spies) if spies else {}
    dns_asked = shared.dns_queries() - dns0 if shared is not None else 0
    result = {
        "messages": n,
        "smtp_source_exit": done.returncode,
        "smtp_source_stderr": done.stderr.strip()[-2000:],
        "smtp_source_wall_s": round(source_wall, 3),
        "accepted_per_s": round(n / source_wall, 1),
        "delivered": delivered,
        "e2e_wall_s": round(e2e_wall, 3),
        "delivered_per_s": round(delivered / e2e_wall, 1) if e2e_wall > 0 else None,
        "cpu_s": cpu_used,
        "cpu_total_s": round(sum(cpu_used.values()), 2),
        "cpu_ms_per_msg": round(1000 * sum(cpu_used.values()) / max(1, delivered), 3),
        "infra_cpu_s": infra_used,
        "load_generators_cpu_s": round(load_gen, 2),
        "other_cpu_s": round(max(0.0, other), 2),
        "cpu_capacity_s": round((os.cpu_count() or 1) * e2e_wall, 2),
        "load_before": load_before,
        "load_after": loadavg(),
    }
    if shared is not None:
        result["dns_queries_per_msg"] = round(dns_asked / max(1, delivered), 2)
    if top:
        result["profile"] = top
    log(f"{system.name}: accepted {result['accepted_per_s']}/s, delivered {delivered}/{n} "
        f"at {result['delivered_per_s']}/s")
    return result


def latency_phase(system, count: int, sessions: int, size: int, sink: TimestampSink, rate: float,
                  workdir: Path, label: str, mix: bool = False, shared: hygiene.SharedParts | None = None) -> dict:
    """``bench/client.py`` through the system to the timestamping sink: closed loop (``rate`` 0) or paced;
    ``mix``: the realistic mix instead of ``size``-byte texts. Latency figures from the sink's arrivals;
    delivered msgs/s = messages / (first send -> last arrival); CPU of every process meanwhile."""
    out = workdir / f"{system.name}-{label}-sent.txt"
    base, _ = sink.snapshot()
    log(f"{system.name}: client {label}: {count} messages{' (mix)' if mix else ''}, {sessions} sessions"
        + (f", paced at {rate:g}/s" if rate else ", closed loop"))
    infra = infra_pids(shared)
    cpu, cpu_infra = Cpu(), Cpu()
    cpu.start(system.all_pids())
    cpu_infra.start(infra)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink0 = procstat.sample(sink.proc.pid)
    dns0 = shared.dns_queries() if shared is not None else 0
    load_before = loadavg()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(BENCH / "client.py"), "--port", str(system.smtp_port), "--count", str(count),
         "--sessions", str(sessions), "--size", str(size), "--rate", str(rate), "--rcpt", LATENCY_RCPT,
         "--sender", SENDER, "--out", str(out), *(["--mix"] if mix else [])],
        capture_output=True, text=True, timeout=max(600, count / 2),
    )
    wall = time.monotonic() - started
    try:
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"latency client failed: {done.stdout[-1000:]} {done.stderr[-2000:]}") from None
    accepted = summary["accepted"]
    delivered, last = wait_delivered(sink, base + accepted, stall=60, limit=max(300, count / 5))
    cpu_used = cpu.delta(system.all_pids())
    infra_used = cpu_infra.delta(infra)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink1 = procstat.sample(sink.proc.pid)
    time.sleep(0.3)  # the sink writes an arrival before it reports the count; let its last lines land
    phase = {"label": label, "count": count, "rate": rate, "mix": mix, "client": summary,
             "client_wall_s": round(wall, 3), "delivered_at_sink": delivered - base,
             "e2e_wall_s": round(last - started, 3), "load_before": load_before, "load_after": loadavg(),
             "cpu_s": cpu_used, "cpu_total_s": round(sum(cpu_used.values()), 2),
             "cpu_ms_per_msg": round(1000 * sum(cpu_used.values()) / max(1, delivered - base), 3),
             "infra_cpu_s": infra_used,
             "load_generators_cpu_s": round(kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
                                            + (sink1.cpu_s - sink0.cpu_s if sink0 and sink1 else 0.0), 2)}
    if shared is not None:
        phase["dns_queries_per_msg"] = round((shared.dns_queries() - dns0) / max(1, delivered - base), 2)
    latency_figures(phase, out, sink.arrivals_now())
    return phase


def latency_figures(phase: dict, sent_file: Path, arrivals: dict[str, list[int]]) -> None:
    """p50/p99/max accept -> delivered (ms), losses, duplicates, and delivered msgs/s (first send -> last
    arrival) of one client run, from the client's records and the sink's arrivals."""
    lat_ms: list[float] = []
    missing = 0
    duplicates = 0
    first_sent: int | None = None
    last_arrival = 0
    for line in sent_file.read_text().splitlines():
        ident, sent, accepted = line.split()
        first_sent = int(sent) if first_sent is None else min(first_sent, int(sent))
        times = arrivals.get(ident)
        if not times:
            missing += 1
            continue
        duplicates += len(times) - 1
        last_arrival = max(last_arrival, min(times))
        lat_ms.append((min(times) - int(accepted)) / 1e6)
    span = (last_arrival - first_sent) / 1e9 if first_sent is not None and last_arrival else 0.0
    phase.update({
        "delivered": len(lat_ms), "missing": missing, "duplicates": duplicates,
        "p50_ms": round(percentile(lat_ms, 50), 1), "p99_ms": round(percentile(lat_ms, 99), 1),
        "max_ms": round(max(lat_ms), 1) if lat_ms else None,
        "client_accepted_per_s": round(phase["client"]["accepted"] / phase["client"]["wall_s"], 1),
        "delivered_per_s": round(len(lat_ms) / span, 1) if span > 0 else None,
    })


def memory(system) -> dict:
    per: dict[str, int] = {}
    pss: dict[str, int] = {}
    for name, pid in system.all_pids().items():
        s = procstat.sample(pid)
        if s is not None:
            per[name] = s.hwm_kb
            pss[name] = s.pss_kb
    return {"peak_rss_kb": per, "peak_rss_sum_mb": round(sum(per.values()) / 1024, 1),
            "pss_kb": pss, "pss_sum_mb": round(sum(pss.values()) / 1024, 1)}


@dataclass
class Unit:
    """A system under test with its two sinks and its work directory."""

    kind: str
    sub: Path
    rate_sink: CountingSink
    lat_sink: TimestampSink
    system: Mailmoat | Postfix | None = None


def summarise_rounds(rounds: list[dict], accepted: bool = True) -> dict:
    """The round with the median end-to-end rate, plus every round's two rates."""
    ordered = sorted(rounds, key=lambda r: r["delivered_per_s"] or 0)
    middle = dict(ordered[(len(ordered) - 1) // 2])
    if accepted:
        middle["rounds_accepted_per_s"] = [r["accepted_per_s"] for r in rounds]
    middle["rounds_delivered_per_s"] = [r["delivered_per_s"] for r in rounds]
    return middle


def paired(first: list[dict], second: list[dict], key: str) -> list[float]:
    """first/second of each pair of rounds (the same index), where both have ``key``."""
    return [round(m[key] / p[key], 3) for m, p in zip(first, second, strict=False) if m.get(key) and p.get(key)]


def run_systems(kinds: list[str], args: argparse.Namespace, workdir: Path) -> dict[str, dict]:
    """Start every system, run the rate phase ``--rounds`` times alternating between them (so
    background load on a shared machine hits both alike), with ``--hygiene`` also the mix's rounds, then
    the latency runs, then stop all."""
    units: list[Unit] = []
    results: dict[str, dict] = {kind: {"system": kind} for kind in kinds}
    rounds: dict[str, list[dict]] = {kind: [] for kind in kinds}
    mix_rounds: dict[str, list[dict]] = {kind: [] for kind in kinds}
    shared: hygiene.SharedParts | None = None
    global BROKER
    try:
        if "mailmoat" in kinds:
            BROKER = private_broker(workdir)
            if BROKER is not None:
                results["mailmoat"]["broker"] = os.environ["BENCH_RABBITMQ_CONF"].strip()
        if args.hygiene:
            log("starting the shared DNS server (unbound, NXDOMAIN) and clamd (one signature)")
            shared = hygiene.SharedParts(workdir / "shared")
            shared.start()
        for kind in kinds:
            sub = workdir / kind
            sub.mkdir()
            rate_sink = CountingSink(free_port())
            try:
                lat_sink = TimestampSink(free_port(), sub / "arrivals.txt")
            except BaseException:
                rate_sink.stop()
                raise
            unit = Unit(kind, sub, rate_sink, lat_sink)
            units.append(unit)
            if kind == "mailmoat":
                unit.system = Mailmoat(sub, unit.rate_sink.port, unit.lat_sink.port, args.ingress_workers,
                                       args.log_level, shared, args.dlp)
            else:
                unit.system = Postfix(sub, unit.rate_sink.port, unit.lat_sink.port, shared)
        wait_quiet(args.quiet_load, args.quiet_wait)
        for unit in units:
            log(f"starting {unit.kind}")
            assert unit.system is not None
            unit.system.start()
        time.sleep(2)
        profile_dir = RESULTS if args.profile else None
        for index in range(args.rounds):
            for unit in units if index % 2 == 0 else units[::-1]:
                assert unit.system is not None
                log(f"round {index + 1}/{args.rounds}: {unit.kind}")
                rounds[unit.kind].append(rate_phase(unit.system, args.messages, args.sessions, args.size,
                                                    unit.rate_sink, profile_dir, shared))
                time.sleep(2)
        if args.hygiene and args.mix_messages and not args.profile:
            for index in range(args.rounds):
                for unit in units if index % 2 == 0 else units[::-1]:
                    assert unit.system is not None
                    log(f"mix round {index + 1}/{args.rounds}: {unit.kind}")
                    mix_rounds[unit.kind].append(latency_phase(
                        unit.system, args.mix_messages, args.sessions, args.size, unit.lat_sink, 0, unit.sub,
                        f"mix-{index + 1}", mix=True, shared=shared))
                    time.sleep(2)
        for kind in kinds:
            results[kind]["rate"] = summarise_rounds(rounds[kind])
            if mix_rounds[kind]:
                results[kind]["mix"] = summarise_rounds(mix_rounds[kind], accepted=False)
        # Paced: a fixed rate (--paced-rate), or with --hygiene half of the slower system's delivered rate.
        slowest = min(results[k]["rate"]["delivered_per_s"] or 0 for k in kinds)
        slowest_mix = min((results[k].get("mix") or {}).get("delivered_per_s") or 0 for k in kinds)
        paced_rate = args.paced_rate or (round(slowest / 2, 1) if args.hygiene and slowest else 50.0)
        for unit in units:
            assert unit.system is not None
            result = results[unit.kind]
            result["label"] = unit.system.name
            if not args.profile:
                phases = []
                if args.latency_messages:
                    phases.append(latency_phase(unit.system, args.latency_messages, args.sessions, args.size,
                                                unit.lat_sink, 0, unit.sub, "closed", shared=shared))
                if args.paced_messages:
                    phases.append(latency_phase(unit.system, args.paced_messages, args.sessions, args.size,
                                                unit.lat_sink, paced_rate, unit.sub, "paced", shared=shared))
                    if args.hygiene and slowest_mix:
                        phases.append(latency_phase(unit.system, args.paced_messages, args.sessions, args.size,
                                                    unit.lat_sink, args.paced_rate or round(slowest_mix / 2, 1),
                                                    unit.sub,
                                                    "paced-mix", mix=True, shared=shared))
                result["latency"] = phases
            result["memory"] = memory(unit.system)
            if unit.kind == "mailmoat":
                result["processes"] = sorted(unit.system.pids())
                result["topology"] = unit.system.topology
        if shared is not None:
            results["shared"] = {"memory": {
                name: (procstat.sample(part.proc.pid).hwm_kb if part.proc and procstat.sample(part.proc.pid)
                       else 0) for name, part in (("clamd", shared.clamd), ("unbound", shared.dns))}}
        if "mailmoat" in rounds and "postfix" in rounds:
            results["mailmoat"]["paired_ratios"] = {
                key: paired(rounds["mailmoat"], rounds["postfix"], key)
                for key in ("accepted_per_s", "delivered_per_s")}
            if mix_rounds["mailmoat"]:
                results["mailmoat"]["paired_ratios"]["mix_delivered_per_s"] = paired(
                    mix_rounds["mailmoat"], mix_rounds["postfix"], "delivered_per_s")
    except Exception:
        for unit in units:
            if unit.system is not None:
                log(f"{unit.kind} log tail:\n{unit.system.log_tail()}")
        raise
    finally:
        for unit in units:
            log(f"stopping {unit.kind}")
            if unit.system is not None:
                with contextlib.suppress(Exception):
                    unit.system.stop()
            unit.rate_sink.stop()
            unit.lat_sink.stop()
        if shared is not None:
            shared.stop()
        if BROKER is not None:
            BROKER.close()
            BROKER = None
    return results


# --- report ------------------------------------------------------------------------------------


def routing_hop() -> bool:
    """BENCH_ROUTING_HOP=1: the routing stage is a hop of its own even without filter stages."""
    return os.environ.get("BENCH_ROUTING_HOP", "") not in ("", "0")


def report(results: dict) -> str:
    systems = results["systems"]
    topology = f", mailmoat: {systems['mailmoat']['topology']}" if "mailmoat" in systems else ""
    if systems.get("mailmoat", {}).get("broker"):
        topology += f"; mailmoat's broker: a private RabbitMQ node with {systems['mailmoat']['broker']}"
    lines = [f"mailmoat bench  {results['date']}  {results['cpus']} CPUs  N={results['messages']} "
             f"x {results['size']} B, {results['sessions']} sessions, ingress workers {results['ingress_workers']}"
             + topology]
    if results.get("hygiene"):
        lines.append("hygiene: mailmoat with every filter stage against Postfix + Rspamd (milter) + the same clamd; "
                     "DNS NXDOMAIN on loopback for both; load average before each phase is shown")
    for kind, res in systems.items():
        rate = res["rate"]
        name = res.get("label", kind)
        lines += ["", f"== {name}" + (" (under py-spy; figures perturbed)" if results.get("profile") else "")]
        lines.append(f"  rate (smtp-source -> {name} -> smtp-sink):")
        lines.append(f"    accepted            {rate['accepted_per_s']} msgs/s  (smtp-source wall "
                     f"{rate['smtp_source_wall_s']} s, exit {rate['smtp_source_exit']})")
        lines.append(f"    delivered end-to-end {rate['delivered_per_s']} msgs/s  ({rate['delivered']}/"
                     f"{rate['messages']} at the sink after {rate['e2e_wall_s']} s)")
        if len(rate.get("rounds_delivered_per_s", [])) > 1:
            lines.append(f"    every round          accepted {rate['rounds_accepted_per_s']}, delivered "
                         f"{rate['rounds_delivered_per_s']} msgs/s (the median round is shown)")
        lines.append(f"    CPU                  {rate['cpu_total_s']} s total, {rate['cpu_ms_per_msg']} ms/msg; "
                     + ", ".join(f"{k} {v}" for k, v in sorted(rate["cpu_s"].items(), key=lambda kv: -kv[1])
                                 if v >= 0.05))
        if rate.get("infra_cpu_s"):
            lines.append("    shared CPU           " + ", ".join(f"{k} {v} s" for k, v in rate["infra_cpu_s"].items()))
        lines.append(f"    other CPU            smtp-source + smtp-sink {rate['load_generators_cpu_s']} s; everything "
                     f"else on the machine {rate['other_cpu_s']} s (of {rate['cpu_capacity_s']} CPU-s available)")
        if rate.get("load_generators_cpu_s"):
            own = rate["cpu_total_s"] + sum((rate.get("infra_cpu_s") or {}).values())
            lines.append(f"    relative CPU         {own / rate['load_generators_cpu_s']:.2f} x the load generators' "
                         "(its CPU with the shared CPU / smtp-source + smtp-sink: the same work on a faster or "
                         "slower machine gives about the same figure)")
        if "dns_queries_per_msg" in rate:
            lines.append(f"    DNS queries          {rate['dns_queries_per_msg']} per message; load average "
                         f"{rate['load_before']} before, {rate['load_after']} after")
        if rate["smtp_source_stderr"]:
            lines.append(f"    smtp-source said: {rate['smtp_source_stderr'][:300]}")
        mix = res.get("mix")
        if mix:
            lines.append(f"  mix (bench/client.py --mix, {mix['count']} msgs, closed loop -> {name} -> bench/sink.py):")
            lines.append(f"    delivered end-to-end {mix['delivered_per_s']} msgs/s (rounds "
                         f"{mix['rounds_delivered_per_s']}, median shown); delivered {mix['delivered']}, missing "
                         f"{mix['missing']}, duplicates {mix['duplicates']}; p50 {mix['p50_ms']} ms, "
                         f"p99 {mix['p99_ms']} ms")
            lines.append(f"    CPU                  {mix['cpu_total_s']} s total, {mix['cpu_ms_per_msg']} ms/msg; "
                         + ", ".join(f"{k} {v}" for k, v in sorted(mix["cpu_s"].items(), key=lambda kv: -kv[1])
                                     if v >= 0.05))
            lines.append("    shared CPU           " + ", ".join(f"{k} {v} s" for k, v in mix["infra_cpu_s"].items())
                         + f"; DNS queries {mix.get('dns_queries_per_msg')} per message")
        for phase in res.get("latency", []):
            how = f"paced {phase['rate']:g}/s" if phase["rate"] else "closed loop"
            what = "mix" if phase.get("mix") else f"{results['size']} B"
            lines.append(f"  latency (bench/client.py {what} -> {name} -> bench/sink.py, {how}, "
                         f"{phase['count']} msgs):")
            lines.append(f"    accept -> delivered  p50 {phase['p50_ms']} ms, p99 {phase['p99_ms']} ms, "
                         f"max {phase['max_ms']} ms; delivered {phase['delivered']}, missing {phase['missing']}, "
                         f"duplicates {phase['duplicates']}")
            lines.append(f"    client accepted      {phase['client_accepted_per_s']} msgs/s"
                         + (f"; failures {phase['client']['failures']}" if phase["client"]["failures"] else ""))
        mem = res.get("memory")
        if mem:
            per = mem["peak_rss_kb"]
            if kind == "postfix":
                groups: dict[str, list[int]] = {}
                for proc, kb in per.items():
                    groups.setdefault(proc.split("#")[0], []).append(kb)
                detail = ", ".join(f"{g} {len(v)}x {max(v) / 1024:.1f} MB" for g, v in sorted(groups.items()))
            else:
                detail = ", ".join(f"{p} {kb / 1024:.1f} MB" for p, kb in sorted(per.items()))
            lines.append(f"  peak RSS (VmHWM) sum {mem['peak_rss_sum_mb']} MB over {len(per)} processes: {detail}")
            lines.append(f"  PSS at the end (shared pages split among sharers) sum {mem['pss_sum_mb']} MB")
        for service, prof in (res["rate"].get("profile") or {}).items():
            lines.append(f"  profile {service}: {prof['samples']} samples -> {prof['file']}")
            lines.append("    own time by function:")
            lines += [f"      {pct:5.1f}%  {fn}" for fn, pct in prof["self_functions"][:15]]
            for key, title, count in (("self_packages", "own time by package: ", 8),
                                      ("incl_packages", "inclusive by package:", 10)):
                lines.append(f"    {title} " + ", ".join(f"{p} {pct:.1f}%" for p, pct in prof[key][:count]))
            lines.append("    inclusive, mailmoat functions:")
            lines += [f"      {pct:5.1f}%  {fn}" for fn, pct in prof["incl_mailmoat_functions"][:15]]
    if "mailmoat" in systems and "postfix" in systems:
        m, p = systems["mailmoat"]["rate"], systems["postfix"]["rate"]
        lines.append("")
        paired = systems["mailmoat"].get("paired_ratios", {})
        mix_ratios = paired.get("mix_delivered_per_s")
        if mix_ratios:
            mm, pm = systems["mailmoat"]["mix"], systems["postfix"]["mix"]
            lines.append(f"ratio mailmoat/{systems['postfix'].get('label', 'postfix')}, mix delivered: "
                         f"{mm['delivered_per_s'] / pm['delivered_per_s']:.2f}  ({mm['delivered_per_s']} / "
                         f"{pm['delivered_per_s']} msgs/s; per round {mix_ratios}, "
                         f"median {statistics.median(mix_ratios):.2f})")
        for key, label in (("accepted_per_s", "accepted"), ("delivered_per_s", "delivered end-to-end")):
            if m.get(key) and p.get(key):
                ratios = paired.get(key, [])
                extra = (f"; per round {ratios}, median {statistics.median(ratios):.2f}" if len(ratios) > 1 else "")
                lines.append(f"ratio mailmoat/postfix, {label}: {m[key] / p[key]:.2f}  "
                             f"({m[key]} / {p[key]} msgs/s{extra})")
        if results.get("shared"):
            lines.append("shared parts, peak RSS: " + ", ".join(f"{k} {v / 1024:.1f} MB"
                                                               for k, v in results["shared"]["memory"].items()))
        if m.get("cpu_ms_per_msg") and p.get("cpu_ms_per_msg"):
            lines.append(f"CPU per message: mailmoat {m['cpu_ms_per_msg']} ms (+ shared: RabbitMQ, Redis, PostgreSQL"
                         f"{', clamd, DNS' if results.get('hygiene') else ''} "
                         f"{1000 * sum(m['infra_cpu_s'].values()) / max(1, m['delivered']):.3f} ms), "
                         f"{systems['postfix'].get('label', 'postfix')} {p['cpu_ms_per_msg']} ms (+ shared "
                         f"{1000 * sum(p['infra_cpu_s'].values()) / max(1, p['delivered']):.3f} ms)")
    return "\n".join(lines)


def main() -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=int(env.get("BENCH_MESSAGES", 5000)))
    parser.add_argument("--sessions", type=int, default=int(env.get("BENCH_SESSIONS", 20)))
    parser.add_argument("--size", type=int, default=int(env.get("BENCH_SIZE", 10240)))
    parser.add_argument("--ingress-workers", type=int, default=int(env.get("BENCH_INGRESS_WORKERS", 2)))
    parser.add_argument("--rounds", type=int, default=int(env.get("BENCH_ROUNDS", 3)),
                        help="rate runs per system, alternating between the systems; the median is reported")
    parser.add_argument("--latency-messages", type=int, default=int(env.get("BENCH_LATENCY_MESSAGES", 0)),
                        help="closed-loop latency run size (default: --messages)")
    parser.add_argument("--paced-messages", type=int, default=int(env.get("BENCH_PACED_MESSAGES", 1000)))
    parser.add_argument("--paced-rate", type=float,
                        default=float(env["BENCH_PACED_RATE"]) if env.get("BENCH_PACED_RATE") else None,
                        help="msgs/s of the paced latency runs (default 50; with --hygiene half the slower "
                             "system's delivered rate)")
    parser.add_argument("--log-level", default=env.get("BENCH_LOG_LEVEL", "INFO"))
    parser.add_argument("--only", choices=["mailmoat", "postfix"], default=env.get("BENCH_ONLY") or None)
    parser.add_argument("--profile", action="store_true",
                        help="py-spy on every mailmoat service during the rate run; no Postfix, no latency runs")
    parser.add_argument("--quiet-load", type=float, default=float(env.get("BENCH_QUIET_LOAD", 1.0)),
                        help="before each system, wait for the 1-minute load average to drop below this")
    parser.add_argument("--quiet-wait", type=float, default=float(env.get("BENCH_QUIET_WAIT", 0)),
                        help="longest wait for a quiet machine, s (0: do not wait, just report the load)")
    parser.add_argument("--json", type=Path, help="also write the results here (default bench/results/)")
    parser.add_argument("--hygiene", action="store_true", default=env.get("BENCH_HYGIENE", "") not in ("", "0"),
                        help="every filter stage in mailmoat, against Postfix with Rspamd as its milter and the same "
                             "clamd, DNS answered NXDOMAIN on loopback for both (bench/hygiene.py); adds the mix's "
                             "rounds, and paces the latency runs at half the slower system's rate")
    parser.add_argument("--mix-messages", type=int, default=int(env.get("BENCH_MIX_MESSAGES", 0)),
                        help="messages of the realistic mix per round with --hygiene (default: --messages / 2)")
    parser.add_argument("--dlp", action="store_true", default=env.get("BENCH_HYGIENE_DLP", "") not in ("", "0"),
                        help="with --hygiene, the dlp stage too (Rspamd has no counterpart)")
    args = parser.parse_args()
    if args.hygiene:
        # the mix's rounds are closed-loop runs with latency figures; a separate closed-loop run only when asked
        args.latency_messages = args.latency_messages if "BENCH_LATENCY_MESSAGES" in env else 0
        args.mix_messages = args.mix_messages or max(100, args.messages // 2)
    else:
        args.latency_messages = args.latency_messages or args.messages
    if args.profile:
        args.only = "mailmoat"
        args.rounds = 1
        if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
            print("bench: --profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
            return 2

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    RESULTS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mailmoat-bench-"))
    workdir.chmod(0o755)
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(), "messages": args.messages,
        "size": args.size, "sessions": args.sessions, "ingress_workers": args.ingress_workers,
        "profile": args.profile, "hygiene": args.hygiene, "systems": {},
    }
    try:
        kinds = [args.only] if args.only else ["postfix", "mailmoat"]
        results["systems"] = run_systems(kinds, args, workdir)
        shared = results["systems"].pop("shared", None)
        if shared:
            results["shared"] = shared
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = args.json or RESULTS / f"bench-{stamp}{'-profile' if args.profile else ''}.json"
    target.write_text(json.dumps(results, indent=2))
    (target.with_suffix(".txt")).write_text(text + "\n")
    log(f"results in {target} and {target.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
