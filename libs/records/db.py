"""The records database (PostgreSQL): its URL, schema migrations (Alembic) and day partitions.

Tables of records are partitioned by UTC day (``<table>_pYYYYMMDD``): partitions are created ahead
(``ensure_partitions``) and whole partitions past retention are dropped (``drop_partitions_before``),
which costs no row deletes, no vacuum and no index bloat (docs/decisions/010).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/mailmoat"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Every table partitioned by day; all get the same partitions.
PARTITIONED = ("trace_events", "trace_messages", "trace_keys")
_PARTITION = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")
_DDL_LOCK = 0x6D6D_7061_7274  # "mmpart": serialises partition DDL between processes


def database_url() -> str:
    """``MAILMOAT_DATABASE_URL``, or the local default."""
    return os.environ.get("MAILMOAT_DATABASE_URL") or DEFAULT_URL


def sqlalchemy_url(url: str) -> str:
    """A libpq URL as SQLAlchemy names it with the psycopg 3 driver (for Alembic)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return f"postgresql+psycopg://{rest}"


def alembic_config(url: str):  # -> alembic.config.Config (imported lazily: the CLI starts faster)
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % (an escaped password) must be doubled.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def create_database(url: str) -> bool:
    """Create the database ``url`` names when it does not exist (a development server); True if created."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=10).close()
        return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    if not name:
        raise ValueError(f"no database name in {url!r}")
    server = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except psycopg.errors.DuplicateDatabase:  # created meanwhile by another upgrade
            return False
    return True


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the schema to ``revision`` (idempotent: at head already, nothing happens)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(DEFAULT_URL)).get_current_head()
    assert head is not None
    return head


async def current_revision(conn: AsyncConnection) -> str | None:
    """The schema revision the database is at (None before the first upgrade)."""
    cur = await conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return None
    cur = await conn.execute("SELECT version_num FROM alembic_version")
    row = await cur.fetchone()
    return row[0] if row else None


def open_pool(url: str, *, min_size: int = 1, max_size: int = 4, name: str = "records",
              timeout: float = 30.0) -> AsyncConnectionPool:
    """An async connection pool (not opened: ``await pool.open()`` or ``async with``); ``timeout``: seconds
    ``pool.connection()`` waits for a connection (while the server is down) before it raises.

    Its sessions prepare every statement at once and keep generic plans: a query over some ninety day
    partitions takes ten times longer to plan than to run, and a generic plan prunes the partitions when
    it starts (from the time bounds) or per row (LATERAL), so it is planned once per connection."""
    return AsyncConnectionPool(url, min_size=min_size, max_size=max_size, name=name, open=False, timeout=timeout,
                               configure=_generic_plans,
                               kwargs={"application_name": f"mailmoat-{name}", "prepare_threshold": 0})


async def _generic_plans(conn: AsyncConnection) -> None:
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.commit()


# --- partitions ------------------------------------------------------------------------------------

def utc_today() -> date:
    return datetime.now(UTC).date()


def day_of(at: datetime) -> date:
    """The UTC day a timestamp's row is kept in."""
    return at.astimezone(UTC).date() if at.tzinfo else at.date()


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _bound(day: date) -> str:
    return f"{day.isoformat()} 00:00:00+00"


async def partitions(conn: AsyncConnection, table: str) -> list[date]:
    """The days ``table`` has a partition for, oldest first."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s)", (table,))
    days = []
    for (name,) in await cur.fetchall():
        match = _PARTITION.match(name)
        if match and match["table"] == table:
            days.append(datetime.strptime(match["day"], "%Y%m%d").date())
    return sorted(days)


async def ensure_partitions(conn: AsyncConnection, days: Iterable[date],
                            tables: Iterable[str] = PARTITIONED) -> list[str]:
    """Create the missing day partitions of ``tables`` for ``days``, in one transaction; the names created.

    An advisory lock serialises this between processes (two writers meeting a new day at once)."""
    wanted = sorted(set(days))
    created: list[str] = []
    if not wanted:
        return created
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        for table in tables:
            have = set(await partitions(conn, table))
            for day in wanted:
                if day in have:
                    continue
                name = partition_name(table, day)
                await conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(name), sql.Identifier(table),
                    sql.Literal(_bound(day)), sql.Literal(_bound(day + timedelta(days=1)))))
                created.append(name)
    return created


async def ensure_ahead(conn: AsyncConnection, ahead_days: int = 7, today: date | None = None) -> list[str]:
    """Partitions for today and the ``ahead_days`` days after it."""
    start = today or utc_today()
    return await ensure_partitions(conn, (start + timedelta(days=n) for n in range(ahead_days + 1)))


async def drop_partitions_before(conn: AsyncConnection, first_kept: date,
                                 tables: Iterable[str] = PARTITIONED) -> list[str]:
    """Drop every day partition of ``tables`` older than ``first_kept``; the names dropped."""
    dropped: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        for table in tables:
            for day in await partitions(conn, table):
                if day < first_kept:
                    name = partition_name(table, day)
                    await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                    dropped.append(name)
    return dropped


def first_kept_day(retention_days: int, today: date | None = None) -> date:
    """The oldest day still within retention: a partition is dropped once all of it is older than
    ``retention_days`` days (so between ``retention_days`` and one day more are kept)."""
    return (today or utc_today()) - timedelta(days=retention_days)


async def maintain(conn: AsyncConnection, retention_days: int, *, ahead_days: int = 7,
                   today: date | None = None) -> tuple[list[str], list[str]]:
    """The daily job: partitions ahead, then retention. (created, dropped)."""
    created = await ensure_ahead(conn, ahead_days, today)
    dropped = await drop_partitions_before(conn, first_kept_day(retention_days, today))
    return created, dropped


__all__ = [
    "DEFAULT_URL", "PARTITIONED", "alembic_config", "create_database", "current_revision", "database_url", "day_of",
    "downgrade", "drop_partitions_before", "ensure_ahead", "ensure_partitions", "first_kept_day", "head_revision",
    "maintain", "open_pool", "partition_name", "partitions", "sqlalchemy_url", "upgrade", "utc_today",
]
