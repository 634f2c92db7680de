"""The gateway as real processes for end-to-end tests.

``Gateway`` writes (or takes) a policy, chooses free ports, and starts either one process per
service (``python -m mailmoat_cli.main run <service> --worker N``), so that a test can SIGKILL and
restart one, or the supervisor ``mailmoat run all``. It waits until every process answers 200 on
``/readyz`` (bounded), keeps each process's output in a log file under its work directory, and stops
everything at the end (SIGTERM, then SIGKILL of the whole process group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mailmoat_cli.main import plan_processes
from mailmoat_platform.colocated import PIPELINE as PIPELINE_PROCESS
from mailmoat_platform.colocated import pipeline_stages
from mailmoat_platform.settings import DEFAULT_METRICS_PORTS, Settings
from mailmoat_policy import load_policy
from tests.support import records
from tests.support.infra import free_port_block

SERVICES = ("ingress", "routing", "egress")
"""What ``start()`` runs by default: the pipeline without filter stages (and the recorder, with the
records in PostgreSQL)."""
PIPELINE = frozenset(("ingress", "routing", "egress"))
ALL = ("all", 0)
"""The key of the ``mailmoat run all`` supervisor among the processes."""


def free_ports(count: int, block: int = 1, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports; with ``block`` > 1 each is the base of that many free ports in a row.

    No two results overlap: a port is given out once per process (``infra.free_port_block``).
    """
    return [free_port_block(block, host) for _ in range(count)]


class Gateway:
    """Gateway processes sharing one environment (policy, broker, Redis, ports)."""

    def __init__(self, workdir: Path, amqp_url: str, redis_url: str, policy: Path | None = None,
                 ingress_workers: int = 1, extra_env: dict[str, str] | None = None, *,
                 policy_text: str | None = None, log_format: str = "json", ready_timeout: float = 45.0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if policy is None:
            policy = self.workdir / "policy.yaml"
            self.write_policy(policy_text or "{}\n", policy)
        elif policy_text is not None:
            self.write_policy(policy_text, policy)
        self.policy = Path(policy)
        self.ingress_workers = ingress_workers
        self.ready_timeout = ready_timeout
        names = list(DEFAULT_METRICS_PORTS)
        blocks = free_ports(len(names), block=max(1, ingress_workers))
        self.ports = dict(zip(names, blocks, strict=True))
        self.smtp_port, self.devmailbox_port, self.console_port = free_ports(3)
        self.maildir = self.workdir / "maildir"
        self.records = (extra_env or {}).get("MAILMOAT_RECORDS", Settings.records)
        """Where the gateway keeps its trace and quarantine (``postgresql``, the default, or ``redis``)."""
        self.database_url = (extra_env or {}).get("MAILMOAT_DATABASE_URL") or (
            records.ensure() if self.records == "postgresql" else Settings.database_url)
        """The records database: the test process's own (``tests.support.records``) unless given."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAILMOAT_")}
        self.env = {
            **inherited,
            "PYTHONUNBUFFERED": "1",
            "MAILMOAT_AMQP_URL": amqp_url,
            "MAILMOAT_REDIS_URL": redis_url,
            "MAILMOAT_POLICY": str(self.policy),
            "MAILMOAT_SMTP_HOST": "127.0.0.1",
            "MAILMOAT_SMTP_PORT": str(self.smtp_port),
            "MAILMOAT_INGRESS_WORKERS": str(ingress_workers),
            "MAILMOAT_LOG_FORMAT": log_format,
            "MAILMOAT_DEVMAILBOX_PORT": str(self.devmailbox_port),
            "MAILMOAT_DEVMAILBOX_DIR": str(self.maildir),
            "MAILMOAT_RECORDS": self.records,
            "MAILMOAT_DATABASE_URL": self.database_url,
            "MAILMOAT_CONSOLE_PORT": str(self.console_port),
            **{f"MAILMOAT_{s.upper()}_METRICS_PORT": str(p) for s, p in self.ports.items()},
            **(extra_env or {}),
        }
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._supervised: list[tuple[str, int]] = []

    # --- policy ------------------------------------------------------------------------------------

    def write_policy(self, text: str, path: Path | None = None) -> Path:
        """Write the policy YAML (dedented) atomically; running services reload it."""
        path = Path(path or self.policy)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(textwrap.dedent(text), encoding="utf-8")
        os.replace(tmp, path)
        return path

    # --- starting ----------------------------------------------------------------------------------

    def port_of(self, service: str, worker: int = 0) -> int:
        """The metrics/health port of a service process."""
        return self.ports[service] + worker

    def log_path(self, service: str, worker: int = 0) -> Path:
        return self.workdir / f"{service}-{worker}.log"

    def _spawn(self, key: tuple[str, int], args: list[str]) -> subprocess.Popen[bytes]:
        if key in self.procs and self.procs[key].poll() is None:
            raise RuntimeError(f"{key[0]}[{key[1]}] is already running")
        with open(self.log_path(*key), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailmoat_cli.main", "run", *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, start_new_session=True,
            )
        self.procs[key] = proc
        return proc

    def start_service(self, service: str, worker: int = 0, wait: bool = True) -> None:
        """Start one service process (again, after ``kill``)."""
        self._spawn((service, worker), [service, "--worker", str(worker)])
        if wait:
            self.wait_ready(service, worker)

    def start(self, services: tuple[str, ...] = SERVICES, *, recorder: bool = True) -> Gateway:
        """Start each service as its own process (ingress with ``ingress_workers`` workers), wait for all.

        With the records in PostgreSQL the recorder comes along with the pipeline's services (it writes
        their trace) when it is not running yet, unless ``recorder`` is false (a test that starts it on
        its own, or runs each service with its own broker user)."""
        running = ("recorder", 0) in self.procs and self.procs[("recorder", 0)].poll() is None
        if recorder and self.records == "postgresql" and PIPELINE & set(services) and "recorder" not in services \
                and not running:
            services = (*services, "recorder")
        keys = [(s, w) for s in services for w in range(self.ingress_workers if s == "ingress" else 1)]
        for service, worker in keys:
            self.start_service(service, worker, wait=False)
        for service, worker in keys:
            self.wait_ready(service, worker)
        return self

    def start_all(self, devmailbox: bool = False) -> Gateway:
        """Start the ``mailmoat run all`` supervisor and wait until every process it runs is ready."""
        settings = Settings(policy_path=str(self.policy), ingress_workers=self.ingress_workers, records=self.records,
                            topology=self.env.get("MAILMOAT_TOPOLOGY", Settings.topology))
        self._supervised = [(name, worker) for service, worker in plan_processes(settings, devmailbox)
                            for name in (self._listed() if service == PIPELINE_PROCESS else [service])]
        """What ``run all`` runs, the ``pipeline`` process as the stages it runs that the policy uses (each
        answers on its own port; see ``ready``)."""
        self._spawn(ALL, ["all", *(["--devmailbox"] if devmailbox else [])])
        for service, worker in self._supervised:
            self.wait_ready(service, worker)
        return self

    # --- readiness ---------------------------------------------------------------------------------

    def _http(self, service: str, worker: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port_of(service, worker)}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def _listed(self) -> list[str]:
        """The stages of the ``pipeline`` process that the policy uses: its filter stages and routing. The process
        runs every filter stage; one the policy does not use may wait for its daemon (clamd) and say not ready."""
        used = {*load_policy(self.policy).pipeline.filters, "routing"}
        return [s for s in pipeline_stages() if s in used]

    def ready(self, service: str, worker: int = 0) -> bool:
        if service == PIPELINE_PROCESS:
            return all(self.ready(stage, worker) for stage in self._listed())
        try:
            return self._http(service, worker, "/readyz")[0] == 200
        except OSError:
            return False

    def _owner(self, service: str, worker: int) -> tuple[str, int]:
        if (service, worker) in self.procs:
            return service, worker
        if ALL in self.procs and (service, worker) in self._supervised:
            return ALL
        raise KeyError(f"{service}[{worker}] was not started")

    def wait_ready(self, service: str, worker: int = 0, timeout: float | None = None) -> None:
        """Wait until the process answers 200 on /readyz; AssertionError with its log tail otherwise."""
        timeout = self.ready_timeout if timeout is None else timeout
        key = self._owner(service, worker)
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs[key]
            if proc.poll() is not None:
                raise AssertionError(f"{key[0]}[{key[1]}] exited with {proc.returncode}:\n{self.tail(*key)}")
            if self.ready(service, worker):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"{service}[{worker}] not ready after {timeout}s:\n{self.tail(*key)}")
            time.sleep(0.1)

    def metrics(self, service: str, worker: int = 0) -> str:
        status, body = self._http(service, worker, "/metrics", timeout=5)
        if status != 200:
            raise AssertionError(f"{service}[{worker}] /metrics answered {status}")
        return body

    def metrics_when(self, service: str, settled: Callable[[str], bool], timeout: float = 10.0,
                     worker: int = 0) -> str:
        """``service``'s metrics once ``settled`` holds for them (or as they are at ``timeout``): a sink
        has a message before egress heard the reply, counted it and acked."""
        deadline = time.monotonic() + timeout
        text = self.metrics(service, worker)
        while not settled(text) and time.monotonic() < deadline:
            time.sleep(0.05)
            text = self.metrics(service, worker)
        return text

    def tail(self, service: str, worker: int = 0, lines: int = 40) -> str:
        path = self.log_path(service, worker)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- stopping ----------------------------------------------------------------------------------

    def kill(self, service: str, worker: int = 0, sig: int = signal.SIGKILL, timeout: float = 40.0) -> int:
        """Signal one process (SIGKILL by default) and wait for it to end; its exit status.

        ``kill("all")`` signals the supervisor; the services it ran are then SIGKILLed with its group.
        """
        key = (service, worker)
        proc = self.procs.pop(key)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            status = proc.wait(timeout=5)
        if key == ALL:
            _kill_group(proc)
        return status

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM every process; whatever is still running after ``timeout`` s is SIGKILLed with its group."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for key, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait(timeout=5)
            if key == ALL:
                _kill_group(proc)  # anything the supervisor left behind
        self.procs.clear()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
