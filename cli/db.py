"""``mailmoat db``: the records database (PostgreSQL at ``MAILMOAT_DATABASE_URL``).

``mailmoat db upgrade`` creates the database if it does not exist (a development server), migrates the
schema to the newest revision and creates the day partitions of today and the days ahead; run again,
it changes nothing. Deployments run it (a k8s Job) before the
services start. ``mailmoat db maintain`` is the daily partition job: partitions ahead, and whole day
partitions past ``--retention-days`` dropped; it also deletes the quarantined messages whose retention
ended. ``mailmoat db import-redis`` copies the quarantine and the trace a deployment holds in Redis into
the database (run twice, it adds nothing the second time).
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = sub.add_parser("db", help="the records database (PostgreSQL): schema migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="migrate the schema to the newest revision (idempotent)")
    up.add_argument("--url", help="database URL (default: MAILMOAT_DATABASE_URL, else the local default)")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.add_argument("--ahead-days", type=int, default=7, help="day partitions to create ahead (default 7)")
    mt = db_sub.add_parser("maintain", help="create day partitions ahead, drop those past retention (daily)")
    mt.add_argument("--url", help="database URL (default: MAILMOAT_DATABASE_URL, else the local default)")
    mt.add_argument("--retention-days", type=int, default=90,
                    help="keep this many days (the policy's trace.retention_days; default 90)")
    mt.add_argument("--ahead-days", type=int, default=7, help="day partitions to create ahead (default 7)")
    im = db_sub.add_parser("import-redis", help="copy the quarantine and the trace from Redis (idempotent)")
    im.add_argument("--url", help="database URL (default: MAILMOAT_DATABASE_URL, else the local default)")
    im.add_argument("--redis-url", help="Redis URL (default: MAILMOAT_REDIS_URL, else the local default)")
    im.add_argument("--no-trace", dest="trace", action="store_false", help="the quarantine only")
    im.add_argument("--remove", action="store_true",
                    help="delete each held message from Redis once the database holds it")
    im.add_argument("--retention-days", type=int, default=90,
                    help="trace events older than this many days are left out (default 90)")


async def _partitions(url: str, ahead_days: int) -> list[str]:
    from psycopg import AsyncConnection

    from mailmoat_records import db

    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return await db.ensure_ahead(conn, ahead_days)


def upgrade(url: str | None = None, revision: str = "head", ahead_days: int = 7) -> int:
    """Migrate, then make sure the partitions of today and ``ahead_days`` days after exist."""
    import psycopg
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from mailmoat_records import db

    target = url or db.database_url()
    try:
        made = db.create_database(target)
        db.upgrade(target, revision)
        created = asyncio.run(_partitions(target, ahead_days)) if revision == "head" else []
    except (psycopg.Error, OSError, ValueError, SQLAlchemyError, CommandError) as exc:  # unreachable, unknown revision
        print(f"mailmoat db upgrade: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if made:
        print("records database created")
    print(f"records database at revision {revision if revision != 'head' else db.head_revision()}"
          + (f", {len(created)} partitions created" if created else ""))
    return 0


async def _maintain(url: str, retention_days: int, ahead_days: int) -> tuple[list[str], list[str], int]:
    from psycopg import AsyncConnection

    from mailmoat_records import db
    from mailmoat_records.quarantinedb import QuarantineDB

    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        created, dropped = await db.maintain(conn, retention_days, ahead_days=ahead_days)
        cur = await conn.execute("SELECT to_regclass('quarantine') IS NOT NULL")
        row = await cur.fetchone()
    expired = 0
    if row and row[0]:  # the quarantine's retention is its own (per message): expired rows deleted
        store = QuarantineDB(url)
        try:
            expired = await store.prune()
        finally:
            await store.close()
    return created, dropped, expired


def maintain(url: str | None = None, retention_days: int = 90, ahead_days: int = 7) -> int:
    """Partitions for today and ``ahead_days`` after; whole partitions older than retention dropped."""
    import psycopg

    from mailmoat_records import db

    if retention_days < 1 or ahead_days < 0:
        print("mailmoat db maintain: --retention-days must be at least 1, --ahead-days at least 0", file=sys.stderr)
        return 2
    try:
        created, dropped, expired = asyncio.run(_maintain(url or db.database_url(), retention_days, ahead_days))
    except (psycopg.Error, OSError) as exc:
        print(f"mailmoat db maintain: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{len(created)} partitions created, {len(dropped)} dropped"
          + (f" (older than {db.first_kept_day(retention_days)})" if dropped else ""))
    if expired:
        print(f"{expired} expired quarantined messages deleted")
    return 0


def import_redis(url: str | None = None, redis_url: str | None = None, trace: bool = True,
                 retention_days: int = 90, remove: bool = False) -> int:
    """Copy the quarantine (and the trace) from Redis into the database; print the counts."""
    import psycopg

    from mailmoat_platform.redisclient import RedisError
    from mailmoat_platform.settings import Settings
    from mailmoat_records import db
    from mailmoat_records.redisimport import import_redis as run_import

    source = redis_url or Settings.from_env().redis_url
    try:
        done = asyncio.run(run_import(source, url or db.database_url(), trace=trace, retention_days=retention_days,
                                      remove=remove))
    except (psycopg.Error, OSError, RedisError) as exc:
        print(f"mailmoat db import-redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for line in done.lines():
        print(line)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.db_command == "upgrade":
        return upgrade(args.url, args.revision, args.ahead_days)
    if args.db_command == "maintain":
        return maintain(args.url, args.retention_days, args.ahead_days)
    if args.db_command == "import-redis":
        return import_redis(args.url, args.redis_url, args.trace, args.retention_days, args.remove)
    return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m mailmoat_cli.db upgrade`` (the same as ``mailmoat db upgrade``)."""
    parser = argparse.ArgumentParser(prog="mailmoat", description=__doc__)
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["db", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_parser", "import_redis", "main", "maintain", "run", "upgrade"]
