"""The console's process: the web application (uvicorn) beside the service runtime's /metrics, /healthz and
/readyz, in one event loop.

It listens on ``MAILMOAT_CONSOLE_HOST`` (127.0.0.1) port ``MAILMOAT_CONSOLE_PORT`` (8025) and reads the
records database (``MAILMOAT_DATABASE_URL``, migrated by ``mailmoat db upgrade``) and Redis (sign-in rate
limits). With no account at all it creates ``admin`` with a generated password and prints that password
once. Ready while PostgreSQL and Redis answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from mailmoat_platform.bus import Bus
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from mailmoat_records import db
from mailmoat_records.quarantinedb import QuarantineDB
from mailmoat_records.senderblocks import SenderBlocks
from mailmoat_records.tracebus import TracePublisher, bus_sender

from . import blockpages
from .app import create_app
from .config import ConsoleConfig
from .core import Console
from .digest import start_digests
from .operations import install
from .policypages import PolicyPages
from .quarantine import ConsoleQuarantine, LearnHam
from .queues import ConsoleQueues

SERVICE = "console"
BOOTSTRAP_RETRY = 5.0
PRUNE_EVERY = 3600.0
"""Seconds between deletions of sessions that ended (expired or revoked) more than a day before."""
log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the runtime's SIGTERM stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Running:
    console: Console
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    pool: AsyncConnectionPool
    announced: bool = False
    """The database was ready and the first admin made (or there were accounts)."""

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, 10)
        if self.console.quarantine is not None:
            with contextlib.suppress(Exception):
                await self.console.quarantine.close()
        if getattr(self.app.state, "queues", None) is not None:
            with contextlib.suppress(Exception):
                await self.app.state.queues.close()
        await self.pool.close()


async def announce_admin(console: Console, url: str) -> None:
    """Create the first admin when there is no account, and print its password (once: it is not kept)."""
    made = await console.accounts.bootstrap_admin()
    if made is None:
        return
    account, password = made
    await console.audit.write("account.bootstrap", actor="console", client_ip=None, target=account.name,
                              detail={"role": "admin"})
    line = f"console: first admin account created at {url} : name {account.name!r}, password {password!r} (shown once)"
    print(line, file=sys.stdout, flush=True)
    log.warning("console: first admin account %r created; its password was printed on standard output once",
                account.name)


def ham_learner(settings: Settings, redis) -> LearnHam | None:
    """Learning as ham for "not junk": the antispam stage's Bayes store (its key prefix from the policy), or
    None when the antispam package is not installed or there is no Redis."""
    if redis is None:
        return None
    try:
        from mailmoat_antispam.bayes import BayesStore, tokens
        from mailmoat_antispam.content import parse
        from mailmoat_policy import PolicyError, load_policy
    except ImportError:
        return None
    try:
        prefix = load_policy(settings.policy_path).antispam.bayes.key_prefix
    except (PolicyError, OSError):
        prefix = "mailmoat:bayes"
    store = BayesStore(redis, prefix)

    async def learn(data: bytes) -> bool:
        toks = await asyncio.to_thread(lambda: tokens(parse(data)))
        return await store.learn(data, toks, "ham")

    return learn


def console_quarantine(settings: Settings, pool: AsyncConnectionPool, redis) -> ConsoleQuarantine:
    """The quarantine in the records database (the console's pool); releases published on a bus connection of
    the console's own, opened at the first release, their RELEASE traced through ``mailmoat.trace``."""
    return ConsoleQuarantine(pool, QuarantineDB(settings.database_url, pool=pool),
                             bus_factory=lambda: Bus(settings.amqp_url),
                             trace_factory=lambda bus: TracePublisher(bus_sender(bus)),
                             learn_ham=ham_learner(settings, redis))


async def serve(settings: Settings, config: ConsoleConfig, redis, *, port: int | None = None) -> Running:
    """Open the pool and start the web server (``port`` 0: any free port)."""
    pool = db.open_pool(settings.database_url, min_size=1, max_size=4, name=SERVICE, timeout=5.0)
    await pool.open(wait=False)
    console = Console.build(config, pool, redis, quarantine=console_quarantine(settings, pool, redis))
    app = create_app(console)
    install(app, ConsoleQueues(lambda: redis, lambda: Bus(settings.amqp_url)) if redis is not None else None,
            PolicyPages(settings.policy_path, pool))
    blockpages.install(app, SenderBlocks(pool))
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port if port is None else port,
                                    log_config=None, access_log=False, server_header=False, proxy_headers=False,
                                    lifespan="off", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await pool.close()
            task.result()
            raise RuntimeError("the console's web server did not start")
        await asyncio.sleep(0.02)
    return Running(console, app, server, task, pool)


async def announce(running: Running, config: ConsoleConfig) -> str:
    """The first admin when there is none (once the database is ready), then the console's URL printed."""
    url = config.public_url or f"http://{config.host}:{running.port}/"
    await bootstrap(running.console, url)
    running.announced = True
    log.info("console on %s", url)
    print(f"console: {url}", file=sys.stdout, flush=True)
    return url


async def bootstrap(console: Console, url: str, *, retry: float = BOOTSTRAP_RETRY) -> None:
    """``announce_admin`` once the database answers and has the console's tables (``mailmoat db upgrade``);
    until then one warning, and a try every ``retry`` seconds."""
    warned = False
    while True:
        try:
            await announce_admin(console, url)
            return
        except (psycopg.errors.UndefinedTable, psycopg.OperationalError) as exc:
            if not warned:
                log.warning("console: the records database is not ready (%s: %s); run `mailmoat db upgrade`. "
                            "Trying again every %.0f s", type(exc).__name__, str(exc).strip()[:200], retry)
                warned = True
            await asyncio.sleep(retry)


async def main(settings: Settings, worker: int = 0) -> None:
    config = ConsoleConfig.from_env()
    runtime = Runtime(SERVICE, settings, worker=worker)
    runtime.require_redis()
    running = await serve(settings, config, runtime.redis)

    async def probe() -> None:
        async with running.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")

    runtime.add_dependency("postgresql", probe, interval=2.0, timeout=3.0)
    runtime.add_ready_check(lambda: running.announced and running.server.started and not running.task.done())
    runtime.on_stop(running.stop)

    async def prune_forever() -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            try:
                pruned = await running.console.sessions.prune()
                if pruned:
                    log.info("console: %d ended sessions deleted", pruned)
            except (psycopg.Error, OSError) as exc:
                log.warning("console: session pruning failed: %s", exc)

    runtime.add_background(prune_forever)
    start_digests(runtime, settings, running.pool, config.url)  # quarantine digests (docs/console.md)
    await runtime.start(bus=False)
    announcing = asyncio.create_task(announce(running, config))
    try:
        await runtime.serve_forever()
    finally:
        announcing.cancel()
