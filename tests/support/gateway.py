"""The gateway as real processes for end-to-end tests: one process per service, each killable."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.infra import free_port

SERVICES = ("ingress", "routing", "egress")


class Gateway:
    """Starts ``python -m mailmoat_common.cli run <service> --worker N`` processes with a shared env."""

    def __init__(self, workdir: Path, amqp_url: str, redis_url: str, policy: Path,
                 ingress_workers: int = 1, extra_env: dict[str, str] | None = None):
        self.workdir = workdir
        self.smtp_port = free_port()
        self.ingress_workers = ingress_workers
        self.ports = {service: free_port() for service in ("ingress", "routing", "egress",
                                                           "connection_filter", "antivirus", "antispam")}
        # ingress workers use base+index: reserve a block
        self.ports["ingress"] = _free_block(ingress_workers)
        self.env = {
            **os.environ,
            "MAILMOAT_AMQP_URL": amqp_url,
            "MAILMOAT_REDIS_URL": redis_url,
            "MAILMOAT_POLICY": str(policy),
            "MAILMOAT_SMTP_PORT": str(self.smtp_port),
            "MAILMOAT_INGRESS_WORKERS": str(ingress_workers),
            "MAILMOAT_LOG_FORMAT": "json",
            **{f"MAILMOAT_{s.upper()}_METRICS_PORT": str(p) for s, p in self.ports.items()},
            **(extra_env or {}),
        }
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def port_of(self, service: str, worker: int = 0) -> int:
        return self.ports[service] + worker

    def log_path(self, service: str, worker: int = 0) -> Path:
        return self.workdir / f"{service}-{worker}.log"

    def start_service(self, service: str, worker: int = 0, wait: bool = True) -> None:
        log = open(self.log_path(service, worker), "ab")
        self.procs[(service, worker)] = subprocess.Popen(
            [sys.executable, "-m", "mailmoat_common.cli", "run", service, "--worker", str(worker)],
            env=self.env, stdout=log, stderr=log, cwd=self.workdir,
        )
        log.close()
        if wait:
            self.wait_ready(service, worker)

    def start(self, services: tuple[str, ...] = SERVICES) -> Gateway:
        for service in services:
            workers = self.ingress_workers if service == "ingress" else 1
            for worker in range(workers):
                self.start_service(service, worker, wait=False)
        for service in services:
            workers = self.ingress_workers if service == "ingress" else 1
            for worker in range(workers):
                self.wait_ready(service, worker)
        return self

    def ready(self, service: str, worker: int = 0) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port_of(service, worker)}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, service: str, worker: int = 0, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[(service, worker)]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{service}[{worker}] exited {proc.returncode}:\n{self.tail(service, worker)}")
            if self.ready(service, worker):
                return
            time.sleep(0.1)
        raise AssertionError(f"{service}[{worker}] not ready after {timeout}s:\n{self.tail(service, worker)}")

    def metrics(self, service: str, worker: int = 0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port_of(service, worker)}/metrics", timeout=5) as r:
            return r.read().decode()

    def tail(self, service: str, worker: int = 0, lines: int = 40) -> str:
        path = self.log_path(service, worker)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, service: str, worker: int = 0, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop((service, worker))
        proc.send_signal(sig)
        proc.wait(timeout=40)

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


def _free_block(size: int, tries: int = 50) -> int:
    """A base port whose next ``size`` ports are free."""
    import socket

    for _ in range(tries):
        base = free_port()
        sockets = []
        try:
            for offset in range(size):
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + offset))
                sockets.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port block")
