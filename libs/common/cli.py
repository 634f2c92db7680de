"""The ``mailmoat`` command line: run services, check a policy, look up a message's trace."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import subprocess
import sys
import time

from mailmoat_common.policy import PolicyError, load_policy
from mailmoat_common.settings import Settings

SERVICES = ("ingress", "connection_filter", "antivirus", "antispam", "routing", "egress", "devmailbox")


def _service_module(name: str):
    return importlib.import_module(f"mailmoat_{name}.service")


def run_one(name: str, worker: int) -> int:
    from mailmoat_common.runtime import run_service

    settings = Settings.from_env()
    try:
        module = _service_module(name)
    except ModuleNotFoundError:
        print(f"mailmoat: no service named {name!r} is installed", file=sys.stderr)
        return 2
    try:
        run_service(lambda: module.main(settings, worker))
    except PolicyError as exc:
        print(f"mailmoat: policy refused:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def plan_processes(settings: Settings, devmailbox: bool) -> list[tuple[str, int]]:
    """The (service, worker) processes ``run all`` starts: ingress workers, the policy's filter
    stages that are installed, routing, egress, and the development mailbox when asked."""
    policy = load_policy(settings.policy_path)
    plan = [("ingress", i) for i in range(max(1, settings.ingress_workers))]
    for stage in policy.pipeline.filters:
        plan.append((stage, 0))
    plan += [("routing", 0), ("egress", 0)]
    if devmailbox:
        plan.append(("devmailbox", 0))
    return plan


def run_all(devmailbox: bool) -> int:
    """Supervise every service as its own process; restart one that dies; stop all on SIGTERM."""
    settings = Settings.from_env()
    try:
        plan = plan_processes(settings, devmailbox)
    except PolicyError as exc:
        print(f"mailmoat: policy refused:\n{exc}", file=sys.stderr)
        return 2
    children: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
    started: dict[tuple[str, int], float] = {}
    stopping = False

    def spawn(key: tuple[str, int]) -> None:
        service, worker = key
        cmd = [sys.executable, "-m", "mailmoat_common.cli", "run", service, "--worker", str(worker)]
        children[key] = subprocess.Popen(cmd)
        started[key] = time.monotonic()

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for key in plan:
        spawn(key)
    print(
        f"mailmoat: running {', '.join(f'{s}[{w}]' for s, w in plan)}; "
        f"SMTP on {settings.smtp_host}:{settings.smtp_port}",
        file=sys.stderr,
        flush=True,
    )
    while not stopping:
        time.sleep(0.2)
        for key, proc in list(children.items()):
            if proc.poll() is not None and not stopping:
                print(f"mailmoat: {key[0]}[{key[1]}] exited with {proc.returncode}; restarting",
                      file=sys.stderr, flush=True)
                if time.monotonic() - started[key] < 2:
                    time.sleep(1)
                spawn(key)
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 35
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


def policy_check(path: str) -> int:
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{path}: ok ({len(policy.accepted_domains)} accepted domains, {len(policy.routes)} routes, "
        f"itinerary {' -> '.join(policy.pipeline.itinerary())})"
    )
    return 0


async def _trace(needle: str) -> int:
    import redis.asyncio as aioredis

    from mailmoat_common.trace import TraceStore

    settings = Settings.from_env()
    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=5)
    store = TraceStore(client)
    try:
        ids = await store.find(needle)
        if not ids:
            print(f"no message found for {needle!r}")
            return 1
        for message_id in ids:
            print(f"message {message_id}")
            for event in await store.events(message_id):
                rcpts = f" [{', '.join(event.recipients)}]" if event.recipients else ""
                print(f"  {event.at.isoformat(timespec='milliseconds')}  {event.event:<10} "
                      f"{event.service:<12}{rcpts} {event.detail}".rstrip())
    finally:
        await client.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailmoat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one service, or all of them as processes")
    run.add_argument("service", choices=[*SERVICES, "all"])
    run.add_argument("--worker", type=int, default=0, help="worker index (ports are offset by it)")
    run.add_argument("--devmailbox", action="store_true", help="with 'all': also run the dev mailbox")
    tr = sub.add_parser("trace", help="show a message's path by queue id, sender, recipient or Message-ID")
    tr.add_argument("needle")
    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    chk = pol_sub.add_parser("check", help="validate a policy file")
    chk.add_argument("file")
    from mailmoat_antispam import train

    train.add_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "run":
        if args.service == "all":
            return run_all(args.devmailbox or os.environ.get("MAILMOAT_DEVMAILBOX") == "1")
        return run_one(args.service, args.worker)
    if args.command == "trace":
        return asyncio.run(_trace(args.needle))
    if args.command == "policy":
        return policy_check(args.file)
    if args.command == "train":
        return train.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

