"""``mailmoat run all``: every service as its own process, following the policy in force.

The supervisor starts the processes the policy asks for (ingress workers, the filter stages of
``pipeline.filters``, routing, egress, the development mailbox when asked), restarts one that dies,
and watches the policy file as the services do: a filter stage added to ``pipeline.filters`` is
started at once, so mail the reloaded ingress sends to its queue is consumed; a stage removed from it
is stopped only once its queue is empty (mail published before every service reloaded still passes).
Every 10 seconds it looks at the stage queues and says when one holds messages that nothing consumes
(the alert ``MailmoatStageQueueWithoutConsumer`` says the same to Prometheus).

Its children die with it: each sets ``PR_SET_PDEATHSIG`` (SIGTERM, so it finishes what it holds) when
it starts under a supervisor (``child_of_supervisor``). Ports are checked before anything starts: one
in use (another gateway still running, say) is reported once and the supervisor exits with
``ADDRESS_IN_USE`` instead of restarting services that cannot listen; a child that exits with that
status is not restarted either.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailmoat_cli.policyfacts import PolicyFacts, PolicyRefused, PolicyWatch
from mailmoat_platform import stages
from mailmoat_platform.colocated import PIPELINE, pipeline_stages
from mailmoat_platform.settings import Settings
from mailmoat_platform.stages import stage_queue

if TYPE_CHECKING:
    from mailmoat_policy import Policy

Key = tuple[str, int]
"""A supervised process: (service, worker)."""

ADDRESS_IN_USE = errno.EADDRINUSE
"""Exit status of a service (and of the supervisor) that cannot listen because its port is taken."""
SUPERVISOR_ENV = "MAILMOAT_SUPERVISOR_PID"
"""Set in each child's environment: the supervisor's pid, so the child can tie its life to it."""
PR_SET_PDEATHSIG = 1
QUEUE_WATCH_EVERY = 10.0
"""Seconds between two looks at the stage queues for messages that nothing consumes."""
RETIRE_GRACE = 3.0
"""Seconds a stage dropped from the policy keeps running before its queue is checked: every service
polls the policy each second, so by then nothing publishes to it any more."""


# --- the plan (pure) -----------------------------------------------------------------------------

def plan(policy: Policy | PolicyFacts, ingress_workers: int, devmailbox: bool, records: str = "postgresql",
         topology: str = "stages") -> list[Key]:
    """The processes a policy asks for, from the stage registry: the SMTP stage's workers, the policy's
    filter stages, routing, egress, the recorder and the console when the records are in PostgreSQL, and
    the development stages when asked. With the ``colocated`` topology one ``pipeline`` process runs every
    filter stage and routing instead (``colocated.pipeline_stages``)."""
    keys: list[Key] = [(s.name, i) for s in stages.of_kind("smtp") for i in range(max(1, ingress_workers))]
    if topology == "colocated":
        keys += [(PIPELINE, 0)]
        keys += [(s.name, 0) for s in stages.of_kind("egress")]
    else:
        keys += [(stage, 0) for stage in policy.pipeline.filters]
        keys += [(s.name, 0) for s in stages.of_kind("routing", "egress")]
    if records == "postgresql":
        keys += [(s.name, 0) for s in stages.of_kind("recorder", "console")]
    if devmailbox:
        keys += [(s.name, 0) for s in stages.of_kind("dev")]
    return keys


def stage_queues() -> list[str]:
    """The queues the supervisor watches for messages nothing consumes: every filter stage's (whether
    the policy lists it or not), routing's and egress's."""
    return [stage_queue(s.name) for s in stages.of_kind("filter", "routing", "egress")]


def kind_of(service: str) -> str | None:
    """The registry's kind of a service (None for a name the registry does not know)."""
    try:
        return stages.get(service).kind
    except KeyError:
        return None


def is_filter(service: str) -> bool:
    """Whether ``service`` is a filter stage of the registry (retired when the policy drops it)."""
    return kind_of(service) == "filter"


@dataclass(frozen=True)
class Changes:
    """What to do when the planned processes differ from the running ones."""

    start: list[Key] = field(default_factory=list)
    retire: list[Key] = field(default_factory=list)
    """Filter stages no longer planned: stop them once their queue is empty."""
    keep: list[Key] = field(default_factory=list)
    """Retiring stages the policy lists again: they stay."""


def changes(planned: Iterable[Key], running: Iterable[Key], retiring: Iterable[Key]) -> Changes:
    """Start what is planned and not running; retire running filter stages that are not planned."""
    wanted = list(planned)
    running, retiring = set(running), set(retiring)
    return Changes(
        start=[key for key in wanted if key not in running],
        retire=sorted(key for key in running - set(wanted) - retiring if is_filter(key[0])),
        keep=sorted(retiring & set(wanted)),
    )


def restart_delay(lived: float, failures: int) -> float:
    """Seconds to wait before restarting a process that ran ``lived`` seconds and has failed
    ``failures`` times in a row quickly: none after a long run, then 1, 2, 4 … up to 30."""
    if lived >= 10:
        return 0.0
    return float(min(30, 2 ** max(0, failures - 1)))


def listeners(settings: Settings, keys: Iterable[Key], mailbox: tuple[str, int] | None) -> dict[tuple[str, int], str]:
    """``(host, port) -> what listens there`` for the planned processes: metrics ports, SMTP (shared by
    the ingress workers), the development mailbox. Ports of 0 (chosen by the OS) are left out."""
    out: dict[tuple[str, int], str] = {}
    for service, worker in keys:
        for name in pipeline_stages() if service == PIPELINE else [service]:
            port = settings.metrics_port(name, worker)
            if port:
                out[("0.0.0.0", port)] = f"the metrics port of {name}[{worker}]"
        kind = kind_of(service)
        if kind == "smtp" and worker == 0 and settings.smtp_port:
            out[(settings.smtp_host, settings.smtp_port)] = f"the SMTP port of {service}"
        if kind == "dev" and mailbox is not None and mailbox[1]:
            out[(mailbox[0], mailbox[1] + worker)] = "the SMTP port of the development mailbox"
    return out


# --- ports and process ties ----------------------------------------------------------------------

def port_taken(host: str, port: int) -> bool:
    """True when a listener already holds ``host:port`` (a test bind, as a server would bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def address_in_use(exc: BaseException) -> bool:
    """True for the error a server raises when its port is taken (also when wrapped in a group)."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(address_in_use(inner) for inner in exc.exceptions)
    return False


def child_of_supervisor() -> bool:
    """In a process the supervisor started: ask the kernel for SIGTERM when the supervisor dies.

    False when the supervisor is already gone (it died before this ran): the caller then exits.
    True also when not started by a supervisor, or where ``prctl`` does not exist.
    """
    parent = os.environ.pop(SUPERVISOR_ENV, "")  # not inherited by anything this process starts
    if not parent.isdigit():
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return True  # not Linux, or refused: the supervisor's own stop still applies
    except (OSError, AttributeError):
        return True
    return os.getppid() == int(parent)


# --- queue facts ---------------------------------------------------------------------------------

async def _queue_facts(amqp_url: str, queues: list[str]) -> dict[str, tuple[int, int]]:
    # aiormq, not aio-pika: a passive declare per queue is all it asks (1.5 MB less in the supervisor)
    import aiormq

    out: dict[str, tuple[int, int]] = {}
    connection = await asyncio.wait_for(aiormq.connect(amqp_url), 5)
    try:
        for name in queues:
            channel = await connection.channel()
            try:
                result = await channel.queue_declare(name, passive=True)
                out[name] = (int(result.message_count or 0), int(result.consumer_count or 0))
            except aiormq.exceptions.ChannelClosed:
                out[name] = (0, 0)  # never declared: nothing waits in it
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()
    return out


def queue_facts(amqp_url: str, queues: list[str]) -> dict[str, tuple[int, int]] | None:
    """``(messages ready, consumers)`` of each queue, or None when the broker cannot be asked now."""
    try:
        return asyncio.run(asyncio.wait_for(_queue_facts(amqp_url, queues), 10))
    except Exception:  # broker down or slow: the caller keeps things as they are and asks again
        return None


def stranded(facts: dict[str, tuple[int, int]]) -> dict[str, int]:
    """The queues holding messages that nothing consumes, with their message counts."""
    return {queue: ready for queue, (ready, consumers) in facts.items() if ready and not consumers}


# --- the supervisor (wiring) ---------------------------------------------------------------------

def say(text: str) -> None:
    print(f"mailmoat: {text}", file=sys.stderr, flush=True)


class Supervisor:
    """The ``run all`` loop: spawn, restart, follow the policy, stop."""

    def __init__(self, settings: Settings, devmailbox: bool, *,
                 mailbox: tuple[str, int] | None = None,
                 ask_queues: Callable[[list[str]], dict[str, tuple[int, int]] | None] | None = None):
        self.settings = settings
        self.devmailbox = devmailbox
        self.mailbox = mailbox
        self.ask_queues = ask_queues or (lambda queues: queue_facts(settings.amqp_url, queues))
        self.policy = PolicyWatch(settings.policy_path)
        """The policy in force, read in a child process (``mailmoat_cli.policyfacts``): the supervisor does
        not load the policy's models itself. ``PolicyRefused`` when it does not load."""
        self.children: dict[Key, subprocess.Popen[bytes]] = {}
        self.started: dict[Key, float] = {}
        self.failures: dict[Key, int] = {}
        self.due: dict[Key, float] = {}
        """Processes to (re)start, with the time they may start."""
        self.retiring: dict[Key, float] = {}
        """Filter stages dropped from the policy, with the time they were dropped."""
        self.unconsumed: dict[str, int] = {}
        """Stage queues seen holding messages with no consumer, with how many checks in a row."""
        self.signalled: set[Key] = set()
        """Retiring stages sent SIGTERM and not yet ended."""
        self.stopping = False
        self.status = 0

    def planned(self) -> list[Key]:
        return plan(self.policy.current, self.settings.ingress_workers, self.devmailbox, self.settings.records,
                    self.settings.topology)

    # --- starting ------------------------------------------------------------------------------

    def ports_free(self, keys: list[Key]) -> bool:
        for (host, port), what in listeners(self.settings, keys, self.mailbox).items():
            if port_taken(host, port):
                say(f"cannot start: port {port} ({what}) is already in use on {host} - is another "
                    f"mailmoat still running? Stop it, or choose other ports (MAILMOAT_*_PORT)")
                return False
        return True

    def spawn(self, key: Key) -> None:
        service, worker = key
        if service != PIPELINE and importlib.util.find_spec(stages.get(service).package) is None:
            say(f"the policy lists {service}, which is not installed: nothing consumes "
                f"{stage_queue(service)}; install it or remove it from pipeline.filters")
            self.due.pop(key, None)
            return
        cmd = [sys.executable, "-m", "mailmoat_cli.main", "run", service, "--worker", str(worker)]
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        self.children[key] = subprocess.Popen(cmd, env=env)
        self.started[key] = time.monotonic()
        self.due.pop(key, None)

    def start(self) -> int | None:
        """Check the ports and start the plan; an exit status when it cannot."""
        keys = self.planned()
        if not self.ports_free(keys):
            return ADDRESS_IN_USE
        for key in keys:
            self.spawn(key)
        say(f"running {', '.join(f'{s}[{w}]' for s, w in keys)}; "
            f"SMTP on {self.settings.smtp_host}:{self.settings.smtp_port}")
        return None

    # --- one turn of the loop ------------------------------------------------------------------

    def reap(self) -> None:
        """Note the children that exited: restart them later, or stop everything when one could not
        listen."""
        now = time.monotonic()
        for key, proc in list(self.children.items()):
            code = proc.poll()
            if code is None or self.stopping:
                continue
            del self.children[key]
            if key in self.retiring:
                continue  # a retired stage ended; follow_retiring starts it again if its queue fills
            if code == ADDRESS_IN_USE:
                say(f"{key[0]}[{key[1]}] cannot listen: its port is in use; stopping")
                self.status = ADDRESS_IN_USE
                self.stopping = True
                return
            lived = now - self.started.get(key, now)
            self.failures[key] = self.failures.get(key, 0) + 1 if lived < 10 else 0
            delay = restart_delay(lived, self.failures[key])
            say(f"{key[0]}[{key[1]}] exited with {code}; restarting" + (f" in {delay:g} s" if delay else ""))
            self.due[key] = now + delay

    def follow_policy(self) -> None:
        """Start the stages a new policy lists; mark the ones it dropped for retirement."""
        if not self.policy.check():
            return
        todo = changes(self.planned(), [*self.children, *self.due], self.retiring)
        now = time.monotonic()
        for key in todo.keep:
            del self.retiring[key]
            self.signalled.discard(key)
            if key not in self.children:
                self.due[key] = now
        for key in todo.start:
            if key not in self.retiring:
                say(f"the policy now lists {key[0]}: starting {key[0]}[{key[1]}]")
                self.due[key] = now
        for key in todo.retire:
            say(f"the policy no longer lists {key[0]}: stopping it once {stage_queue(key[0])} is empty")
            self.due.pop(key, None)
            self.retiring[key] = now

    def follow_retiring(self) -> None:
        """Stop retiring stages whose queue is empty; start one again when messages wait for it."""
        now = time.monotonic()
        ripe = [key for key, since in self.retiring.items() if now - since >= RETIRE_GRACE]
        if not ripe:
            return
        facts = self.ask_queues([stage_queue(key[0]) for key in ripe])
        if facts is None:
            return
        for key in ripe:
            waiting = facts.get(stage_queue(key[0]), (0, 0))[0]
            proc = self.children.get(key)
            if waiting == 0 and proc is not None and proc.poll() is None:
                if key not in self.signalled:
                    say(f"{stage_queue(key[0])} is empty: stopping {key[0]}[{key[1]}]")
                    proc.send_signal(signal.SIGTERM)
                    self.signalled.add(key)
            elif waiting == 0 and proc is None:
                del self.retiring[key]
                self.signalled.discard(key)
            elif waiting and proc is None:
                say(f"{waiting} message(s) wait in {stage_queue(key[0])}: starting {key[0]}[{key[1]}] again")
                self.signalled.discard(key)
                self.spawn(key)

    def watch_queues(self) -> None:
        """Say when a stage queue holds messages that nothing consumes (seen twice in a row, so a
        restart in between is not reported), and when it is consumed again."""
        facts = self.ask_queues(stage_queues())
        if facts is None:
            return
        now = stranded(facts)
        for queue, ready in now.items():
            self.unconsumed[queue] = self.unconsumed.get(queue, 0) + 1
            if self.unconsumed[queue] == 2:
                say(f"{ready} message(s) wait in {queue} and nothing consumes it")
        for queue in [q for q in self.unconsumed if q not in now]:
            if self.unconsumed.pop(queue) >= 2:
                say(f"{queue} is consumed again")

    def start_due(self) -> None:
        now = time.monotonic()
        for key, when in list(self.due.items()):
            if when <= now and key not in self.children:
                self.spawn(key)

    # --- stopping ------------------------------------------------------------------------------

    def stop_all(self, grace: float = 35.0) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run(self) -> int:
        def stop(signum: int, frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        failed = self.start()
        if failed is not None:
            return failed
        last_policy = last_watch = time.monotonic()
        while not self.stopping:
            time.sleep(0.2)
            self.reap()
            if self.stopping:
                break
            if time.monotonic() - last_policy >= 1.0:
                last_policy = time.monotonic()
                self.follow_policy()
                self.follow_retiring()
            self.start_due()
            if time.monotonic() - last_watch >= QUEUE_WATCH_EVERY:
                self.watch_queues()
                last_watch = time.monotonic()
        self.stop_all()
        return self.status


def run_all(devmailbox: bool) -> int:
    """``mailmoat run all``: supervise until SIGTERM/SIGINT; the exit status says why it ended."""
    settings = Settings.from_env()
    mailbox = None
    for spec in stages.of_kind("dev") if devmailbox else ():
        # the development mailbox's SMTP listener, checked with the metrics ports before anything starts
        config = stages.resolve(f"{spec.package}.service:MailboxConfig").from_env()
        mailbox = (config.host, config.port)
    try:
        supervisor = Supervisor(settings, devmailbox, mailbox=mailbox)
    except PolicyRefused as exc:
        say(f"policy refused:\n{exc}")
        return 2
    return supervisor.run()
