"""clamd's health and the age of its signatures as metrics: ``mailmoat_dependency_up{dependency="clamd"}``
follows the client's last exchange, and ``mailmoat_clamd_signature_age_seconds`` the date of the newest
signature database clamd reports to ``VERSION`` (``ClamAV 1.4.1/27480/Thu Dec  4 09:23:02 2026``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Gauge

from mailmoat_antivirus.clamd import ClamdClient
from mailmoat_platform.telemetry import DEPENDENCY_UP

SIGNATURE_AGE = Gauge(
    "mailmoat_clamd_signature_age_seconds",
    "Age of the newest signature database clamd reports (VERSION); absent until clamd answered once.",
    ["service"],
)


def signature_date(reply: bytes) -> datetime | None:
    """The database date of a clamd ``VERSION`` reply; None when it names none (no database loaded)."""
    parts = reply.rstrip(b"\0\n").decode("ascii", "replace").split("/")
    if len(parts) < 3:
        return None
    try:
        return datetime.strptime(" ".join(parts[2].split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return None


class SignatureAge:
    """The newest database date seen; the gauge reads the age at scrape time."""

    def __init__(self, service: str, clock: Callable[[], float] = time.time):
        self.date: datetime | None = None
        self.clock = clock
        self.service = service

    def seen(self, reply: bytes) -> None:
        date = signature_date(reply)
        if date is None:
            return
        first = self.date is None
        self.date = date
        if first:
            SIGNATURE_AGE.labels(self.service).set_function(self.age)

    def age(self) -> float:
        return 0.0 if self.date is None else max(0.0, self.clock() - self.date.timestamp())


def export_health(service: str, available: Callable[[], bool | None]) -> None:
    """``mailmoat_dependency_up{service, dependency="clamd"}`` read from ``available`` at scrape time."""
    DEPENDENCY_UP.labels(service, "clamd").set_function(lambda: 1.0 if available() else 0.0)


async def watch_signatures(client: Callable[[], ClamdClient], age: SignatureAge, interval: float = 300.0) -> None:
    """Ask clamd for its version every ``interval`` seconds (a fleet behind a Service answers from any pod)."""
    while True:
        with contextlib.suppress(Exception):
            age.seen(await client().version())
        await asyncio.sleep(interval)
