"""The records database of the tests' gateways (PostgreSQL, the default ``records``), and its trace.

One database per test process, ``mailmoat_records_<pid>`` on the server of
``MAILMOAT_TEST_DATABASE_URL`` (by default postgresql://postgres@127.0.0.1:5432/postgres): created and
migrated on first use, dropped when the process ends. ``clean()`` empties its tables (the end-to-end
tests do before each test, as they flush their Redis database), so that a look-up by client IP or
sender finds only the test's own messages.

The trace readers here return what the gateway wrote, as ``TraceEvent`` dictionaries (``event``,
``service``, ``at``, ``recipients``, ``detail``, ``data``), oldest first. The recorder writes a moment
after the stages publish: readers that wait are bounded (AssertionError with what was found).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

SERVER_URL = os.environ.get("MAILMOAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NAME = f"mailmoat_records_{os.getpid()}"
URL = urlsplit(SERVER_URL)._replace(path=f"/{NAME}").geturl()
"""The records database of this test process (exists once ``ensure()`` ran)."""

_lock = threading.Lock()
_made = False


def ensure() -> str:
    """Create and migrate this process's records database once; its URL."""
    global _made
    with _lock:
        if not _made:
            from mailmoat_records import db

            with psycopg.connect(SERVER_URL, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NAME)))
            db.upgrade(URL)
            atexit.register(_drop)
            _made = True
    return URL


def _drop() -> None:
    try:
        with psycopg.connect(SERVER_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME)))
    except psycopg.Error:
        pass  # the server is gone: nothing to drop


def clean() -> None:
    """Empty every records table (the schema and its migrations stay)."""
    with psycopg.connect(ensure(), autocommit=True) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND c.relname <> 'alembic_version'")]
        if tables:
            conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, tables))))


# --- the trace ------------------------------------------------------------------------------------

def events(message_id: str, url: str | None = None) -> list[dict[str, Any]]:
    """Every trace event of a message (queue id), oldest first."""
    with psycopg.connect(url or URL) as conn:
        rows = conn.execute(
            "SELECT event, service, at, recipients, detail, data FROM trace_events WHERE message_id = %s "
            "ORDER BY at, event_key", (message_id,)).fetchall()
    return [{"event": e, "message_id": message_id, "service": s, "at": at.isoformat(), "recipients": list(r),
             "detail": d, "data": data} for e, s, at, r, d, data in rows]


def event_names(message_id: str, url: str | None = None) -> list[str]:
    return [e["event"] for e in events(message_id, url)]


def ids_by(kind: str, value: str, url: str | None = None) -> list[str]:
    """Queue ids of the messages a look-up value names (kind: msgid, sender, from, rcpt, ip), oldest first.

    Values are matched as the trace stores them: addresses and Message-IDs lower-cased."""
    value = value if kind == "ip" else value.strip().lower()
    with psycopg.connect(url or URL) as conn:
        rows = conn.execute(
            "SELECT message_id, min(at) FROM trace_keys WHERE kind = %s AND value = %s "
            "GROUP BY message_id ORDER BY min(at)", (kind, value)).fetchall()
    return [row[0] for row in rows]


def ids_containing(kind: str, part: str, url: str | None = None) -> list[str]:
    """Queue ids of the messages whose look-up value of ``kind`` contains ``part`` (lower-cased)."""
    with psycopg.connect(url or URL) as conn:
        rows = conn.execute(
            "SELECT message_id, min(at) FROM trace_keys WHERE kind = %s AND strpos(value, %s) > 0 "
            "GROUP BY message_id ORDER BY min(at)", (kind, part.lower())).fetchall()
    return [row[0] for row in rows]


def events_by(kind: str, value: str, url: str | None = None) -> list[dict[str, Any]]:
    """The events of every message a look-up value names, message after message."""
    return [e for mid in ids_by(kind, value, url) for e in events(mid, url)]


def first_of(message_ids: list[str], names: tuple[str, ...], url: str | None = None) -> dict[str, dict[str, Any]]:
    """For each message that has one, its first event among ``names`` (one query for them all)."""
    with psycopg.connect(url or URL) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (message_id) message_id, event, service, detail FROM trace_events "
            "WHERE message_id = ANY(%s) AND event = ANY(%s) ORDER BY message_id, at, event_key",
            (list(message_ids), list(names))).fetchall()
    return {mid: {"event": e, "service": s, "detail": d} for mid, e, s, d in rows}


def wait_until(read: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 30) -> Any:
    """``read()`` again until ``done`` holds for it (its value), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not traced within {timeout} s; found: {value!r:.2000}")
        time.sleep(0.1)


def wait_event(message_id: str, event: str, timeout: float = 30, service: str | None = None,
               url: str | None = None) -> dict[str, Any]:
    """The first trace event ``event`` (of ``service``) of a message, waiting for it."""
    def found(evs: list[dict[str, Any]]) -> bool:
        return any(e["event"] == event and service in (None, e["service"]) for e in evs)

    evs = wait_until(lambda: events(message_id, url), found, f"{event} of {message_id}", timeout)
    return next(e for e in evs if e["event"] == event and service in (None, e["service"]))


def wait_id(kind: str, value: str, timeout: float = 30, url: str | None = None) -> str:
    """The queue id of the first message a look-up value names, waiting for its first record."""
    return wait_until(lambda: ids_by(kind, value, url), bool, f"a message with {kind} {value}", timeout)[0]


# --- the quarantine -------------------------------------------------------------------------------

def held_bytes(qid: str, url: str | None = None) -> bytes | None:
    """The original bytes of a held message (None when it is not held)."""
    from mailmoat_records.quarantinedb import decompress

    with psycopg.connect(url or URL) as conn:
        row = conn.execute("SELECT data, codec FROM quarantine WHERE qid = %s", (qid,)).fetchone()
    return None if row is None else decompress(bytes(row[0]), row[1])


def held_ids(url: str | None = None) -> list[str]:
    """Queue ids of the held messages, oldest first."""
    with psycopg.connect(url or URL) as conn:
        return [row[0] for row in conn.execute("SELECT qid FROM quarantine ORDER BY received_at, qid")]
