"""The ``mailmoat`` command line: run services, check a policy, look up a message's trace, manage the quarantine."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from mailmoat_platform import stages
from mailmoat_platform.settings import Settings

if TYPE_CHECKING:
    from mailmoat_platform.models import TraceEvent

SERVICES = stages.names()
"""The services ``mailmoat run`` starts: every stage of the registry."""


def _service_module(name: str):
    return importlib.import_module(f"{stages.get(name).package}.service")


def run_one(name: str, worker: int) -> int:
    from mailmoat_cli.supervisor import ADDRESS_IN_USE, address_in_use, child_of_supervisor
    from mailmoat_platform.runtime import run_service
    from mailmoat_policy import PolicyError

    if not child_of_supervisor():
        print(f"mailmoat: {name}[{worker}]: the supervisor that started it is gone; not starting", file=sys.stderr)
        return 0
    settings = Settings.from_env()
    if name == "pipeline":
        from mailmoat_cli import pipeline

        def main() -> Awaitable[None]:
            return pipeline.run(settings, worker)
    else:
        try:
            module = _service_module(name)
        except ModuleNotFoundError:
            print(f"mailmoat: no service named {name!r} is installed", file=sys.stderr)
            return 2

        def main() -> Awaitable[None]:
            return module.main(settings, worker)
    try:
        run_service(main)
    except PolicyError as exc:
        print(f"mailmoat: policy refused:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if not address_in_use(exc):
            raise
        print(f"mailmoat: {name}[{worker}] cannot listen, its port is in use: {exc}", file=sys.stderr)
        return ADDRESS_IN_USE
    return 0


def plan_processes(settings: Settings, devmailbox: bool) -> list[tuple[str, int]]:
    """The (service, worker) processes ``run all`` starts for the policy file as it is now."""
    from mailmoat_cli.supervisor import plan
    from mailmoat_policy import load_policy

    return plan(load_policy(settings.policy_path), settings.ingress_workers, devmailbox, settings.records,
                settings.topology)


def run_all(devmailbox: bool) -> int:
    """Supervise every service as its own process (``mailmoat_cli.supervisor``)."""
    from mailmoat_cli.supervisor import run_all as supervise

    return supervise(devmailbox)


def policy_check(path: str) -> int:
    from mailmoat_policy import PolicyError, load_policy

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    from mailmoat_ingress.direct import routes_at_ingress

    where = ", routed at ingress (no filter stage, no rule)" if routes_at_ingress(policy) else ""
    print(
        f"{path}: ok ({len(policy.accepted_domains)} accepted domains, {len(policy.routes)} routes, "
        f"itinerary {' -> '.join(policy.pipeline.itinerary())}{where})"
    )
    return 0


def _when(text: str) -> float:
    """A --since/--until value: an ISO date or date-time (UTC unless it names a zone)."""
    from datetime import UTC, datetime

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2026-01-31 or 2026-01-31T12:00") from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _stamp(value: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


def _value(value: object) -> str:
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def verdict_lines(stage: str, stored: dict[str, object]) -> list[str]:
    """A held message's verdict as ``mailmoat quarantine show`` prints it: the stage and its result, then
    each field of the detail as the stage's verdict model reads it (registry ``verdict_model``), one a line."""
    from mailmoat_platform.models import Verdict
    from mailmoat_platform.verdicts import detail_of

    result = stored.get("result")
    try:
        verdict = Verdict.model_validate({**stored, "stage": stage})
    except ValueError:  # stored by an older version in another shape: shown as it is
        return [f"  {stage}: {result}", f"    {json.dumps(stored.get('detail', {}), sort_keys=True, default=str)}"]
    fields = detail_of(verdict).as_detail()
    width = max((len(name) for name in fields), default=0) + 1
    return [f"  {stage}: {verdict.result}",
            *(f"    {name + ':':<{width}} {_value(value)}" for name, value in fields.items())]


def _trace_sink(settings: Settings, client: object, bus: object):  # -> TraceStore | TracePublisher
    """Where the command's own trace events go: Redis, or ``mailmoat.trace`` on ``bus`` (``records =
    postgresql``)."""
    from mailmoat_records.trace import TraceStore
    from mailmoat_records.tracebus import TracePublisher, bus_sender

    if settings.records != "postgresql":
        return TraceStore(client)  # type: ignore[arg-type]
    return TracePublisher(bus_sender(bus))  # type: ignore[arg-type]


async def _record(settings: Settings, client: object, event: TraceEvent) -> bool:
    """Trace one event of the command (over its own bus connection when it goes to ``mailmoat.trace``)."""
    from mailmoat_platform.bus import Bus

    if settings.records != "postgresql":
        return await _trace_sink(settings, client, None).record(event)
    bus = Bus(settings.amqp_url)
    try:
        await bus.connect()
        return await _trace_sink(settings, client, bus).record(event)
    except Exception as exc:  # the broker is down: the trace loses the event, the command is done
        print(f"mailmoat: the trace event was not recorded: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    finally:
        await bus.close()


async def _quarantine(args: argparse.Namespace) -> int:
    """``mailmoat quarantine list|show|release|delete``."""
    from mailmoat_mail import mimeedit
    from mailmoat_platform import redisclient
    from mailmoat_platform.bus import Bus
    from mailmoat_platform.models import TraceEvent
    from mailmoat_records.quarantine import ReleaseError, open_quarantine, release

    settings = Settings.from_env()
    client = redisclient.from_url(settings.redis_url, socket_connect_timeout=5)
    store = open_quarantine(settings, client)
    try:
        if args.quarantine_command == "list":
            held = await store.list(recipient=args.recipient, sender=args.sender, reason=args.reason,
                                    since=args.since, until=args.until)
            for item in held:
                state = "released" if not item.pending else ("partly released" if item.released else "held")
                print(f"{item.id}  {_stamp(item.created)}  {item.reason:<16} {state:<15} "
                      f"<{item.envelope.mail_from}> -> {', '.join(item.envelope.rcpt_to)}")
            print(f"{len(held)} message(s)", file=sys.stderr)
            return 0
        if args.quarantine_command == "show":
            item = await store.get(args.id, data=True)
            if item is None:
                print(f"no quarantined message {args.id}", file=sys.stderr)
                return 1
            print(f"id:          {item.id}")
            print(f"reason:      {item.reason}" + (f" ({item.result})" if item.result != item.reason else ""))
            print(f"detail:      {item.detail}")
            print(f"held:        {_stamp(item.created)}  expires {_stamp(item.expires)}")
            print(f"release by:  {item.release_by}")
            print(f"sender:      <{item.envelope.mail_from}>")
            print(f"from:        {item.author or '-'}")
            print(f"recipients:  {', '.join(item.envelope.rcpt_to)}")
            print(f"released:    {', '.join(item.released) or '-'}")
            print(f"client:      {item.envelope.client_ip} ({item.envelope.helo or '-'})")
            print("verdicts:")
            for stage, verdict in item.verdicts.items():
                for line in verdict_lines(stage, verdict):
                    print(line)
            print("envelope:")
            print("  " + item.envelope.model_dump_json())
            print("headers:")
            data = item.data or b""
            end = mimeedit.sections(data)[0]
            for line in data[:end].decode("utf-8", "replace").splitlines():
                print(f"  {line}")
            return 0
        if args.quarantine_command == "delete":
            if not await store.delete(args.id):
                print(f"no quarantined message {args.id}", file=sys.stderr)
                return 1
            await _record(settings, client, TraceEvent(event="DELETE", message_id=args.id, service="quarantine",
                                                       detail="deleted from quarantine"))
            print(f"{args.id}: deleted")
            return 0
        if args.quarantine_command == "release":
            bus = Bus(settings.amqp_url)
            await bus.connect()
            try:
                done = await release(store, bus, _trace_sink(settings, client, bus), args.id,
                                     recipients=args.recipient or None,
                                     role=args.role, who=f"{args.role} {os.environ.get('USER', '')}".strip())
            except ReleaseError as exc:
                print(f"mailmoat: {exc}", file=sys.stderr)
                return 1
            finally:
                await bus.close()
            if done.recipients:
                print(f"{args.id}: released to {', '.join(done.recipients)}")
            if done.already:
                print(f"{args.id}: already released to {', '.join(done.already)}")
            return 0
    finally:
        await store.close()
        await client.aclose()
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``mailmoat trace … | head``): stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run one service, or all of them as processes")
    run.add_argument("service", choices=[*stages.names(), "pipeline", "all"],
                     help="a stage; 'pipeline': every filter stage and routing in one process (decision 012)")
    run.add_argument("--worker", type=int, default=0, help="worker index (ports are offset by it)")
    run.add_argument("--devmailbox", action="store_true", help="with 'all': also run the dev mailbox")


def _run_parser() -> argparse.ArgumentParser:
    """The parser of ``mailmoat run`` alone: a service process (and the supervisor) does not import the
    modules of the other commands (check, trace, train, dkim, db), which it never runs."""
    parser = argparse.ArgumentParser(prog="mailmoat", description=__doc__)
    _add_run(parser.add_subparsers(dest="command", required=True))
    return parser


def _parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    from mailmoat_antispam import train
    from mailmoat_cli import check as checkcli
    from mailmoat_cli import db as dbcli
    from mailmoat_cli import dkim as dkimcli
    from mailmoat_cli import tracecli

    parser = argparse.ArgumentParser(prog="mailmoat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    tracecli.add_parser(sub)
    checkcli.add_parser(sub)
    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    chk = pol_sub.add_parser("check", help="validate a policy file")
    chk.add_argument("file")
    qua = sub.add_parser("quarantine", help="list, show, release or delete quarantined messages")
    qua_sub = qua.add_subparsers(dest="quarantine_command", required=True)
    qls = qua_sub.add_parser("list", help="held messages, oldest first")
    qls.add_argument("--recipient")
    qls.add_argument("--sender", help="envelope sender ('' for the null sender) or From address")
    qls.add_argument("--reason", help="malware, hcphish, phish, hcspam, spoof, spam, bulk, dmarc_quarantine, "
                                      "rule, or an antivirus result such as blocked-type")
    qls.add_argument("--since", type=_when, help="held at or after (ISO date or date-time, UTC)")
    qls.add_argument("--until", type=_when, help="held at or before")
    qsh = qua_sub.add_parser("show", help="envelope, reason, verdicts and headers of a held message")
    qsh.add_argument("id")
    qrl = qua_sub.add_parser("release", help="deliver a held message (each recipient at most once)")
    qrl.add_argument("id")
    qrl.add_argument("--recipient", action="append", help="release to this recipient only (repeatable)")
    qrl.add_argument("--as", dest="role", choices=["admin", "user"], default="admin",
                     help="release as an administrator (default) or as a recipient")
    qdl = qua_sub.add_parser("delete", help="remove a held message for good")
    qdl.add_argument("id")
    train.add_parser(sub)
    dkimcli.add_parser(sub)
    dbcli.add_parser(sub)
    con = sub.add_parser("console", help="console accounts from a shell, quarantine digests")
    con_sub = con.add_subparsers(dest="console_command", required=True)
    con_sub.add_parser("reset-password", help="a new generated password for an account (printed once)"
                       ).add_argument("name")
    con_sub.add_parser("create-admin", help="a new admin account, its password printed once").add_argument("name")
    con_sub.add_parser("digest", help="send the quarantine digests that are due now (one round)")
    return parser


def _main(argv: list[str] | None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = (_run_parser() if given[:1] == ["run"] else _parser()).parse_args(argv)

    if args.command == "run":
        if args.service == "all":
            return run_all(args.devmailbox or os.environ.get("MAILMOAT_DEVMAILBOX") == "1")
        return run_one(args.service, args.worker)
    if args.command == "trace":
        from mailmoat_cli import tracecli

        return tracecli.run(args)
    if args.command == "check":
        from mailmoat_cli import check as checkcli

        return checkcli.run(args)
    if args.command == "policy":
        return policy_check(args.file)
    if args.command == "quarantine":
        return asyncio.run(_quarantine(args))
    if args.command == "train":
        from mailmoat_antispam import train

        return train.run(args)
    if args.command == "dkim":
        from mailmoat_cli import dkim as dkimcli

        return dkimcli.run(args)
    if args.command == "db":
        from mailmoat_cli import db as dbcli

        return dbcli.run(args)
    if args.command == "console":
        from mailmoat_console import admin

        return admin.main([args.console_command, *([args.name] if args.console_command != "digest" else [])])
    return 2


if __name__ == "__main__":
    sys.exit(main())

