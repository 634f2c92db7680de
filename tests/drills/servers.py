"""A private RabbitMQ node and a private Redis for the drills, started and broken at will.

The machine's own servers are never touched: the drill node has its own node name, data directory,
AMQP and distribution ports (``RABBITMQ_NODENAME``, ``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_NODE_PORT``,
``RABBITMQ_DIST_PORT``) and its own Erlang cookie (``HOME``); the drill Redis runs on a free port with
its data (AOF, as deployed) in the drill's directory. Both are stopped when the drill ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import redis

from tests.support.infra import free_port

RABBIT_BIN = Path(os.environ.get("MAILMOAT_DRILL_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


class PrivateRabbit:
    """One RabbitMQ node of the drill's own (guest/guest on 127.0.0.1:``port``)."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "rabbitmq"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"mmdrill{os.getpid()}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        # The node's Erlang cookie, written before anything starts: rabbitmqctl polling a starting node
        # would otherwise race the server to create it (and find it with the wrong mode).
        cookie = self.dir / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(uuid.uuid4().hex.upper())
            cookie.chmod(0o400)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "disk_free_limit.absolute = 50MB\n"
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(self.dir),
            "ERL_CRASH_DUMP": str(self.dir / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_GENERATED_CONFIG_DIR": str(self.dir / "generated"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, "-q", *args], env=self.env,
                              capture_output=True, timeout=timeout, check=False)

    def start(self, timeout: float = 90) -> float:
        """Start the node and wait until it accepts AMQP; the seconds that took."""
        started = time.monotonic()
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {self.proc.returncode}; see {self.dir}/server.log")
            if self.ctl("await_startup", "--timeout", "5", timeout=10).returncode == 0:
                return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f"the drill's RabbitMQ node did not start within {timeout}s")

    def add_vhost(self, name: str) -> str:
        for args in (("add_vhost", name), ("set_permissions", "-p", name, "guest", ".*", ".*", ".*")):
            result = self.ctl(*args)
            if result.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr.decode(errors='replace')}")
        return name

    def stop(self) -> None:
        """Stop the node gracefully (``rabbitmqctl stop``)."""
        self.ctl("stop", timeout=60)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the node's whole process group (beam, epmd children stay with the machine's epmd)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None

    def queue_counts(self, vhost: str) -> dict[str, tuple[int, int]]:
        """Per queue of ``vhost``: (ready, unacknowledged)."""
        result = self.ctl("list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged",
                          "--no-table-headers")
        counts: dict[str, tuple[int, int]] = {}
        for line in result.stdout.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                counts[parts[0]] = (int(parts[1]), int(parts[2]))
        return counts

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        if self.proc is not None:
            self.kill()


class PrivateRedis:
    """One redis-server of the drill's own on a free port, AOF on, as deployed."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes", "--dir", str(self.dir), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the drill's Redis did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF and exits, as on a node drain."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None

    def hang(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
