"""The console as a process (``mailmoat run console``) on a records database of its own, for the browser
and API-schema tests."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql

from mailmoat_records import db
from tests.support.infra import REDIS_TEST_URL, free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


@contextmanager
def fresh_database(database_url: str, suffix: str) -> Iterator[str]:
    """A migrated records database ``<test database>_<suffix>`` (no console account yet), dropped after."""
    parts = urlsplit(database_url)
    name = f"{parts.path.lstrip('/')}_{suffix}"
    server = parts._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = parts._replace(path=f"/{name}").geturl()
    try:
        db.upgrade(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class ConsoleProcess:
    """``mailmoat run console`` on free ports; its output read line by line."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None):
        self.port = free_port()
        environment = {**os.environ, "MAILMOAT_DATABASE_URL": database_url, "MAILMOAT_REDIS_URL": REDIS_TEST_URL,
                       "MAILMOAT_RECORDS": "postgresql", "MAILMOAT_CONSOLE_PORT": str(self.port),
                       "MAILMOAT_CONSOLE_METRICS_PORT": str(free_port()), "MAILMOAT_LOG_FORMAT": "text",
                       **(env or {})}
        self.process = subprocess.Popen([sys.executable, "-m", "mailmoat_cli.main", "run", "console"],
                                        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        cwd=REPO)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first line from now on matching ``pattern``; AssertionError with the output after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.output.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"the console did not print {pattern!r} within {timeout} s:\n{''.join(self.output)}")

    def started(self) -> tuple[str, str]:
        """(the console's URL without the final slash, the first admin's password as it printed it)."""
        password = self.wait_for(r"first admin account created .* password '([^']+)'")[1]
        url = self.wait_for(r"console: (http://\S+)")[1]
        return url.rstrip("/"), password

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def forget_signin_failures() -> None:
    """Drop the sign-in limiter's keys of the test Redis (the tests all sign in from 127.0.0.1)."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        keys = list(client.scan_iter("console:signin:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def running_console(database_url: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """A started console: (URL, first admin password)."""
    forget_signin_failures()
    process = ConsoleProcess(database_url, env)
    try:
        yield process.started()
    finally:
        process.stop()
        forget_signin_failures()
