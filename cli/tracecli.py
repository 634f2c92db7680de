"""``mailmoat trace``: a message's path, from the trace in Redis or (``records = postgresql``) in PostgreSQL.

In PostgreSQL the look-up is by queue id, Message-ID, envelope sender, From author, recipient or client
IP, within ``[--since, --until)``, newest first, ``--limit`` messages a page; a fuller page ends with the
``--after`` value of the next one. The trace reaches PostgreSQL through the recorder, so the command
also looks at ``mailmoat.trace``: batches waiting there are events not written yet, and it says so.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailmoat_platform.models import TraceEvent
from mailmoat_platform.settings import Settings

_AGO = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DEFAULT_LIMIT = 20


def moment(text: str, now: datetime | None = None) -> datetime:
    """A --since/--until value: an ISO date or date-time (UTC unless it names a zone), or a time ago such
    as ``30m``, ``2h``, ``7d``."""
    ago = _AGO.match(text.strip())
    if ago:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[ago[2]]: int(ago[1])})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date such as 2026-01-31 or 2026-01-31T12:00, nor a time ago such as 2h or 7d") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tr = sub.add_parser("trace", help="show a message's path by queue id, sender, recipient, Message-ID, From or IP")
    tr.add_argument("needle")
    tr.add_argument("--since", type=moment, help="received at or after (ISO date or date-time, UTC; or 2h, 7d ago)")
    tr.add_argument("--until", type=moment, help="received before")
    tr.add_argument("--limit", type=_positive, help=f"messages per page, newest first (default {DEFAULT_LIMIT})")
    tr.add_argument("--after", help="the next page: the value the previous page ended with")


def event_line(event: TraceEvent) -> str:
    rcpts = f" [{', '.join(event.recipients)}]" if event.recipients else ""
    return (f"  {event.at.isoformat(timespec='milliseconds')}  {event.event:<10} "
            f"{event.service:<12}{rcpts} {event.detail}").rstrip()


@dataclass(frozen=True)
class Backlog:
    """What waits in ``mailmoat.trace``: batches ready (not yet delivered to a recorder) and consumers."""

    ready: int
    consumers: int


def behind_note(backlog: Backlog | None, error: str | None = None) -> str | None:
    """What to tell the reader about the recorder (None: it is up to date as far as the queue shows)."""
    if error is not None:
        return f"cannot tell whether the recorder is behind ({error}); recent events may be missing"
    if backlog is None or backlog.ready == 0:
        return None
    who = "the recorder is" if backlog.consumers else "no recorder is running:"
    return (f"{who} behind by {backlog.ready} trace batch(es) waiting in mailmoat.trace (up to 200 records "
            "each); recent events may be missing")


async def backlog(amqp_url: str, timeout: float = 5.0) -> Backlog | None:
    """``mailmoat.trace``'s ready messages and consumers (None when it was never declared)."""
    import aio_pika

    from mailmoat_records.trace import TRACE_QUEUE

    connection = await asyncio.wait_for(aio_pika.connect(amqp_url, timeout=timeout), timeout)
    try:
        channel = await connection.channel()
        try:
            result = (await asyncio.wait_for(channel.declare_queue(TRACE_QUEUE, passive=True), timeout)
                      ).declaration_result
        except aio_pika.exceptions.ChannelClosed:
            return None
        return Backlog(int(result.message_count or 0), int(result.consumer_count or 0))
    finally:
        await connection.close()


async def _behind(settings: Settings) -> str | None:
    try:
        return behind_note(await backlog(settings.amqp_url))
    except Exception as exc:  # broker down or slow: say that we could not tell
        return behind_note(None, f"RabbitMQ: {type(exc).__name__}: {exc}".rstrip(": "))


async def from_postgresql(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from mailmoat_records import db
    from mailmoat_records.tracedb import Cursor, TraceReader

    try:
        after = Cursor.parse(args.after) if args.after else None
    except ValueError as exc:
        print(f"mailmoat trace: --after: {exc}", file=sys.stderr)
        return 2
    behind = asyncio.create_task(_behind(settings))
    try:
        async with db.open_pool(settings.database_url, max_size=1, name="trace", timeout=10) as pool:
            reader = TraceReader(pool)
            page = await reader.find(args.needle, since=args.since, until=args.until,
                                     limit=args.limit or DEFAULT_LIMIT, after=after)
            for summary in page.messages:
                rcpts = ", ".join(summary.recipients)
                sender = "" if summary.sender is None else f"  <{summary.sender}>" + (f" -> {rcpts}" if rcpts else "")
                print(f"message {summary.message_id}  {summary.at.isoformat(timespec='seconds')}{sender}")
                for event in await reader.events(summary.message_id):
                    print(event_line(event))
    except (psycopg.Error, OSError) as exc:
        behind.cancel()
        print(f"mailmoat trace: the trace database does not answer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    note = await behind
    if note:
        print(f"mailmoat: {note}", file=sys.stderr)
    if not page.messages:
        print(f"no message found for {args.needle!r}")
        return 1
    if page.next is not None:
        print(f"more: --after '{page.next.token}'")
    return 0


async def from_redis(settings: Settings, needle: str) -> int:
    from mailmoat_platform import redisclient
    from mailmoat_records.trace import TraceStore

    client = redisclient.from_url(settings.redis_url, socket_connect_timeout=5)
    store = TraceStore(client)
    try:
        ids = await store.find(needle)
        if not ids:
            print(f"no message found for {needle!r}")
            return 1
        for message_id in ids:
            print(f"message {message_id}")
            for event in await store.events(message_id):
                print(event_line(event))
    finally:
        await client.aclose()
    return 0


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.records == "postgresql":
        return asyncio.run(from_postgresql(settings, args))
    if args.since or args.until or args.limit or args.after:
        print("mailmoat trace: --since, --until, --limit and --after read the trace in PostgreSQL "
              "(MAILMOAT_RECORDS=postgresql)", file=sys.stderr)
        return 2
    return asyncio.run(from_redis(settings, args.needle))


__all__ = ["Backlog", "add_parser", "backlog", "behind_note", "event_line", "moment", "run"]
