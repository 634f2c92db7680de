"""The PostgreSQL drill: the records database unreachable for a minute under load (``records = postgresql``).

Every gateway process reaches PostgreSQL through a TCP proxy the drill controls (``tests/support/tcpproxy``:
the machine's PostgreSQL is never stopped); the drill cuts it (every connection dropped, new ones refused)
for ``Phases.cut`` seconds while the SMTP clients keep sending. What must hold:

- SMTP: every message answered 250 and delivered (the drill's usual accounting), the replies no slower
  during the cut than before it (their p50 / p99 / max are noted);
- the trace: the recorder holds its batches and catches up once PostgreSQL is back (the time from the
  restore until its lag is back under a second is noted); afterwards PostgreSQL holds, for every message
  answered 250, as many events as the messages sent before the cut have (RECEIVE ... DELIVER): a message
  short of one counts as a lost trace event and fails the drill.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from mailmoat_records import db
from tests.drills.load import Load, Sent
from tests.support.gateway import Gateway
from tests.support.tcpproxy import TcpProxy

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Records:
    """The drill's database, the proxy in front of it and what the fault marked."""

    url: str
    """The database, directly (the drill's own checks)."""
    proxy: TcpProxy
    cut_at: float = 0.0
    restored_at: float = 0.0
    caught_up: float | None = None
    """Seconds from the restore until the recorder's lag was under a second again."""
    notes: list[str] = field(default_factory=list)

    @property
    def proxied_url(self) -> str:
        """The database through the proxy (what the gateway's processes are given)."""
        parts = urlsplit(self.url)
        return parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{self.proxy.port}").geturl()


@contextmanager
def records_database(name: str) -> Iterator[Records]:
    """A migrated database of its own behind a proxy; dropped at the end."""
    dbname = f"mailmoat_drill_{re.sub(r'[^a-z0-9]', '_', name)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = urlsplit(SERVER)._replace(path=f"/{dbname}").geturl()
    try:
        db.upgrade(url)
        with TcpProxy(5432) as proxy:
            yield Records(url, proxy)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def recorder_gauge(gateway: Gateway, name: str) -> float:
    """One of the recorder's gauges; NaN when it does not answer."""
    try:
        text = gateway.metrics("recorder")
    except (AssertionError, OSError):
        return float("nan")
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def cut(records: Records, gateway: Gateway, seconds: float, catch_up_limit: float = 300.0) -> None:
    """PostgreSQL away for ``seconds``, then back; waits (bounded) until the recorder has caught up."""
    records.cut_at = time.time()
    records.proxy.cut()
    time.sleep(seconds)  # the fault's length, not a synchronisation
    lag_at_restore = recorder_gauge(gateway, "mailmoat_recorder_lag_seconds")
    held_at_restore = recorder_gauge(gateway, "mailmoat_recorder_held_records")
    records.proxy.restore()
    records.restored_at = time.time()
    records.notes.append(f"recorder at the restore: lag {lag_at_restore:.0f} s, {held_at_restore:.0f} records held")
    deadline = time.monotonic() + catch_up_limit
    fresh = 0
    while time.monotonic() < deadline:
        lag = recorder_gauge(gateway, "mailmoat_recorder_lag_seconds")
        fresh = fresh + 1 if lag < 1.0 else 0
        if fresh >= 3:
            records.caught_up = time.time() - records.restored_at
            records.notes.append(f"recorder caught up {records.caught_up:.1f} s after the restore")
            return
        time.sleep(0.2)
    records.notes.append(f"recorder NOT caught up {catch_up_limit:.0f} s after the restore")


def latencies(sent: list[Sent], start: float, end: float) -> str:
    took = sorted(s.took for s in sent if start <= s.at < end and s.reply == 250)
    if not took:
        return "none"
    p99 = took[min(len(took) - 1, int(0.99 * len(took)))]
    return (f"{len(took)} replies p50 {1000 * statistics.median(took):.0f} / p99 {1000 * p99:.0f} / "
            f"max {1000 * took[-1]:.0f} ms")


@dataclass
class TraceCount:
    messages: int
    """Messages answered 250."""
    per_message: int
    """Events a message sent before the cut has."""
    found: int
    """Events in PostgreSQL of those messages."""
    short: list[str]
    """Message-IDs with fewer events than ``per_message`` (or none)."""

    @property
    def lost(self) -> int:
        return max(0, self.messages * self.per_message - self.found) if self.short else 0


def count_trace(records: Records, load: Load, gateway: Gateway, limit: float = 120.0) -> TraceCount:
    """Waits (bounded) until the recorder is idle and its count stable, then counts each accepted message's
    events in PostgreSQL."""
    deadline = time.monotonic() + limit
    last, still = -1.0, 0
    while time.monotonic() < deadline and still < 5:
        written = recorder_gauge(gateway, "mailmoat_recorder_last_commit_timestamp_seconds")
        held = recorder_gauge(gateway, "mailmoat_recorder_held_records")
        still = still + 1 if written == last and held == 0 else 0
        last = written
        time.sleep(0.4)
    with psycopg.connect(records.url) as conn:
        rows = conn.execute(
            "SELECT m.message_id_header, count(e.*) FROM trace_messages m "
            "LEFT JOIN trace_events e ON e.message_id = m.message_id "
            "WHERE m.message_id_header LIKE %s GROUP BY 1", (f"%drill-{load.scenario}-%",)).fetchall()
    events = {header.strip("<>"): int(n) for header, n in rows}
    accepted = sorted((s for s in load.sent if s.reply == 250), key=lambda s: s.at)
    before = [events.get(s.ident, 0) for s in accepted if s.at < records.cut_at]
    per_message = Counter(before).most_common(1)[0][0] if before else max(events.values(), default=0)
    short = [s.ident for s in accepted if events.get(s.ident, 0) < per_message]
    found = sum(events.get(s.ident, 0) for s in accepted)
    return TraceCount(len(accepted), per_message, found, short)
